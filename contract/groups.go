package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Groups.
//
// A group's log is its subjects in stream GROUPS, in one stream so that
// one sequence orders everything that happens in the group:
//
//	group.<partition>.<group>.m   chat messages, stored by gateways
//	group.<partition>.<group>.e   membership changes, stored by the groups function
//
// A change is stored only if the event subject's last sequence is the one
// the function decided from (Nats-Expected-Last-Subject-Sequence), so two
// admins' concurrent edits are applied one after the other, each to the
// state the other left. The log decides who gets what: the fan-out
// delivers a message stored at sequence S to the members as of S, which
// are the events stored before S applied in order. KV GROUP_INFO holds
// each group's record as of its latest event, for reads (a gateway's
// check that a sender is a member); it follows the log, and is never
// ahead of it.
//
// The partition is a hash of the group id: the fan-out reads each
// partition through one durable consumer holding one message at a time,
// so one group's messages are handled in stream order while many groups
// are handled at once. Partitions are part of the subjects: their number
// cannot change under a stream that holds messages.

// Names of the groups' JetStream assets.
const (
	GroupsStream = "GROUPS"
	GroupInfoKV  = "GROUP_INFO"
	GroupsPrefix = "group."
)

// GroupPartitions is how many partitions the groups' subjects are spread
// over.
const GroupPartitions = 16

// GroupPartition is the partition of group gid, two digits.
func GroupPartition(gid string) string {
	h := fnv.New32a()
	h.Write([]byte(gid))
	return partitionToken(int(h.Sum32() % GroupPartitions))
}

func partitionToken(p int) string {
	if p < 10 {
		return "0" + strconv.Itoa(p)
	}
	return strconv.Itoa(p)
}

// GroupMsgSubject is where group gid's chat messages are stored. The caller
// must have validated gid as a safe id.
func GroupMsgSubject(gid string) string {
	return GroupsPrefix + GroupPartition(gid) + "." + gid + ".m"
}

// GroupEventSubject is where group gid's membership changes are stored.
// A change's body is a JSON object with the system message's fields (op,
// users, name, promoted), group, the GroupRecord as the change left it
// (Seq aside), and prev, the sequence of the group's change before it (0:
// none): members reading the log take the first two from it, and a
// reader after the group as of a message walks back by prev.
func GroupEventSubject(gid string) string {
	return GroupsPrefix + GroupPartition(gid) + "." + gid + ".e"
}

// GroupLogFilter is every subject of group gid's log: its messages and
// its changes, in the order stored.
func GroupLogFilter(gid string) string {
	return GroupsPrefix + GroupPartition(gid) + "." + gid + ".*"
}

// GroupBellPrefix is where GROUPS rings for each message it stores: the
// message itself, on GroupBellSubject of its group (docs/GROUP-LOG.md).
const GroupBellPrefix = "sb.glive."

// GroupBellSubject is where GROUPS rings for group gid's log.
func GroupBellSubject(gid string) string { return GroupBellPrefix + gid }

// GroupPartitionFilter is every subject of partition p (0 to
// GroupPartitions-1).
func GroupPartitionFilter(p int) string { return GroupsPrefix + partitionToken(p) + ".>" }

// GroupsDurable is the fan-out's durable consumer of partition p.
func GroupsDurable(p int) string { return "groups-" + partitionToken(p) }

// Headers of group messages, on the stored message and on every member's
// copy; a copy also carries the original's HdrFrom, HdrDevice, HdrID and
// HdrTS.
const (
	HdrGroup    = "Sb-Group"     // the group's id
	HdrGroupSeq = "Sb-Group-Seq" // the message's sequence in GROUPS (on copies)
	// HdrGroupLog, on the copy of a change of a group whose members read
	// its log, tells the user it is copied to to read the group's log
	// after that change (its GROUPS sequence): the change that switched
	// the group to its log, or the one that added the user.
	HdrGroupLog = "Sb-Group-Log"
	// HdrTTL is JetStream's per-message TTL: group messages need to stay in
	// GROUPS only as long as INBOX keeps their copies; membership changes
	// stay, since they make up the group.
	HdrTTL = "Nats-TTL"
	// HdrExpectLastSubjSeq makes a store conditional on the subject's last
	// sequence (0: the subject holds nothing yet).
	HdrExpectLastSubjSeq = "Nats-Expected-Last-Subject-Sequence"
	// HdrExpectLastSubjSeqSubject names the subject whose last sequence
	// HdrExpectLastSubjSeq is checked on, when not the message's own: a
	// gateway stores a group message only if the group's event subject
	// still ends at the change its check read (GroupEventSubject).
	HdrExpectLastSubjSeqSubject = "Nats-Expected-Last-Subject-Sequence-Subject"

	// KindEvent is a membership change (the body is the event, as the wire
	// protocol's msg frame carries it).
	KindEvent = "event"
)

// GroupCopyDedupID is the Nats-Msg-Id of member's copy of the group
// message stored at seq: a fan-out that runs again over the same message
// stores each copy once.
func GroupCopyDedupID(gid string, seq uint64, member string) string {
	return "g:" + gid + ":" + strconv.FormatUint(seq, 10) + ":" + member
}

// GroupRecord is a group as of one event: the value of its key in
// GROUP_INFO, and what the groups function answers.
type GroupRecord struct {
	ID        string                 `json:"id"`
	Name      string                 `json:"name"`
	CreatedBy string                 `json:"created_by"`
	Created   int64                  `json:"created"` // ms since epoch
	Members   map[string]GroupMember `json:"members"`
	// Changes counts the events applied; a member's Joined is the count
	// when they joined, so the lowest is the longest-standing member.
	Changes uint64 `json:"changes"`
	// Seq is the GROUPS sequence of the last event applied.
	Seq uint64 `json:"seq"`
	// Made is the GROUPS sequence of the create that made this group (0
	// in a record from before it was kept). A group left empty may be
	// made again under its id: what its log holds before Made is an
	// earlier group's, whose members and ticks are not this one's.
	Made uint64 `json:"made,omitempty"`
	// Region is the group's home region in a regions deployment, where
	// it was created and its log is (contract/regions.go); empty in a
	// single region.
	Region string `json:"region,omitempty"`
	// History is how many of the group's latest messages a member added
	// gets (protocol.MaxGroupHistory at most; 0: none).
	History int `json:"history,omitempty"`
	// Log: the group's members read its log rather than get copies
	// (docs/GROUP-LOG.md), from the first change that set it; it stays
	// set. Members homed in another region still get copies.
	Log bool `json:"log,omitempty"`
}

// GroupMember is one member of a group.
type GroupMember struct {
	Admin  bool   `json:"admin,omitempty"`
	Joined uint64 `json:"joined"`
}

// IsMember reports whether user is in the group.
func (g *GroupRecord) IsMember(user string) bool {
	_, ok := g.Members[user]
	return ok
}

// IsAdmin reports whether user is one of the group's admins.
func (g *GroupRecord) IsAdmin(user string) bool { return g.Members[user].Admin }

// ErrUnknownGroup is a group with no record.
var ErrUnknownGroup = errors.New("contract: unknown group")

// LoadGroup returns group gid's record from GROUP_INFO and its revision.
func LoadGroup(ctx context.Context, kv jetstream.KeyValue, gid string) (GroupRecord, uint64, error) {
	var g GroupRecord
	e, err := kv.Get(ctx, gid)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return g, 0, ErrUnknownGroup
	case err != nil:
		return g, 0, err
	}
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		return GroupRecord{}, e.Revision(), fmt.Errorf("%w: group %s: %w", ErrBadRecord, gid, err)
	}
	return g, e.Revision(), nil
}

// The groups function's request subjects: one endpoint per operation,
// GroupsSubjectPrefix.<op>.
const GroupsSubjectPrefix = "sb.fn.groups"

// The operations. Every one but info is a change, stored as an event.
const (
	GroupCreate  = "create"
	GroupRename  = "rename"
	GroupHistory = "history"
	GroupAdd     = "add"
	GroupRemove  = "remove"
	GroupPromote = "promote"
	GroupDemote  = "demote"
	GroupLeave   = "leave"
	GroupInfo    = "info"
)

// GroupOps lists the operations, in documentation order.
var GroupOps = []string{GroupCreate, GroupRename, GroupHistory, GroupAdd, GroupRemove, GroupPromote, GroupDemote, GroupLeave, GroupInfo}

// GroupSubject is the request subject of op.
func GroupSubject(op string) string { return GroupsSubjectPrefix + "." + op }

// GroupRequest asks the groups function to apply an operation on behalf
// of Actor (on Device): the gateway fills both in from the token. Name is
// for create and rename; History for history; Users for create (the
// members besides the creator), add, remove, promote and demote. Request is the asker's id
// for the change (the frame's id): a change asked again with the same
// Request, by the same device and with the same content, is answered
// with the group as it is and changes nothing once the first is stored,
// so an asker that lost an answer (a timeout, a dropped connection) may
// ask again.
type GroupRequest struct {
	Actor   string   `json:"actor"`
	Device  string   `json:"device"`
	Group   string   `json:"group"`
	Name    string   `json:"name,omitempty"`
	Users   []string `json:"users,omitempty"`
	Request string   `json:"request,omitempty"`
	// History is for history: the setting to make.
	History *int `json:"history,omitempty"`
}

// GroupReply answers a GroupRequest: the group as of the change (or, for
// info and a change that changed nothing, as it is).
type GroupReply struct {
	Group GroupRecord `json:"group"`
}

// GroupList asks for the groups the actor is in: not a change, and not
// about one group (GroupRequest.Group is empty). Answered by the groups
// function of the actor's region from its own buckets, never passed on
// to another region.
const GroupList = "list"

// Each user's groups.
//
// A user's groups homed in one region are one key in that region's
// GROUP_INFO, MembershipsKey(user, region): a map from group id to
// Membership, at most MaxMemberships of them. The groups function's
// fan-out keeps it, in each group's log order, before it tells the
// members of the change (so a device told it was added finds the group
// in its list), with a compare-and-set per user (changes of several
// groups meet there). Each group's name is a key of its own,
// GroupNameKey, written with the changes that set it, so a rename
// rewrites no member's key. GROUP_DIR sources the keys of the other
// regions with their records, so a region lists every group of its
// users from its own buckets: multi_last over MembershipsFilter in both,
// then over the groups' names. The keys have two or three tokens, a
// group's record one: a reader of records alone filters on
// GroupRecordKeys.
//
// Keys are kept since the fan-out kept them; on its first start in a
// region a groups function fills them in for the groups already there
// (MembershipsBuilt says it finished), with Since the record's last
// change.
func MembershipsKey(user, region string) string {
	if region == "" {
		region = "_"
	}
	return "m." + user + "." + region
}

// MembershipsFilter is the KV filter of user's keys, one per region.
func MembershipsFilter(user string) string { return "m." + user + ".*" }

// GroupNameKey is the key of group gid's name in GROUP_INFO (and
// GROUP_DIR).
func GroupNameKey(gid string) string { return "n." + gid }

// GroupRecordKeys filters GROUP_INFO (or GROUP_DIR) to the groups'
// records, without the users' memberships and the groups' names.
const GroupRecordKeys = "*"

// MaxMemberships bounds the groups one user's key lists in one region:
// past it a group the user joins is not listed (the key would grow past
// a message's size, and anyone can add anyone to a group).
const MaxMemberships = 4096

// MembershipsBuilt is GROUP_INFO's key saying the memberships of every
// group stored before they were kept have been filled in, in region
// (one key per region, so a deployment that becomes one of several
// regions fills them in again under its region's name).
func MembershipsBuilt(region string) string {
	if region == "" {
		region = "_"
	}
	return "m=built." + region
}

// Memberships is the value of a MembershipsKey: the user's groups homed
// in one region, by id.
type Memberships struct {
	Groups map[string]Membership `json:"groups"`
}

// Membership is a user's place in a group: Since is the GROUPS sequence
// of the change that made them a member (for one filled in for a group
// from before memberships were kept: a later change they were a member
// at).
type Membership struct {
	Since uint64 `json:"since"`
}

// MaxListedGroups bounds a list's answer: the first of the user's groups
// by id.
const MaxListedGroups = 1000

// GroupListReply answers GroupList: the actor's groups, by id.
type GroupListReply struct {
	Groups []GroupListEntry `json:"groups"`
}

// GroupListEntry is one of a user's groups.
type GroupListEntry struct {
	Group string `json:"group"`
	Name  string `json:"name"`
	Since uint64 `json:"since"`
}

// The groups function's refusals: the Code of its FnError. Each is the
// wire protocol's error code of the same name.
const (
	GroupErrUnknown       = "unknown_group"  // no such group
	GroupErrExists        = "group_exists"   // create: the id is taken
	GroupErrNotMember     = "not_member"     // the actor is not a member
	GroupErrNotAdmin      = "not_admin"      // the change needs an admin
	GroupErrFull          = "group_full"     // past the size limit
	GroupErrAlreadyMember = "already_member" // add: a user is a member already
	GroupErrUnknownMember = "unknown_member" // a user named is not a member
	GroupErrBadID         = "bad_id"         // an id is not a safe id
	GroupErrBadField      = "bad_field"      // any other malformed request
)
