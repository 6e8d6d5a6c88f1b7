package gateway

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// routerTest is a router on a real nats-server with two live routes, bob's
// and carol's (their sessions' feeds only queue what comes), and a second
// connection to publish their copies.
type routerTest struct {
	t                *testing.T
	r                *router
	pub              *nats.Conn
	bob, carol       *session
	bobSub, carolSub *nats.Subscription
	woken            chan []*session
}

// startServer starts a nats-server with opts on a loopback port of its
// own (JetStream's store, if on, in a temp dir) and stops it at the end
// of the test.
func startServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	if opts.JetStream {
		opts.StoreDir = t.TempDir()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns
}

// newRouterTest makes a router whose buffer holds buffer copies. Its
// goroutine is not started: the test steps it (step), so whether the
// buffer is full when a copy comes never depends on the scheduler.
func newRouterTest(t *testing.T, buffer int) *routerTest {
	ns := startServer(t, &server.Options{})
	conns := make([]*nats.Conn, 2)
	for i := range conns {
		var err error
		if conns[i], err = nats.Connect(ns.ClientURL()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conns[i].Close)
	}
	nc := conns[0]
	rt := &routerTest{t: t, pub: conns[1], bob: &session{}, carol: &session{}, woken: make(chan []*session, 64)}
	rt.r = &router{nc: nc, ch: make(chan *nats.Msg, buffer), stop: make(chan struct{}), done: make(chan struct{}),
		subjects: map[string]*route{}, bySub: map[*nats.Subscription]*route{}}
	r := rt.r
	r.setWake(func(ss []*session) { rt.woken <- ss })
	nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil && errors.Is(err, nats.ErrSlowConsumer) {
			r.dropped(sub)
		}
	})
	for subj, s := range map[string]*session{"sb.live.bob": rt.bob, "sb.live.carol": rt.carol} {
		if err := r.add(routeLive, subj, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	rt.bobSub, rt.carolSub = r.subjects["sb.live.bob"].sub, r.subjects["sb.live.carol"].sub
	return rt
}

// step is one turn of the router's loop, for a router the test drives.
func (rt *routerTest) step() {
	rt.r.take(<-rt.r.ch)
}

func (rt *routerTest) waitFor(what string, ok func() bool) {
	rt.t.Helper()
	waitWithin(rt.t, 10*time.Second, func() error {
		if !ok() {
			return errors.New("timed out waiting until " + what)
		}
		return nil
	})
}

func delivered(sub *nats.Subscription) int64 { n, _ := sub.Delivered(); return n }
func dropped(sub *nats.Subscription) int     { n, _ := sub.Dropped(); return n }

// publish sends a copy on sub's subject and waits until it went into the
// buffer or was dropped.
func (rt *routerTest) publish(sub *nats.Subscription) {
	rt.t.Helper()
	arrived := func() int64 { return delivered(sub) + int64(dropped(sub)) }
	before := arrived()
	if err := rt.pub.Publish(sub.Subject, nil); err != nil {
		rt.t.Fatal(err)
	}
	rt.waitFor("the copy on "+sub.Subject+" arrived", func() bool { return arrived() > before })
}

// bobWoken waits up to within for a wake of bob's session (carol's
// dropped copies wake hers, which the tests do not look at).
func (rt *routerTest) bobWoken(within time.Duration) bool {
	deadline := time.After(within)
	for {
		select {
		case ss := <-rt.woken:
			if slices.Contains(ss, rt.bob) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// NATS reports a subscription's dropped messages once per streak, until
// one of its messages gets into the buffer. A live copy dropped after the
// first report's wake, in the same streak, must wake its session again
// once the router has caught up: nothing else would (the next copy that
// would name it as its predecessor may never come), and it would wait for
// the sweep.
func TestRouterWakesAgainForALaterDropOfTheSameStreak(t *testing.T) {
	rt := newRouterTest(t, 1)
	r := rt.r
	// fill sends carol's copies until the buffer is full (one is
	// dropped), then one of bob's, which is dropped too.
	fill := func() {
		t.Helper()
		for before := dropped(rt.carolSub); dropped(rt.carolSub) == before; {
			rt.publish(rt.carolSub)
		}
		before := dropped(rt.bobSub)
		rt.publish(rt.bobSub)
		if dropped(rt.bobSub) != before+1 {
			t.Fatal("bob's copy got through a full buffer")
		}
	}
	// catchUp steps the router until its buffer is empty: the last step
	// finds it caught up.
	catchUp := func() {
		for len(r.ch) > 0 {
			rt.step()
		}
	}

	fill() // NATS reports this one
	if !rt.bobWoken(10 * time.Second) {
		t.Fatal("the first drop did not wake bob")
	}
	catchUp()
	fill() // not this one: no copy of bob's got in between
	catchUp()
	if !rt.bobWoken(10 * time.Second) {
		t.Fatal("a drop of the same streak did not wake bob")
	}

	// A copy of bob's gets in: NATS reports the next drop itself, and the
	// router stops watching.
	rt.publish(rt.bobSub)
	if delivered(rt.bobSub) == 0 {
		t.Fatal("bob's copy did not get into an empty buffer")
	}
	catchUp()
	r.mu.Lock()
	_, watched := r.slow[rt.bobSub]
	r.mu.Unlock()
	if watched {
		t.Fatal("the router still watches bob after a copy of his got in")
	}
	for len(rt.woken) > 0 {
		if ss := <-rt.woken; slices.Contains(ss, rt.bob) {
			t.Fatal("bob's session woken again with nothing of his dropped")
		}
	}
}

// A copy of bob's that went into the buffer before the streak's first
// drop comes out after it: that does not end the streak (NATS ends it when
// a copy goes in), so a later drop of the streak, which NATS does not
// report, must still wake bob's session.
func TestRouterKeepsWatchingPastACopyFromBeforeTheDrops(t *testing.T) {
	rt := newRouterTest(t, 2)
	rt.publish(rt.bobSub)   // b0 goes in
	rt.publish(rt.carolSub) // c0: the buffer is full
	rt.publish(rt.bobSub)   // b1 dropped: NATS reports it, bob's streak begins
	if dropped(rt.bobSub) != 1 {
		t.Fatal("b1 not dropped")
	}
	if !rt.bobWoken(5 * time.Second) {
		t.Fatal("the first drop did not wake bob")
	}
	rt.step()               // b0 comes out: it went in before the drop
	rt.publish(rt.carolSub) // c1: full again
	rt.publish(rt.bobSub)   // b2 dropped: same streak (no copy of bob's went in since b1), not reported
	if dropped(rt.bobSub) != 2 {
		t.Fatal("b2 not dropped")
	}
	rt.step()
	rt.step() // caught up
	if !rt.bobWoken(2 * time.Second) {
		t.Fatal("b2, dropped later in bob's streak, woke nobody: it waits for the sweep")
	}
}
