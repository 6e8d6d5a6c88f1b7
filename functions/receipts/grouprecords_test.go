package receipts_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// The cache of groups' records serves what the watch last saw, never
// lets an older revision replace a newer one, remembers a deleted group
// as gone, and reads an undecodable revision again on demand.
func TestGroupRecordsFollowTheWatch(t *testing.T) {
	n := tk.StartNATS(t)
	ctx := context.Background()
	kv, err := n.JS.KeyValue(ctx, contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	// The test's own watch hands over each change as the function's
	// would see it.
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	next := func() jetstream.KeyValueEntry {
		t.Helper()
		for e := range w.Updates() {
			if e != nil {
				return e
			}
		}
		t.Fatal("watch ended")
		return nil
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
	members := func(c receipts.GroupRecords) int {
		t.Helper()
		g, err := c.Get(ctx, "g1")
		if err != nil {
			t.Fatal(err)
		}
		return len(g.Members)
	}

	c := receipts.NewGroupRecords(kv)
	c.MarkWatching()
	put("alice", "bob")
	first := next()
	if got := members(c); got != 2 {
		t.Fatalf("first read: %d members, want 2", got)
	}
	put("alice", "bob", "carol")
	second := next()
	// Not applied yet: the cache still serves what it read.
	if got := members(c); got != 2 {
		t.Fatalf("before the change was applied: %d members, want the cached 2", got)
	}
	c.Apply(second)
	c.Apply(first) // late and older: ignored
	if got := members(c); got != 3 {
		t.Fatalf("after the change: %d members, want 3", got)
	}

	if _, err := kv.Put(ctx, "g1", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	c.Apply(next())
	if _, err := c.Get(ctx, "g1"); !errors.Is(err, contract.ErrBadRecord) {
		t.Fatalf("undecodable record: %v, want ErrBadRecord", err)
	}
	put("alice")
	c.Apply(next())
	if got := members(c); got != 1 {
		t.Fatalf("after a good record again: %d members, want 1", got)
	}
	if err := kv.Delete(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	c.Apply(next())
	if _, err := c.Get(ctx, "g1"); !errors.Is(err, contract.ErrUnknownGroup) {
		t.Fatalf("deleted group: %v, want ErrUnknownGroup", err)
	}

	// Without the watch nothing is served from the cache.
	fresh := receipts.NewGroupRecords(kv)
	put("alice", "bob")
	if got := members(fresh); got != 2 {
		t.Fatalf("unwatched: %d members, want 2", got)
	}
	put("alice", "bob", "carol", "dave")
	if got := members(fresh); got != 4 {
		t.Fatalf("unwatched, after a change: %d members, want 4 read afresh", got)
	}
}
