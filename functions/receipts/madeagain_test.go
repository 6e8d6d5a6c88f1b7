package receipts_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	"github.com/switchboard-im/switchboard/protocol"
)

// putRecord writes group g's record as the groups function would.
func putRecord(t testing.TB, e *env, g contract.GroupRecord) {
	t.Helper()
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(g)
	if _, err := kv.Put(context.Background(), g.ID, b); err != nil {
		t.Fatal(err)
	}
}

// madeAgain has alice send a message in group g1 with bob, everyone
// leave, and carol make g1 again with dave, who reads carol's first
// message; it returns alice's message's seq.
func madeAgain(t *testing.T, e *env, s *receipts.Service) uint64 {
	t.Helper()
	makeGroup(t, e, "g1", "alice", "bob")
	a1 := sendGroup(t, e, "g1", "alice")
	putRecord(t, e, contract.GroupRecord{ID: "g1", Name: "g1", CreatedBy: "alice", Created: 1, Members: map[string]contract.GroupMember{}, Seq: a1 + 1})
	quiet(t, e, s, "g1", a1+1)
	putRecord(t, e, contract.GroupRecord{ID: "g1", Name: "secret", CreatedBy: "carol", Created: time.Now().UnixMilli(),
		Members: map[string]contract.GroupMember{"carol": {Admin: true, Joined: 1}, "dave": {Joined: 1}}, Seq: a1 + 2, Made: a1 + 2})
	quiet(t, e, s, "g1", a1+2)
	c1 := sendGroup(t, e, "g1", "carol")
	position(t, e, "g1", "dave", protocol.StatusRead, c1)
	position(t, e, "g1", "carol", protocol.StatusRead, c1)
	return a1
}

// Message info about a message of a group that was left empty and made
// again under its id is refused: the new group's members are not the
// message's, nor the sender's to see.
func TestGroupStatusOfAGroupMadeAgainIsRefused(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	a1 := madeAgain(t, e, s)
	var r contract.StatusReply
	err := e.call(t, contract.StatusSubject, contract.StatusRequest{Sender: "alice", Group: "g1", Seq: a1}, &r)
	var fe *contract.FnError
	if !errors.As(err, &fe) || fe.Code != contract.ErrCodeUnknownSeq {
		t.Fatalf("alice asked about her message of the old g1: %+v (err %v); want unknown_seq", r, err)
	}
}

// The members of a group made again under an old id do not tick the old
// group's messages: alice's was never had by anyone of the new group.
func TestGroupMadeAgainTicksNothingOfTheOldOne(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	madeAgain(t, e, s)
	// Each position is settled before it is answered: anything for alice
	// would be stored by now.
	if got := groupTicks(t, e, "alice"); len(got) != 0 {
		t.Fatalf("alice told of her message in the old g1 by the new one's members: %v", got)
	}
}
