package contract

import "strconv"

// Names of the JetStream assets.
const (
	Inbox       = "INBOX"
	DLQ         = "DLQ"
	TicksStream = "TICKS"
	DevicesKV   = "DEVICES"
	CursorsKV   = "CURSORS"
	ReadsKV     = "READS"
	PresenceKV  = "PRESENCE"
	SettingsKV  = "SETTINGS"
	PushKV      = "PUSH"
	InboxPrefix = "inbox."
	LivePrefix  = "sb.live."
	DLQPrefix   = "dlq."
	TicksPrefix = "ticks."
)

// PushGoneDurable is the push function's durable on KV_PRESENCE: the
// leases' changes, read for the devices that go (functions/push/gone.go).
const PushGoneDurable = "push-gone"

// PushGroupsDurable is the push function's durable on GROUPS: the group
// messages, read for the members of groups whose members read the log,
// which no inbox holds (functions/push/groups.go).
const PushGroupsDurable = "push-groups"

// InboxSubject is the subject of a user's inbox. The caller must have
// validated user as a safe id.
func InboxSubject(user string) string { return InboxPrefix + user }

// LiveSubject is where INBOX republishes each message stored on the user's
// inbox, once stored, with its stream sequence (header Nats-Sequence) and
// the sequence of the previous message on the same inbox
// (Nats-Last-Sequence), so a reader can tell when it missed one.
func LiveSubject(user string) string { return LivePrefix + user }

// CursorKey is a device's key in the CURSORS bucket.
func CursorKey(user, device string) string { return user + "." + device }

// GroupCursorKey is a device's key in the CURSORS bucket for its places in
// the groups it reads from their logs (GroupCursors). "=" is in no id, so
// it is no device's CursorKey.
func GroupCursorKey(user, device string) string { return user + "." + device + "=g" }

// KickSubject is where a new session of a device asks any older one, on
// any gateway, to close (core NATS, request and reply): one session per
// device.
func KickSubject(user, device string) string { return "sb.kick." + user + "." + device }

// EventSubject carries ephemeral events to all of a user's online devices
// (typing): core NATS, never stored. Only gateways publish there, and they
// publish complete frames of the wire protocol.
func EventSubject(user string) string { return "sb.ev." + user }

// LeaderSubject is the advisory JetStream publishes when INBOX elects a
// leader: live copies may have been lost on the way.
const LeaderSubject = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + Inbox

// KVSubject is the subject a KV bucket stores key under, for writes that
// need a raw publish (a per-message TTL, an async write).
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// DirectGetSubject is where a stream answers direct gets.
func DirectGetSubject(stream string) string { return "$JS.API.DIRECT.GET." + stream }

// TicksSubject is where a gateway stores a DeliveredRequest the receipts
// function did not answer, for it to apply later: delivery never waits on
// the function, and no tick is lost to its absence.
func TicksSubject(reader string) string { return TicksPrefix + reader }

// QueuedTickDedupID is the Nats-Msg-Id of such a stored request: one per
// device and range.
func QueuedTickDedupID(reader, device string, from, to uint64) string {
	return "q:" + reader + ":" + device + ":" + strconv.FormatUint(from, 10) + ":" + strconv.FormatUint(to, 10)
}
