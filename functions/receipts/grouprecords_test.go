package receipts_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// The cache of groups' records decodes a revision once and serves it
// until the record changes; every change shows at the next read, a
// record that cannot be decoded is reported, and so is one deleted.
func TestGroupRecordsDecodeEachRevisionOnce(t *testing.T) {
	n := tk.StartNATS(t)
	ctx := context.Background()
	kv, err := n.JS.KeyValue(ctx, contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	put := func(members ...string) {
		t.Helper()
		g := contract.GroupRecord{ID: "g1", Members: map[string]contract.GroupMember{}}
		for _, m := range members {
			g.Members[m] = contract.GroupMember{}
		}
		b, _ := json.Marshal(g)
		if _, err := kv.Put(ctx, "g1", b); err != nil {
			t.Fatal(err)
		}
	}
	cache := receipts.NewGroupRecords(kv)
	get := func() *contract.GroupRecord {
		t.Helper()
		g, err := cache.Get(ctx, "g1")
		if err != nil {
			t.Fatal(err)
		}
		return g
	}

	put("alice", "bob")
	first := get()
	if len(first.Members) != 2 || get() != first {
		t.Fatal("the same revision was not served from the cache")
	}
	put("alice", "bob", "carol")
	if g := get(); len(g.Members) != 3 || g == first {
		t.Fatalf("after a change: %d members, want 3 decoded afresh", len(g.Members))
	}
	if _, err := kv.Put(ctx, "g1", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Get(ctx, "g1"); !errors.Is(err, contract.ErrBadRecord) {
		t.Fatalf("undecodable record: %v, want ErrBadRecord", err)
	}
	put("alice")
	if g := get(); len(g.Members) != 1 {
		t.Fatalf("a good record again: %d members, want 1", len(g.Members))
	}
	if err := kv.Delete(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Get(ctx, "g1"); !errors.Is(err, contract.ErrUnknownGroup) {
		t.Fatalf("deleted group: %v, want ErrUnknownGroup", err)
	}
}
