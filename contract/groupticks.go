package contract

import "strconv"

// Group receipts.
//
// A member's place in a group is two positions in the group's log
// (GROUPS sequences): delivered, up to where one of the member's devices
// has acked every copy of the group's log it was given, and read, up to
// where the member has read. Gateways ask the receipts function to raise
// them (GroupPositionRequest), one request per group per acked stretch or
// read. The function keeps them in GROUP_TICKS, with one aggregate record
// per group that says up to where the group's senders have been told, and
// stores one receipt per sender when the group's minimum rises: nothing is
// kept per message.

// GroupTicksKV is the bucket of members' positions and groups' aggregates:
//
//	<group>.<member>  a GroupPosition
//	<group>           a GroupAggregate
const GroupTicksKV = "GROUP_TICKS"

// GroupPositionSubject is where a gateway asks the receipts function to
// raise a member's position in a group.
const GroupPositionSubject = "sb.fn.receipts.group"

// GroupPositionsSubject is where a gateway asks the receipts function to
// raise many members' delivered positions at once
// (GroupPositionsRequest): the positions its sessions asked for while
// its previous requests were on their way, gathered.
const GroupPositionsSubject = "sb.fn.receipts.group-positions"

// GroupPositionsRequest is delivered positions gathered by a gateway,
// each a GroupPositionRequest with Status delivered (reads go one by
// one, on GroupPositionSubject: each answers its own frame). The
// function answers once every one is taken; asked again, it changes
// nothing.
type GroupPositionsRequest struct {
	Positions []GroupPositionRequest `json:"positions"`
	// WithinMS is how long the asker waits for the answer: the function
	// answers by then, naming the groups it has not taken yet as failed.
	WithinMS int64 `json:"within_ms,omitempty"`
}

// GroupPositionsReply answers a GroupPositionsRequest: Failed names the
// groups whose positions were not taken (the store failed for them), which
// the gateway leaves in TICKS as it does what the function does not answer,
// so one group's trouble does not hold back the others'.
type GroupPositionsReply struct {
	Failed []string `json:"failed,omitempty"`
}

// GroupPositionsMax is the most positions one GroupPositionsRequest
// carries (about 100 bytes each).
const GroupPositionsMax = 512

// GroupPositionRequest says that Member, on Device, has (Status
// delivered) or has read (Status read) group Group's log up to Seq, a
// GROUPS sequence: the highest Sb-Group-Seq of the group's copies the
// device acked in one stretch, or of the copy it read. Asked again it
// changes nothing. A read names the copy read by its seq in the member's
// inbox too (InboxSeq), for the member's other devices (read_sync).
type GroupPositionRequest struct {
	Group    string `json:"group"`
	Member   string `json:"member"`
	Device   string `json:"device"`
	Status   string `json:"status"`
	Seq      uint64 `json:"seq"`
	InboxSeq uint64 `json:"inbox_seq,omitempty"`
	// Log marks a read of a group the member reads from its log
	// (docs/GROUP-LOG.md): no copy, so no InboxSeq; the member's other
	// devices are told of it by Seq.
	Log bool `json:"log,omitempty"`
	// Region is the member's home region when it is not the group's (a
	// regions deployment, contract/regions.go): their inbox, and so their
	// read_sync, is there.
	Region string `json:"region,omitempty"`
}

// KindGroupPosition marks a GroupPositionRequest a gateway stored in
// TICKS (Sb-Kind); a request without it is a DeliveredRequest.
const KindGroupPosition = "group-position"

// QueuedGroupTickDedupID is the Nats-Msg-Id of a GroupPositionRequest
// stored in TICKS: one per device, group, status and position.
func QueuedGroupTickDedupID(member, device, group, status string, seq uint64) string {
	return "qg:" + member + ":" + device + ":" + group + ":" + status + ":" + strconv.FormatUint(seq, 10)
}

// GroupTickKey is member's position record in group gid.
func GroupTickKey(gid, member string) string { return gid + "." + member }

// GroupAggregateKey is group gid's aggregate record.
func GroupAggregateKey(gid string) string { return gid }

// GroupPosition is a member's record: the log positions they have
// (delivered) and have read. Both only rise, and read never passes
// delivered (a read raises both).
type GroupPosition struct {
	Delivered uint64 `json:"d"`
	Read      uint64 `json:"r"`
}

// GroupAggregate is what a group's senders have been told, per status.
type GroupAggregate struct {
	Delivered GroupTrack `json:"d"`
	Read      GroupTrack `json:"r"`
	// Seq is the GROUP_INFO record's Seq (its last change) the aggregate
	// was computed with: a membership change since asks for a new one.
	Seq uint64 `json:"seq"`
}

// GroupTrack is one status's aggregate. Every sender but Witness has been
// told up to Told; Witness, a member at the lowest position when it was
// computed, up to Told2 (the lowest position of everyone else). While
// Witness is at or below Told and Witness2 (the member at Told2 when it
// was computed) at or below Told2, no sender can be owed anything more,
// so only a move of one of these two makes the function read every
// member's position again.
type GroupTrack struct {
	Told     uint64 `json:"told"`
	Witness  string `json:"w,omitempty"`
	Told2    uint64 `json:"told2"`
	Witness2 string `json:"w2,omitempty"`
}

// GroupTickDedupID is the Nats-Msg-Id of a group receipt: one per group,
// status, sender and range.
func GroupTickDedupID(gid, status, sender string, from, to uint64) string {
	return "gt:" + gid + ":" + status + ":" + sender + ":" + strconv.FormatUint(from, 10) + ":" + strconv.FormatUint(to, 10)
}

// ErrCodeUnknownSeq is the receipts function's refusal of a group status
// request for a message that is not the sender's in that group (the
// wire protocol's unknown_seq).
const ErrCodeUnknownSeq = "unknown_seq"
