package receipts_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// laggingWatchKV hands out watches whose events wait while the test
// holds them: a watch a moment behind the bucket, as any watch is.
type laggingWatchKV struct {
	jetstream.KeyValue
	relayed atomic.Int64

	mu   sync.Mutex
	open chan struct{} // closed while events may pass
}

func newLaggingWatchKV(kv jetstream.KeyValue) *laggingWatchKV {
	l := &laggingWatchKV{KeyValue: kv, open: make(chan struct{})}
	close(l.open)
	return l
}

// hold makes events wait from now on; release lets them go.
func (l *laggingWatchKV) hold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open = make(chan struct{})
}

func (l *laggingWatchKV) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.open:
	default:
		close(l.open)
	}
}

func (l *laggingWatchKV) gate() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

type laggingWatcher struct {
	inner jetstream.KeyWatcher
	out   chan jetstream.KeyValueEntry
}

func (w *laggingWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.out }
func (w *laggingWatcher) Stop() error                             { return w.inner.Stop() }

func (l *laggingWatchKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	inner, err := l.KeyValue.Watch(ctx, keys, opts...)
	if err != nil {
		return nil, err
	}
	w := &laggingWatcher{inner: inner, out: make(chan jetstream.KeyValueEntry, 256)}
	go func() {
		defer close(w.out)
		for e := range inner.Updates() {
			<-l.gate()
			w.out <- e
			l.relayed.Add(1)
		}
	}()
	return w, nil
}

// watched starts a cache over kv as the function makes it, watching, and
// returns it with a look at the groups its news named so far.
func watched(t *testing.T, kv jetstream.KeyValue, nc *nats.Conn) (receipts.GroupRecords, func() []string) {
	t.Helper()
	cache := receipts.NewWatchedGroupRecords(kv, nc)
	var mu sync.Mutex
	var news []string
	cache.OnNews(func(gid string) { mu.Lock(); news = append(news, gid); mu.Unlock() })
	if err := cache.Watch(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Stop)
	return cache, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(news)
	}
}

// A read that brings a changed record before the watch's news of it
// (a member the kept record does not know, a status request on a cold
// cache) does not swallow the news: the group is still settled when it
// comes.
func TestGroupRecordsTellNewsOfAChangeAReadBroughtFirst(t *testing.T) {
	ctx := context.Background()
	nc, kv, admin := groupInfoAs(t)
	putG1(t, admin, "alice", "bob", "carol")
	relay := newLaggingWatchKV(kv)
	relay.hold()
	t.Cleanup(relay.release)
	cache, newsOf := watched(t, relay, nc)
	if g, err := cache.Get(ctx, "g1"); err != nil || len(g.Members) != 3 {
		t.Fatalf("%v %v", g, err)
	}
	putG1(t, admin, "alice", "bob") // carol removed; the watch's word of it is on its way
	if g, err := cache.Fresh(ctx, "g1"); err != nil || len(g.Members) != 2 {
		t.Fatalf("%v %v", g, err)
	}
	relay.release()
	tk.WaitFor(t, 10*time.Second, func() error {
		if news := newsOf(); relay.relayed.Load() < 1 || len(news) == 0 {
			return tk.Errorf("the watch relayed %d changes; news of %v: carol's removal is never settled", relay.relayed.Load(), news)
		}
		return nil
	})
}

// The same through an instance: the record as a read brought it just
// before the watch's news (HoldRecord at the revision the change is
// stored at); carol's removal, in a group gone quiet, still tells alice.
func TestGroupTicksSettleARemovalAReadBroughtFirst(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	ctx := context.Background()
	makeGroup(t, e, "g1", "alice", "bob", "carol")
	quiet(t, e, s, "g1", 1)
	a1 := sendGroup(t, e, "g1", "alice")
	position(t, e, "g1", "bob", protocol.StatusDelivered, a1) // carol holds alice's tick
	st, err := e.n.JS.Stream(ctx, "KV_"+contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := info.State.LastSeq + 1 // the revision the removal is stored at
	rec := &contract.GroupRecord{ID: "g1", Name: "g1", CreatedBy: "alice", Seq: a1 + 1, Members: map[string]contract.GroupMember{
		"alice": {Admin: true, Joined: 1}, "bob": {Joined: 1}}}
	s.HoldRecord(rec, next) // what load() keeps after a leader read of the new record
	changeGroup(t, e, "g1", a1+1, "alice", "bob")
	want := fmt.Sprint([]string{fmt.Sprintf("delivered %d..%d", a1, a1)})
	tk.WaitFor(t, 5*time.Second, func() error {
		if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != want {
			return tk.Errorf("alice has %v, want %v: carol's removal never settled", got, want)
		}
		return nil
	})
}

// A conflicting write in a gathered request costs only its own member a
// retry (a Swap, which reads the key): the writes after it that
// succeeded are taken as written. The deleted key of x makes x's write
// conflict every time; no other member's key may be read.
func TestGatheredGroupPositionsAfterAConflict(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	ctx := context.Background()
	kv, err := e.n.JS.KeyValue(ctx, contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	members := []string{"alice", "x", "y1", "y2", "y3", "y4", "y5", "y6", "y7"}
	groups := []string{"g1", "g2", "g3", "g4"}
	for _, g := range groups {
		makeGroup(t, e, g, members...)
		quiet(t, e, s, g, 1)
		if _, err := kv.Put(ctx, contract.GroupTickKey(g, "x"), []byte(`{"d":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := kv.Delete(ctx, contract.GroupTickKey(g, "x")); err != nil {
			t.Fatal(err)
		}
	}
	gets := s.CountTickGets()
	for _, g := range groups {
		a := sendGroup(t, e, g, "alice")
		var ps []contract.GroupPositionRequest
		for _, m := range members[1:] {
			ps = append(ps, contract.GroupPositionRequest{Group: g, Member: m, Device: "phone", Status: protocol.StatusDelivered, Seq: a})
		}
		var reply contract.GroupPositionsReply
		if err := e.call(t, contract.GroupPositionsSubject, contract.GroupPositionsRequest{Positions: ps}, &reply); err != nil || len(reply.Failed) != 0 {
			t.Fatalf("%v %v", reply, err)
		}
	}
	var extra []string
	for k, n := range gets() {
		if len(k) < 2 || k[len(k)-2:] != ".x" {
			extra = append(extra, fmt.Sprintf("%s×%d", k, n))
		}
	}
	if len(extra) > 0 {
		t.Fatalf("writes that succeeded were swapped again after a conflict: %v", extra)
	}
}

// A record kept while the watch's news of a change is on its way misses
// a member the change added: dave was added before alice sent m, and
// the other members having m must not make alice told (dave has not got
// it; a tick never goes back). Before telling, a settle reads the record
// through the leader.
func TestGroupTicksNeverToldFromARecordBehind(t *testing.T) {
	e := newEnv(t)
	var watch *laggingWatchKV
	s, _ := e.instanceWith(t, receipts.WatchThrough(receipts.DefaultConfig(), func(kv jetstream.KeyValue) jetstream.KeyValue {
		watch = newLaggingWatchKV(kv)
		return watch
	}))
	t.Cleanup(watch.release)
	makeGroup(t, e, "g1", "alice", "bob", "carol")
	quiet(t, e, s, "g1", 1)
	sendGroup(t, e, "g1", "bob") // the log past the create's place
	watch.hold()
	add := sendGroup(t, e, "g1", "carol") // stands for the add's system message in GROUPS
	changeGroup(t, e, "g1", add, "alice", "bob", "carol", "dave")
	m := sendGroup(t, e, "g1", "alice") // after dave's add: dave gets a copy
	position(t, e, "g1", "bob", protocol.StatusDelivered, m)
	position(t, e, "g1", "carol", protocol.StatusDelivered, m)
	if got := groupTicks(t, e, "alice"); len(got) != 0 {
		t.Fatalf("alice told %v for m=%d while dave (added before m) has nothing", got, m)
	}
	watch.release()
	position(t, e, "g1", "dave", protocol.StatusDelivered, m)
	if got, want := groupTicks(t, e, "alice"), fmt.Sprintf("[delivered 1..%d]", m); fmt.Sprint(got) != want {
		t.Fatalf("alice has %v once dave has m, want %s", got, want)
	}
}

// One slow group does not hold back a gathered request: the function
// answers by the deadline the request carries (its gateway waits
// FunctionTimeout, 3 s by default), naming the slow group as failed,
// while g2's position, taken at once, is answered as taken.
func TestGatheredGroupPositionsAnswerInTime(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	ctx := context.Background()
	a1, a2 := twoGroups(t, e, s)
	stuck := make(chan struct{}) // g1's settle waits on it until the test ends
	t.Cleanup(func() { close(stuck) })
	s.HookAggregateWrites("g1", func(int) { <-stuck })
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second) // gateway.DefaultConfig's FunctionTimeout
	defer cancel()
	var reply contract.GroupPositionsReply
	err := contract.Call(cctx, e.gw, contract.GroupPositionsSubject, contract.GroupPositionsRequest{Positions: []contract.GroupPositionRequest{
		{Group: "g1", Member: "bob", Device: "phone", Status: protocol.StatusDelivered, Seq: a1},
		{Group: "g2", Member: "bob", Device: "phone", Status: protocol.StatusDelivered, Seq: a2},
	}, WithinMS: 2000}, &reply)
	if err != nil {
		t.Fatalf("%v: g2's position, taken at once, would be queued with g1's by the gateway", err)
	}
	if fmt.Sprint(reply.Failed) != "[g1]" {
		t.Fatalf("failed %v, want the slow g1 alone", reply.Failed)
	}
	if p, _ := memberRecord(t, e, "g2", "bob"); p.Delivered != a2 {
		t.Fatalf("bob's position in g2 %+v", p)
	}
}

// endingWatchKV hands out watches the test can end, as the server ends
// one whose ordered consumer it refuses to re-create, and holds every
// watch after the first until the test lets it start.
type endingWatchKV struct {
	jetstream.KeyValue
	calls   atomic.Int64
	asked   chan struct{} // told when a watch after the first is asked for
	proceed chan struct{} // closed to let it start
	first   chan struct{} // closed to end the first watch
}

func (k *endingWatchKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if k.calls.Add(1) > 1 {
		k.asked <- struct{}{}
		<-k.proceed
		return k.KeyValue.Watch(ctx, keys, opts...)
	}
	inner, err := k.KeyValue.Watch(ctx, keys, opts...)
	if err != nil {
		return nil, err
	}
	w := &laggingWatcher{inner: inner, out: make(chan jetstream.KeyValueEntry, 256)}
	go func() {
		defer close(w.out)
		for {
			select {
			case e, ok := <-inner.Updates():
				if !ok {
					return
				}
				w.out <- e
			case <-k.first:
				_ = inner.Stop()
				return
			}
		}
	}()
	return w, nil
}

// A watch the server ends is started again from where it was: a change
// made while it was down (carol removed) still comes as news, so her
// removal is settled even in a group where nothing else moves.
func TestGroupRecordsWatchStartsAgainFromWhereItEnded(t *testing.T) {
	nc, kv, admin := groupInfoAs(t)
	putG1(t, admin, "alice", "bob", "carol")
	k := &endingWatchKV{KeyValue: kv, asked: make(chan struct{}, 4), proceed: make(chan struct{}), first: make(chan struct{})}
	cache, newsOf := watched(t, k, nc)
	if g := getG1(t, cache); len(g.Members) != 3 {
		t.Fatalf("%+v", g)
	}
	close(k.first) // the server ends the watch
	select {
	case <-k.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch was not started again")
	}
	putG1(t, admin, "alice", "bob") // while no watch runs
	close(k.proceed)
	tk.WaitFor(t, 10*time.Second, func() error {
		if news := newsOf(); len(news) == 0 || cache.Restarts() != 1 {
			return tk.Errorf("news of %v after %d restarts: carol's removal made while the watch was down is never settled", news, cache.Restarts())
		}
		return nil
	})
	if g := getG1(t, cache); len(g.Members) != 2 {
		t.Fatalf("after the restart: %+v", g)
	}
}

// refusingStartKV refuses the first status request, as JetStream's API
// does when its queue is full, and counts the watches started.
type refusingStartKV struct {
	jetstream.KeyValue
	statuses, watches atomic.Int64
}

func (k *refusingStartKV) Status(ctx context.Context) (jetstream.KeyValueStatus, error) {
	if k.statuses.Add(1) == 1 {
		return nil, fmt.Errorf("nats: API error: code=429: refused by the test")
	}
	return k.KeyValue.Status(ctx)
}

func (k *refusingStartKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := k.KeyValue.Watch(ctx, keys, opts...)
	if err == nil {
		k.watches.Add(1)
	}
	return w, err
}

// A watch the server refuses to start returns at once (the function
// starts without it) and starts in the background; its news then comes.
func TestGroupRecordsWatchStartsLaterWhenRefusedAtFirst(t *testing.T) {
	nc, kv, admin := groupInfoAs(t)
	putG1(t, admin, "alice", "bob", "carol")
	k := &refusingStartKV{KeyValue: kv}
	cache := receipts.NewWatchedGroupRecords(k, nc)
	var news atomic.Int64
	cache.OnNews(func(string) { news.Add(1) })
	t.Cleanup(cache.Stop)
	done := make(chan error, 1)
	go func() { done <- cache.Watch(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a refused start reported no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a refused start held its caller")
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		if k.watches.Load() != 1 {
			return tk.Errorf("%d watches started after the refusal", k.watches.Load())
		}
		return nil
	})
	putG1(t, admin, "alice", "bob")
	tk.WaitFor(t, 10*time.Second, func() error {
		if news.Load() == 0 {
			return tk.Errorf("no news of carol's removal from the watch started later")
		}
		return nil
	})
}
