package contract

import (
	"strconv"
	"strings"
)

// Regions.
//
// Each region is its own NATS deployment and JetStream domain, joined to
// the others through a hub by leaf links. A user has one home region
// (HomesKV), where their devices are served and their inbox is. A message
// for a user homed elsewhere is stored first in the sender's region, in
// OUTBOX on out.<region>.<user>, and the home region's INBOX sources it
// from there across domains (renaming it inbox.<user>): JetStream stores
// and forwards it, and the transit copy is deleted once taken (OUTBOX is
// a work queue). Ticks go back the same way, from the reader's region's
// OUTBOX into the sender's home INBOX; read ticks into its TICKS, whose
// receipts function applies the sender's read-receipt setting first
// (OutboxTicksSubject).

// Names of the regions' JetStream assets and subjects.
const (
	Outbox       = "OUTBOX"
	OutboxPrefix = "out."
	// HomesKV is the directory of home regions: key <user>, value the
	// region's name. One region holds the bucket and the others mirror
	// it, so every region reads it locally, also while cut off.
	HomesKV = "HOMES"
	// CrossRegionPrefix starts the deliver subjects of the consumers
	// that carry OUTBOX across a leaf link: xr.<from>.<to>.
	CrossRegionPrefix = "xr."
)

// OutboxFirstSeq is OUTBOX's first sequence. "sent" for a message to
// another region is its OUTBOX sequence, so OUTBOX numbers from far
// above anything an INBOX reaches (2^52, still exact in a JavaScript
// number): a client, or a gateway answering a status frame, can never
// take one for an INBOX sequence. The wire protocol names the same
// number (protocol.OutboxSeqFloor).
const OutboxFirstSeq uint64 = 1 << 52

// IsOutboxSeq reports whether seq is an OUTBOX sequence (see
// OutboxFirstSeq).
func IsOutboxSeq(seq uint64) bool { return seq >= OutboxFirstSeq }

// OutboxSubject is where a message for user, homed in region, is stored
// in the sender's region. The caller must have validated both as ids.
func OutboxSubject(region, user string) string { return OutboxPrefix + region + "." + user }

// CrossRegionConsumer names the durable consumer on OUTBOX in region
// from that carries to region to what is stored for it.
func CrossRegionConsumer(to string) string { return "to-" + to }

// CrossRegionDeliver is that consumer's deliver subject, which crosses
// the leaf links.
func CrossRegionDeliver(from, to string) string { return CrossRegionPrefix + from + "." + to }

// HdrOriginRegion names the region a message or tick was stored in
// first, on copies that crossed from another region's OUTBOX.
const HdrOriginRegion = "Sb-Origin-Region"

// HdrStreamSource is the header JetStream puts on a sourced copy:
// "<stream index> <origin sequence> <filter> <transform> <origin subject>
// [<origin stream identity>]" (nats-server's genSourceHeader).
const HdrStreamSource = "Nats-Stream-Source"

// OriginSeq is the sequence a sourced copy had in the stream it came from
// (its Nats-Stream-Source header), 0 if h names none.
func OriginSeq(h string) uint64 {
	fields := strings.Fields(h)
	if len(fields) < 2 {
		return 0
	}
	n, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Origin is a remote sender's messages in a delivered stretch, in the
// sequences of their region's OUTBOX: the sender's app knows its messages
// by those ("sent"), so its tick must name them.
type Origin struct {
	Sender string `json:"sender"`
	Region string `json:"region"`
	From   uint64 `json:"from"`
	To     uint64 `json:"to"`
}

// Groups across regions.
//
// A group's home is the region it was created in: its log (GROUPS), its
// record (GROUP_INFO), its members' positions (GROUP_TICKS) and its
// fan-out are there and nowhere else, so one log orders it. The other
// regions take part through the same store-and-forward as 1:1 sends:
//   - a member homed elsewhere sends into their own region's OUTBOX, on
//     OutboxGroupSubject (a fast "sent" that survives a cut), and the
//     group's home GROUPS sources it, as group.<partition>.<group>.m;
//   - the fan-out stores a member's copy in their home INBOX, through the
//     home region's OUTBOX when that is another region, under the same
//     dedup id (GroupCopyDedupID) either way;
//   - a member's position in a group homed elsewhere is stored in their
//     region's OUTBOX, on OutboxTicksSubject, and the group's home TICKS
//     sources it for its receipts function; a receipt for a sender homed
//     elsewhere goes back through the home's OUTBOX, naming the sender's
//     messages by their OUTBOX sequences (their "sent");
//   - membership changes are requests (they need an answer): a groups
//     function passes a request about a group homed elsewhere on to that
//     region's groups function over GroupsForwardSubject, across the leaf
//     links, and relays its answer.
//
// Every region reads every group's record locally: GROUP_DIR sources each
// other region's GROUP_INFO (GroupRecord.Region names the home).

// GroupDirKV holds the records of groups homed in other regions, sourced
// from their GROUP_INFO buckets: read only, written by no one here.
const GroupDirKV = "GROUP_DIR"

// OutboxGroupSubject is where a member's send to group gid, homed in
// region, waits in the sender's region for the home's GROUPS.
func OutboxGroupSubject(region, gid string) string {
	return OutboxPrefix + region + ".g." + GroupPartition(gid) + "." + gid
}

// OutboxTicksSubject is where a member's position request (a
// GroupPositionRequest) for a group homed in region waits for that
// region's TICKS; and where a read tick for member, homed in region,
// does (a KindReceipt message: that region's receipts function applies
// the member's own read-receipt setting, kept there, before storing it
// in the member's inbox).
func OutboxTicksSubject(region, member string) string {
	return OutboxPrefix + region + ".t." + member
}

// GroupsForwardSubject is where the groups function of region answers
// op for groups homed there, asked by other regions' groups functions.
func GroupsForwardSubject(region, op string) string {
	return CrossRegionPrefix + "fn." + region + ".groups." + op
}

// GroupsForwardReply starts the reply subjects of forwarded group
// requests asked from region: they cross the leaf links back.
func GroupsForwardReply(region string) string {
	return CrossRegionPrefix + "re." + region + ".groups."
}
