package receipts_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// groupInfoAs starts a server with the streams and returns a connection
// in the receipts function's role, GROUP_INFO as it sees it, and
// GROUP_INFO as an admin writes it.
func groupInfoAs(t *testing.T) (*nats.Conn, jetstream.KeyValue, jetstream.KeyValue) {
	t.Helper()
	n := tk.StartStreams(t, t.TempDir())
	nc := n.Connect(t, natsauth.Receipts)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := n.JS.KeyValue(context.Background(), contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	return nc, kv, admin
}

// getG1 reads group g1's record through cache.
func getG1(t *testing.T, cache receipts.GroupRecords) *contract.GroupRecord {
	t.Helper()
	g, err := cache.Get(context.Background(), "g1")
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// putG1 stores group g1's record with members.
func putG1(t *testing.T, kv jetstream.KeyValue, members ...string) {
	t.Helper()
	g := contract.GroupRecord{ID: "g1", Members: map[string]contract.GroupMember{}}
	for _, m := range members {
		g.Members[m] = contract.GroupMember{}
	}
	b, _ := json.Marshal(g)
	if _, err := kv.Put(context.Background(), "g1", b); err != nil {
		t.Fatal(err)
	}
}

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
	put := func(members ...string) { t.Helper(); putG1(t, kv, members...) }
	cache := receipts.NewGroupRecords(kv)
	get := func() *contract.GroupRecord { t.Helper(); return getG1(t, cache) }

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

// laggingKV answers the first read with an older entry, as a replica a
// step behind the leader may.
type laggingKV struct {
	jetstream.KeyValue
	mu    sync.Mutex
	stale jetstream.KeyValueEntry
}

func (l *laggingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	l.mu.Lock()
	stale := l.stale
	l.stale = nil
	l.mu.Unlock()
	if stale != nil {
		return stale, nil
	}
	return l.KeyValue.Get(ctx, key)
}

// Watched (with the receipts function's own rights), a record is read
// once per revision: the positions between two changes read nothing. A
// change is read once the watch brings it, and a read older than a
// revision the watch named is not kept. Records are read through the
// leader: a replica behind a change stored just before the watch began
// (which the watch never names) would otherwise be served for good.
func TestWatchedGroupRecordsAreReadOncePerRevision(t *testing.T) {
	ctx := context.Background()
	nc, kv, admin := groupInfoAs(t)
	put := func(members ...string) { t.Helper(); putG1(t, admin, members...) }
	put("alice", "bob")
	old, err := kv.Get(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	put("alice", "bob", "carol") // stored before the watch begins
	cache := receipts.NewWatchedGroupRecords(&laggingKV{KeyValue: kv, stale: old}, nc)
	if err := cache.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Stop)
	get := func() *contract.GroupRecord { t.Helper(); return getG1(t, cache) }

	first := get()
	if len(first.Members) != 3 {
		t.Fatalf("%d members read, want the 3 stored before the watch", len(first.Members))
	}
	for range 10 {
		if get() != first {
			t.Fatal("an unchanged record was not served from the cache")
		}
	}
	if r := cache.Reads(); r != 1 {
		t.Fatalf("%d reads for 11 positions without a change, want 1", r)
	}
	put("alice")
	tk.WaitFor(t, 10*time.Second, func() error {
		if g := get(); len(g.Members) != 1 {
			return tk.Errorf("%d members, want the change's 1", len(g.Members))
		}
		return nil
	})
	reads := cache.Reads()
	get()
	if r := cache.Reads(); r != reads {
		t.Fatalf("%d reads after the change was kept, want none", r-reads)
	}
	// A revision newer than any read: each position reads until one
	// brings it.
	cache.Changed("g1", 1<<40)
	get()
	get()
	if r := cache.Reads(); r != reads+2 {
		t.Fatalf("%d reads while a newer revision is due, want 2", r-reads)
	}
}
