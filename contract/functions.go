package contract

// Worker functions' request subjects and the request and reply types on
// them, and the records gateways and functions both read. Every function
// is a NATS micro service: any number of instances answer in a queue
// group, and a refusal is a micro error (see Call).

// Presence.

// PresenceGetSubject is the request subject of the get endpoint.
const PresenceGetSubject = "sb.fn.presence.get"

// PresenceAnnounceSubject is where a gateway asks the presence function
// to publish a user's state again, under privacy settings that changed:
// followers see the new privacy at once, not at the user's next change.
// The presence function is the only publisher of presence updates.
const PresenceAnnounceSubject = "sb.fn.presence.announce"

// AnnounceRequest names the user whose state to publish again.
type AnnounceRequest struct {
	User string `json:"user"`
}

// MaxPresenceGet is the most users one get request may ask about.
const MaxPresenceGet = 256

// PresenceSubject is where a user's presence changes are published.
func PresenceSubject(user string) string { return "sb.presence." + user }

// Lease is the value of a lease key, written by the gateway that holds the
// device's session.
type Lease struct {
	Gateway string `json:"gateway"`
	Session string `json:"session"`
	Since   int64  `json:"since"` // ms since epoch the session started
}

// LeaseSubject is the KV subject of a device's lease, for gateways that
// write it with a raw publish (to set a TTL on every refresh).
func LeaseSubject(user, device string) string {
	return "$KV." + PresenceKV + "." + "lease." + user + "." + device
}

// LeaseKey is the KV key of a device's lease.
func LeaseKey(user, device string) string { return "lease." + user + "." + device }

// PresenceUpdate is published on PresenceSubject when a user comes online or goes
// offline. Visibility is the user's last_seen setting at that moment;
// gateways show the update as is to viewers when it is everyone, ask the
// get endpoint for each viewer when it is contacts, and show it to no one
// when it is nobody. A viewer already told the user is hidden is told
// nothing more, so the update's timing does not show.
//
// Rev is the revision of the user's presence record the update was made
// from: updates of one user can be published out of order (instances
// publish after their compare-and-set, each in its own time), and a
// gateway forwards none older than one it forwarded. 0 (a settings
// change announced) is always forwarded.
type PresenceUpdate struct {
	User       string `json:"user"`
	Online     bool   `json:"online"`
	LastSeen   int64  `json:"last_seen,omitempty"`
	Visibility string `json:"visibility"`
	Rev        uint64 `json:"rev,omitempty"`
}

// PresenceRequest asks for users' presence as Viewer may see it. The gateway
// fills in Viewer from the token.
type PresenceRequest struct {
	Viewer string   `json:"viewer"`
	Users  []string `json:"users"`
}

// PresenceView is one user's presence as one viewer may see it.
type PresenceView struct {
	User     string `json:"user"`
	Online   bool   `json:"online"`
	LastSeen int64  `json:"last_seen,omitempty"`
	Hidden   bool   `json:"hidden,omitempty"`
}

// PresenceReply answers a PresenceRequest, in the order asked.
type PresenceReply struct {
	Users []PresenceView `json:"users"`
}

// Receipts.
//
// A tick is a position, not a record per message. When a device's position
// in its inbox moves (it acked everything up to a sequence), the gateway
// asks the receipts function to tell each sender with messages in the
// range: one tick per sender covering all of them. When a user reads a
// conversation up to a message, one read tick covers everything before it.
// The function stores each tick in the sender's inbox (one stored write),
// keeps each conversation's read position (READS), and answers status from
// positions (cursors, devices, read positions): nothing is kept per
// message.

// The receipts function's request subjects.
const (
	DeliveredSubject = "sb.fn.receipts.delivered"
	ReadSubject      = "sb.fn.receipts.read"
	StatusSubject    = "sb.fn.receipts.status"
)

// DeliveredRequest says that Reader's device Device has every message of
// Reader's inbox from sequence From to To, both included (it acked them).
// Senders are the users with chat messages in that range; each gets one
// delivered tick covering it. A gateway asks before it moves the device's
// cursor past To, and asks again until it is answered, so a tick cannot be
// lost to a crash; the tick's dedup id keeps a repeat single.
type DeliveredRequest struct {
	Reader  string   `json:"reader"`
	Device  string   `json:"device"`
	From    uint64   `json:"from"`
	To      uint64   `json:"to"`
	Senders []string `json:"senders"`
	// Origins are the Senders homed in another region, with their
	// messages' range in that region's OUTBOX: their ticks go back there
	// (contract/regions.go).
	Origins []Origin `json:"origins,omitempty"`
}

// ReadRequest says that Reader, on Device, has read Sender's messages up to
// and including the one stored at Seq in Reader's inbox (the gateway
// checked that it is Sender's and was delivered to Device).
type ReadRequest struct {
	Reader string `json:"reader"`
	Device string `json:"device"`
	Sender string `json:"sender"`
	Seq    uint64 `json:"seq"`
	// For a Sender homed in another region: that region, and the
	// message's sequence in its OUTBOX, which the read tick names.
	Region string `json:"region,omitempty"`
	Origin uint64 `json:"origin,omitempty"`
}

// StatusRequest asks for the status of the message stored at Seq, which
// Sender sent to Recipient: the gateway read both from the stream, and
// asks only for the sender. With Group instead of Recipient, Seq is a
// GROUPS sequence: the function checks that Sender sent it in Group
// (else it refuses with ErrCodeUnknownSeq) and answers for every member.
type StatusRequest struct {
	Sender    string `json:"sender"`
	Recipient string `json:"recipient,omitempty"`
	Group     string `json:"group,omitempty"`
	Seq       uint64 `json:"seq"`
}

// Ticks are one recipient's status of a message.
type Ticks struct {
	Delivered bool `json:"delivered"`
	Read      bool `json:"read"`
}

// StatusReply answers a StatusRequest: per recipient, whether any of their
// devices has the message and whether they read it (shown only if both
// users have read receipts on).
//
// For a group message, Recipients are the group's members as of now but
// the sender, from their positions; AllDelivered and AllRead say whether
// every one of them has it, and has read it.
type StatusReply struct {
	Recipients   map[string]Ticks `json:"recipients"`
	AllDelivered bool             `json:"all_delivered,omitempty"`
	AllRead      bool             `json:"all_read,omitempty"`
}

// ReadKey is a conversation's read position in READS: the sequence in
// reader's inbox up to which reader has read peer's messages.
func ReadKey(reader, peer string) string { return reader + "." + peer }

// Media.

// The media function's subjects: the micro group, each endpoint one token
// below.
const (
	MediaSubjectPrefix   = "sb.fn.media"
	MediaUploadSubject   = MediaSubjectPrefix + ".upload"
	MediaDownloadSubject = MediaSubjectPrefix + ".download"
	MediaGrantSubject    = MediaSubjectPrefix + ".grant"
)

// UploadRequest asks the function for an upload ticket. User is the
// authenticated uploader: the function trusts it, so only the gateway (or
// another trusted component) may publish on sb.fn.media.>, which the NATS
// account's permissions must ensure.
type UploadRequest struct {
	User string `json:"user"`
	Mime string `json:"mime"`
	Size int64  `json:"size"`
}

// DownloadRequest asks for a download URL on behalf of User.
type DownloadRequest struct {
	User string `json:"user"`
	Key  string `json:"key"`
}

// GrantRequest lets Users download Key; User must own it.
//
// A grant made for a media message also carries what the message says of
// the object, Size and SHA256 (hex), and is refused with ErrBadRequest
// unless the stored object matches: its size always, its digest where the
// store knows it (the embedded store; S3 does not, see doc.go). Zero
// values check nothing, as for a grant through the HTTP API.
type GrantRequest struct {
	User   string   `json:"user"`
	Key    string   `json:"key"`
	Users  []string `json:"users"`
	Size   int64    `json:"size,omitempty"`
	SHA256 string   `json:"sha256,omitempty"`
	// Mime is the type the message says, which must be the upload's: a
	// recipient's app shows the bytes as that type.
	Mime string `json:"mime,omitempty"`
}

// GrantResult is the record after a grant: everyone who may download Key
// besides Owner.
type GrantResult struct {
	Key   string   `json:"key"`
	Owner string   `json:"owner"`
	Users []string `json:"users"`
}
