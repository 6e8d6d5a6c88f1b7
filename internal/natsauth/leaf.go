package natsauth

import (
	"strconv"
	"strings"

	"github.com/switchboard-im/switchboard/contract"
)

// Leaf is the key a region's nats-server presents to the hub on its leaf
// link (deploy/regions). It is a server's key, not a client's: the hub
// admits leaf links with it alone, and no component connects with it.
const Leaf Role = "leaf"

// keyRoles are the roles that have a key: every client role, and the
// leaf links'.
var keyRoles = append(append([]Role{}, Roles...), Leaf)

// EnvLeafSeed is the environment variable a region's config takes its
// leaf link's seed from (the hub takes the public key from EnvVar(Leaf)).
const EnvLeafSeed = "SWITCHBOARD_LEAF_SEED"

// LeafDeny are the subjects that never cross a leaf link, in either
// direction. With one account in every region, NATS would otherwise carry
// any subject with interest on the other side: a message published on
// inbox.bob in one region would also be stored by every other region's
// INBOX, a live copy would reach the other region's gateways, a request
// to a worker function could be answered by another region's instance.
// What must cross is only what JetStream sourcing uses: the other
// domain's API ($JS.<domain>.API.>), the sourcing consumers' deliver
// subjects (contract.CrossRegionPrefix), flow control ($JS.FC.>) and the
// API's replies ($JSC.>), and the operator's request replies (_INBOX.>),
// so the nats CLI in one region can ask another's JetStream.
// nats-server itself also denies the non-domain API ($JS.API.>) on a leaf
// link between domains.
var LeafDeny = []string{
	contract.InboxPrefix + ">",  // INBOX: stored per region, never copied by interest
	contract.OutboxPrefix + ">", // OUTBOX: crosses only through sourcing
	contract.TicksPrefix + ">",
	contract.DLQPrefix + ">",
	contract.GroupsPrefix + ">", // group logs: each region's own
	"sb.>",                      // live copies, events, kicks, presence, function requests
	"$KV.>",                     // buckets: each region's own (HOMES crosses by mirroring)
	"$O.>",                      // object stores
	"$SRV.>",                    // micro discovery: each region's functions are its own
	"$JS.EVENT.>",               // advisories: another region's INBOX leader is none of ours
	// Acks: every region has durables of the same names (receipts on
	// TICKS, sync and push on INBOX, groups-NN on GROUPS), and an ack's
	// subject names the stream, the durable and the sequence but no
	// domain, so one region's ack would ack another's message of that
	// sequence (on TICKS, a work queue, deleting it unapplied).
	"$JS.ACK.>",
	InboxPrefix(Gateway) + ".>",
	contract.CallPrefix(string(Gateway)) + ".>",
	InboxPrefix(Receipts) + ".>",
	InboxPrefix(Presence) + ".>",
	InboxPrefix(Push) + ".>",
	InboxPrefix(Media) + ".>",
	InboxPrefix(Groups) + ".>",
}

// LeafConfFile is the generated leaf-link fragment in deploy/regions.
const LeafConfFile = "leaf.inc"

// LeafConf renders the leaf link's settings a region's remote includes:
// the seed it signs with and the deny lists, both ways.
func LeafConf() string {
	var b strings.Builder
	b.WriteString("# Generated from internal/natsauth (go test ./deploy -run TestPermissionsFile -update);\n")
	b.WriteString("# do not edit. Included inside each region's leaf remote: the key the\n")
	b.WriteString("# link signs in with (its seed comes from the environment) and the\n")
	b.WriteString("# subjects that must not cross, in either direction.\n\n")
	b.WriteString("nkey: $" + EnvLeafSeed + "\n")
	for _, list := range []string{"deny_imports", "deny_exports"} {
		b.WriteString(list + ": [\n")
		for _, s := range LeafDeny {
			b.WriteString("  " + strconv.Quote(s) + "\n")
		}
		b.WriteString("]\n")
	}
	return b.String()
}
