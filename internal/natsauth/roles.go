// Package natsauth owns who may do what on Switchboard's NATS: one role per
// component (a gateway, each worker function, the media function, an
// operator), each with its own NKey and only the publish and subscribe
// rights that component needs.
//
// Why NKey users with static permissions, and not decentralised JWT auth:
// a server holds only public keys (a stolen config grants nothing), a
// client proves its key by signing a nonce (no secret crosses the wire),
// and the whole model is a list of allow rules that the embedded server,
// deploy/*.conf and the tests share. JWT auth adds an operator, account
// JWTs and a resolver: worth it for many tenants or revoking users without
// a restart, neither of which Switchboard needs. A JWT deployment still
// works: give each component a .creds file with the same permissions.
//
// The rules are written once, here. The embedded server takes them as
// server options (ServerUsers), deploy/permissions.conf is generated from
// them (Conf; a test keeps the file in step), and every test server runs
// them, so a component that needs a right it lacks fails the suite.
//
// It must not know the wire protocol or hold connections.
package natsauth

import (
	"github.com/nats-io/nats-server/v2/server"

	"github.com/switchboard-im/switchboard/contract"
)

// Role is a kind of NATS client. Every process of one kind shares its
// role's key.
type Role string

// The roles. Each worker function is a role of its own, so a function can
// do only its own work.
const (
	// Gateway serves devices: it stores their messages, reads their
	// inboxes and writes their cursors and leases.
	Gateway Role = "gateway"
	// Receipts applies delivered and read events.
	Receipts Role = "receipts"
	// Presence keeps who is online.
	Presence Role = "presence"
	// Push wakes offline devices.
	Push Role = "push"
	// Media presigns uploads and downloads and keeps grants.
	Media Role = "media"
	// Groups keeps groups' membership and fans their messages out to the
	// members' inboxes.
	Groups Role = "groups"
	// Operator is for the nats CLI, the load tool and setup (creating the
	// streams): everything, as an administrator of the system.
	Operator Role = "operator"
)

// Roles lists every role, components first.
var Roles = []Role{Gateway, Receipts, Presence, Push, Media, Groups, Operator}

// InboxPrefix is the prefix of a role's reply subjects. Each role may
// subscribe only under its own, so no component reads another's replies
// (a JetStream read of an inbox, a media function's signed URL). Clients
// pass it with nats.CustomInboxPrefix (ClientOptions does).
func InboxPrefix(r Role) string {
	if r == Operator {
		return "_INBOX" // the nats CLI's own default
	}
	return "_INBOX_" + string(r)
}

// Rules are a role's publish and subscribe allow lists.
//
// No role has nats-server's allow_responses, which would let it publish
// to whatever reply subject a request named: a requester could then make
// a function "answer" into a bucket or an inbox (a presence request with
// the reply $KV.GROUP_INFO.friends would overwrite a group's record). A
// role answers only the roles that ask it, on their reply prefixes
// (calls, answers).
type Rules struct {
	Publish   []string
	Subscribe []string
}

// Core NATS subjects, shared between gateways and functions. Names only:
// their meaning is documented where they are used.
const (
	subjLive     = contract.LivePrefix + "*" // republished inbox copies
	subjEvents   = "sb.ev.*"                 // typing, per user
	subjKick     = "sb.kick.*.*"             // one session per device
	subjPresence = "sb.presence.*"           // presence updates
	subjFn       = "sb.fn."                  // function request subjects
	subjMicro    = "$SRV.>"                  // micro discovery (nats micro ls)
	leaderInbox  = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + contract.Inbox
	groupMsgs    = contract.GroupsPrefix + "*.*.m" // group chat messages (gateways)
	groupEvents  = contract.GroupsPrefix + "*.*.e" // membership changes (the groups function)
)

// Buckets' stream names and subject prefixes.
func kvStream(bucket string) string  { return "KV_" + bucket }
func kvSubject(bucket string) string { return "$KV." + bucket + "." }

// For returns the rules of role r.
func For(r Role) Rules {
	switch r {
	case Gateway:
		return Rules{
			Publish: join(
				// A device's sends, its delivered and read events, and its
				// position, registry entry, lease and settings.
				// A group message is stored once, in its group's log; only
				// the groups function stores membership changes there.
				[]string{contract.InboxPrefix + "*", contract.TicksPrefix + "*", groupMsgs,
					kvSubject(contract.DevicesKV) + "*", kvSubject(contract.CursorsKV) + "*.*",
					kvSubject(contract.PresenceKV) + "lease.*.*", kvSubject(contract.SettingsKV) + "*",
					subjEvents, subjKick,
					subjFn + "receipts.delivered", subjFn + "receipts.read", subjFn + "receipts.status", subjFn + "receipts.status-remote", subjFn + "receipts.group", subjFn + "receipts.group-positions", subjFn + "presence.get", subjFn + "presence.announce", subjFn + "media.>",
					subjFn + "groups.>"},
				streamInfo(contract.Inbox, kvStream(contract.DevicesKV), kvStream(contract.CursorsKV),
					kvStream(contract.PresenceKV), kvStream(contract.SettingsKV), kvStream(contract.GroupInfoKV)),
				reads(contract.Inbox, kvStream(contract.DevicesKV), kvStream(contract.CursorsKV),
					kvStream(contract.PresenceKV), kvStream(contract.SettingsKV), kvStream(contract.GroupInfoKV)),
				// The logs of groups whose members read them
				// (docs/GROUP-LOG.md).
				reads(contract.GroupsStream),
				// Regions: sends to users homed elsewhere, and the
				// directory of home regions; sends to and positions in
				// groups homed elsewhere, and those groups' records; its
				// own sends still waiting in OUTBOX (a status asked before
				// a group's home has one).
				[]string{contract.OutboxPrefix + "*.*", contract.OutboxPrefix + "*.g.*.*", contract.OutboxPrefix + "*.t.*"},
				reads(contract.Outbox),
				// And the other sourcing streams' state, for the link metrics.
				streamInfo(kvStream(contract.HomesKV), contract.Outbox, kvStream(contract.GroupDirKV), contract.GroupsStream, contract.TicksStream),
				reads(kvStream(contract.HomesKV), kvStream(contract.GroupDirKV)),
				// Its answers to other gateways' kicks.
				answers(Gateway),
			),
			// Group records' writes as they are made (the records it
			// keeps, gateway/grouprecords.go: it reads them anyway).
			Subscribe: []string{subjLive, contract.GroupBellPrefix + "*", subjEvents, subjKick, subjPresence, leaderInbox, InboxPrefix(r) + ".>", contract.CallPrefix(string(r)) + ".>",
				kvSubject(contract.GroupInfoKV) + "*"},
		}
	case Receipts:
		// Receipts into senders' inboxes, conversations' read positions and
		// members' group positions; positions and settings read to answer
		// status and apply read-receipt privacy. Of messages it reads the
		// group logs, for who sent what, and inboxes only to find where a
		// message from another region landed, for its sender's status
		// (functions/receipts/xrstatus.go).
		read := []string{kvStream(contract.ReadsKV), kvStream(contract.SettingsKV), kvStream(contract.CursorsKV), kvStream(contract.DevicesKV),
			kvStream(contract.GroupTicksKV), kvStream(contract.GroupInfoKV), contract.GroupsStream, contract.Inbox}
		return Rules{
			Publish: join(
				// Ticks for senders homed in another region go through
				// this region's OUTBOX (contract/regions.go): delivered
				// ones into their inboxes, read ones into their region's
				// TICKS.
				[]string{contract.InboxPrefix + "*", contract.OutboxPrefix + "*.*", contract.OutboxPrefix + "*.t.*", kvSubject(contract.ReadsKV) + "*.*",
					kvSubject(contract.GroupTicksKV) + "*", kvSubject(contract.GroupTicksKV) + "*.*", contract.DLQPrefix + string(r) + ".>",
					// Status requests about messages sent to other regions,
					// asked of those regions' receipts functions, whose
					// answers come back over the leaf links
					// (contract/xrstatus.go).
					contract.ReceiptsForwardSubject("*")},
				consumer(contract.TicksStream, string(r)),
				// The durable of group records' changes, each settled
				// once (groupnews.go).
				consumer(kvStream(contract.GroupInfoKV), string(r)+"-news"),
				// A watch of the group records' changes (grouprecords.go).
				// Consumers' names are not subjects a permission can
				// pattern, so this also reaches GROUP_INFO's durables (the
				// regions' sourcing): a right of the same weight as the
				// role's writes into every inbox.
				watch(kvStream(contract.GroupInfoKV)),
				streamInfo(append([]string{contract.TicksStream, contract.DLQ}, read...)...),
				reads(read...),
				// Answers to gateways, the operator, and other regions'
				// receipts functions.
				calls(Gateway), answers(Operator), []string{contract.ReceiptsForwardReply("*") + ">"},
			),
			Subscribe: []string{subjFn + string(r) + ".>", subjMicro, InboxPrefix(r) + ".>",
				contract.ReceiptsForwardSubject("*"), contract.ReceiptsForwardReply("*") + ">"},
		}
	case Presence:
		// A listing of the records (an ordered consumer), for the sweep
		// after a gap in lease changes (functions/presence).
		return function(r, kvStream(contract.PresenceKV),
			join([]string{kvSubject(contract.PresenceKV) + "user.*", subjPresence}, calls(Gateway), watch(kvStream(contract.PresenceKV))),
			[]string{kvStream(contract.PresenceKV), kvStream(contract.SettingsKV)})
	case Push:
		// Its second durable reads the leases' changes: a device gone
		// may leave a message nobody woke it for (functions/push/gone.go).
		// Its third reads group messages' headers, and the group logs'
		// changes, for groups whose members read the log
		// (functions/push/groups.go).
		return function(r, contract.Inbox,
			join([]string{kvSubject(contract.PushKV) + "*"}, consumer(kvStream(contract.PresenceKV), contract.PushGoneDurable),
				consumer(contract.GroupsStream, contract.PushGroupsDurable)),
			[]string{contract.Inbox, kvStream(contract.PushKV), kvStream(contract.DevicesKV),
				kvStream(contract.CursorsKV), kvStream(contract.PresenceKV), contract.GroupsStream})
	case Media:
		// Its buckets are its own: nothing else may read them (grants,
		// upload claims, the embedded store's bytes). The operator makes
		// them (media.Setup): a role that may create or update a stream
		// may give it a source, and a bucket sourcing INBOX and
		// republishing to media's subjects would read every inbox.
		own := []string{kvStream(MediaACL), kvStream(MediaUploads), kvStream(MediaQuota), "OBJ_" + MediaObjects}
		return Rules{
			Publish: join(
				// Its own requests too: its HTTP API (Service.API) asks
				// whichever instance answers first.
				[]string{subjFn + "media.>", kvSubject(MediaACL) + ">", kvSubject(MediaUploads) + ">", kvSubject(MediaQuota) + ">",
					"$O." + MediaObjects + ".>"},
				streamInfo(own...), reads(own...), manage(own...),
				// Answers to gateways, the operator and its own HTTP API.
				calls(Gateway), answers(Operator, Media),
			),
			Subscribe: []string{subjFn + "media.>", subjMicro, InboxPrefix(r) + ".>"},
		}
	case Groups:
		// Membership changes into the group logs and the records that
		// follow them; every member's copy of a group message into the
		// member's inbox (the receipts function and this one are the only
		// functions that store there). It stores no chat message of its
		// own: those are the gateways'.
		var cons []string
		for p := range contract.GroupPartitions {
			cons = append(cons, consumer(contract.GroupsStream, contract.GroupsDurable(p))...)
		}
		// Regions: copies for members homed elsewhere through OUTBOX, the
		// members' homes and other regions' groups, and changes to those
		// asked of their home regions' groups functions, whose answers
		// come back over the leaf links (contract/regions.go).
		read := []string{contract.GroupsStream, kvStream(contract.GroupInfoKV), kvStream(contract.DevicesKV),
			kvStream(contract.HomesKV), kvStream(contract.GroupDirKV)}
		return Rules{
			Publish: join(
				// Records, each user's groups (m.<user>.<region>, and the
				// mark that they were filled in) and each group's name.
				[]string{groupEvents, contract.InboxPrefix + "*", kvSubject(contract.GroupInfoKV) + "*", kvSubject(contract.GroupInfoKV) + "m.*.*",
					kvSubject(contract.GroupInfoKV) + "m=built.*", kvSubject(contract.GroupInfoKV) + "n.*", contract.DLQPrefix + string(r) + ".>",
					contract.OutboxPrefix + "*.*", contract.GroupsForwardSubject("*", "*"),
					// A message from a non-member, out of the log.
					"$JS.API.STREAM.MSG.DELETE." + contract.GroupsStream},
				cons,
				streamInfo(append([]string{contract.DLQ}, read...)...),
				reads(read...),
				// Answers to gateways, the operator, and other regions'
				// groups functions.
				calls(Gateway), answers(Operator), []string{contract.GroupsForwardReply("*") + ">"},
			),
			Subscribe: []string{subjFn + string(r) + ".>", subjMicro, InboxPrefix(r) + ".>",
				contract.GroupsForwardSubject("*", "*"), contract.GroupsForwardReply("*") + ">"},
		}
	case Operator:
		return Rules{Publish: []string{">"}, Subscribe: []string{">"}}
	}
	return Rules{}
}

// The media function's buckets (media.BucketACL and friends; named here
// so this package need not import media).
const (
	MediaACL     = "MEDIA_ACL"
	MediaUploads = "MEDIA_UPLOADS"
	MediaQuota   = "MEDIA_QUOTA"
	MediaObjects = "MEDIA"
)

// function is a worker function's rules: its durable consumer on stream
// (named after the role), its micro service on sb.fn.<role>.> answering
// the operator (nats micro, the push function's notify), dead letters on
// dlq.<role>.>, the extra subjects it publishes, and the streams it reads.
func function(r Role, stream string, publish, read []string) Rules {
	durable := string(r)
	return Rules{
		Publish: join(publish,
			[]string{contract.DLQPrefix + string(r) + ".>"},
			consumer(stream, durable),
			streamInfo(append([]string{stream, contract.DLQ}, read...)...),
			reads(read...),
			answers(Operator),
		),
		Subscribe: []string{subjFn + string(r) + ".>", subjMicro, InboxPrefix(r) + ".>"},
	}
}

// calls is publishing to the reply subjects of the named roles' requests
// to the functions (contract.Caller): the functions' answers, apart from
// where JetStream answers those roles, so no function can forge a PubAck
// or a stream read's answer for them.
func calls(askers ...Role) []string {
	var out []string
	for _, a := range askers {
		out = append(out, contract.CallPrefix(string(a))+".>")
	}
	return out
}

// answers is publishing to the reply subjects of the named roles'
// requests made on their connection inbox (the operator's nats CLI, a
// gateway's kicks, the media function's API asking itself).
func answers(askers ...Role) []string {
	var out []string
	for _, a := range askers {
		out = append(out, InboxPrefix(a)+".>")
	}
	return out
}

// consumer is what binding and pulling a durable takes.
func consumer(stream, durable string) []string {
	api := "$JS.API.CONSUMER."
	return []string{
		api + "CREATE." + stream + "." + durable, api + "CREATE." + stream + "." + durable + ".>",
		api + "DURABLE.CREATE." + stream + "." + durable, api + "INFO." + stream + "." + durable,
		api + "MSG.NEXT." + stream + "." + durable, "$JS.ACK." + stream + "." + durable + ".>",
	}
}

// streamInfo is reading the streams' configurations and state, and the
// account's JetStream usage (which creating a bucket checks).
func streamInfo(names ...string) []string {
	out := []string{"$JS.API.INFO"}
	for _, n := range names {
		out = append(out, "$JS.API.STREAM.INFO."+n)
	}
	return out
}

// reads are the ways to read a stream's messages without a consumer.
func reads(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, "$JS.API.DIRECT.GET."+n, "$JS.API.DIRECT.GET."+n+".>", "$JS.API.STREAM.MSG.GET."+n)
	}
	return out
}

// watch is keeping an ordered consumer on the named streams, as a KV
// watch does: creating it (again after a gap), its flow control, and
// deleting it.
func watch(names ...string) []string {
	var out []string
	for _, n := range names {
		api := "$JS.API."
		out = append(out, api+"CONSUMER.CREATE."+n, api+"CONSUMER.CREATE."+n+".>",
			api+"CONSUMER.DELETE."+n+".>", "$JS.FC."+n+".>")
	}
	return out
}

// manage is what an owner of a bucket does besides reading: ordered
// consumers (object reads, listings), deletes and purges.
func manage(names ...string) []string {
	var out []string
	for _, n := range names {
		api := "$JS.API."
		out = append(out, api+"CONSUMER.CREATE."+n, api+"CONSUMER.CREATE."+n+".>",
			api+"CONSUMER.DELETE."+n+".>", api+"CONSUMER.INFO."+n+".>",
			api+"STREAM.PURGE."+n, api+"STREAM.MSG.DELETE."+n, "$JS.FC."+n+".>")
	}
	return out
}

func join(lists ...[]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range lists {
		for _, s := range l {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// Permissions are r's rules in nats-server's terms.
func Permissions(r Role) *server.Permissions {
	rules := For(r)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: rules.Publish},
		Subscribe: &server.SubjectPermission{Allow: rules.Subscribe},
	}
}
