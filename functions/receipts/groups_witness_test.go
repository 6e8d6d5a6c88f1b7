package receipts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// A settle may choose its own member (by) a witness from positions read
// before another request of the same member (its read right after its
// ack, or another device) moved it, while that request saw the aggregate
// before the write, where by was no witness, and left it. The writer's
// look at the witnesses after its write must read by's record, not take
// the position its own request left: else the aggregate stays below two
// members who are past it and the sender is never told read.
func TestGroupTicksSeeTheirOwnMemberMovedByAnotherRequest(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	ctx := context.Background()
	makeGroup(t, e, "g1", "sam", "mia", "xav") // record Seq 1
	quiet(t, e, s, "g1", 1)                    // the create's own settle is over before the aggregate is set by hand
	s1 := sendGroup(t, e, "g1", "sam")
	s2 := sendGroup(t, e, "g1", "sam") // the message whose read must come

	kv, err := e.n.JS.KeyValue(ctx, contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	// Everyone has read s1. The aggregate as a recompute with everyone
	// tied at s1 makes it (witnesses drawn at random among the tied).
	for _, m := range []string{"sam", "mia", "xav"} {
		put(contract.GroupTickKey("g1", m), contract.GroupPosition{Delivered: s1, Read: s1})
	}
	put(contract.GroupAggregateKey("g1"), contract.GroupAggregate{Seq: 1,
		Delivered: contract.GroupTrack{Told: s1, Witness: "mia", Told2: s1, Witness2: "xav"},
		Read:      contract.GroupTrack{Told: s1, Witness: "xav", Told2: s1, Witness2: "sam"}})

	s.HookAggregateWrites("g1", func(n int) {
		switch n {
		case 1:
			// xav reads s2: its request has swapped its position and has
			// not looked at the aggregate yet.
			put(contract.GroupTickKey("g1", "xav"), contract.GroupPosition{Delivered: s2, Read: s2})
		case 2:
			// mia reads s2 (right after her ack): the whole request.
			if err := s.GroupPosition(ctx, contract.GroupPositionRequest{Group: "g1", Member: "mia", Device: "phone",
				Status: protocol.StatusRead, Seq: s2}); err != nil {
				t.Error(err)
			}
		}
	})
	// mia's device acks s2: this request's settle writes the aggregate
	// twice (the second time because xav, a witness, moved meanwhile).
	if err := s.GroupPosition(ctx, contract.GroupPositionRequest{Group: "g1", Member: "mia", Device: "phone",
		Status: protocol.StatusDelivered, Seq: s2}); err != nil {
		t.Fatal(err)
	}
	// xav's request, in flight since its swap, now looks at the aggregate.
	if err := s.SettleMoved(ctx, "g1", "xav", contract.GroupPosition{Delivered: s2, Read: s2}); err != nil {
		t.Fatal(err)
	}

	for _, m := range []string{"mia", "xav"} {
		p, _ := memberRecord(t, e, "g1", m)
		t.Logf("%s: %+v", m, p)
	}
	e2, _ := kv.Get(ctx, contract.GroupAggregateKey("g1"))
	t.Logf("aggregate: %s", e2.Value())
	got := groupTicks(t, e, "sam")
	t.Logf("sam's receipts: %v", got)
	want := fmt.Sprintf("read %d..%d", s2, s2)
	for _, r := range got {
		if r == want {
			return
		}
	}
	// Control: a request that looks at every witness (xav's read asked
	// again, moving nothing) recomputes and tells sam at once: sam was owed.
	position(t, e, "g1", "xav", protocol.StatusRead, s2)
	t.Logf("after a repeat that reads every witness, sam's receipts: %v", groupTicks(t, e, "sam"))
	t.Fatalf("mia and xav have both read s2=%d and every request was answered, but sam was never told read: %v", s2, got)
}
