package gateway

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS reports a subscription's dropped messages once per streak, until
// one of its messages gets through. A live copy dropped after the first
// report's wake, in the same streak, must wake its session again once the
// router has caught up: nothing else would (the next copy that would name
// it as its predecessor may never come), and it would wait for the sweep.
func TestRouterWakesAgainForALaterDropOfTheSameStreak(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	defer func(n int) { routerBuffer = n }(routerBuffer)
	routerBuffer = 1
	r := newRouter(nc)
	defer r.close()
	woken := make(chan []*session, 8)
	r.setWake(func(ss []*session) { woken <- ss })
	nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil && errors.Is(err, nats.ErrSlowConsumer) {
			r.dropped(sub)
		}
	})
	bob, carol := &session{}, &session{} // their feeds only queue what comes
	for subj, s := range map[string]*session{"sb.live.bob": bob, "sb.live.carol": carol} {
		if err := r.add(routeLive, subj, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	bobSub, carolSub := r.subjects["sb.live.bob"].sub, r.subjects["sb.live.carol"].sub

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	delivered := func(sub *nats.Subscription) int64 { n, _ := sub.Delivered(); return n }
	dropped := func(sub *nats.Subscription) int { n, _ := sub.Dropped(); return n }
	arrived := func(sub *nats.Subscription) int64 { return delivered(sub) + int64(dropped(sub)) }
	publish := func(sub *nats.Subscription) {
		t.Helper()
		before := arrived(sub)
		if err := pub.Publish(sub.Subject, nil); err != nil {
			t.Fatal(err)
		}
		waitFor("the copy on "+sub.Subject+" arrived", func() bool { return arrived(sub) > before })
	}
	// fill holds the router and sends carol's copies until its buffer is
	// full (one is dropped), then one of bob's, which is dropped too.
	fill := func() {
		t.Helper()
		r.mu.Lock()
		defer r.mu.Unlock() // a failure too: t.Fatal runs it
		for before := dropped(carolSub); dropped(carolSub) == before; {
			publish(carolSub)
		}
		before := dropped(bobSub)
		publish(bobSub)
		if dropped(bobSub) != before+1 {
			t.Fatal("bob's copy got through a full buffer")
		}
	}
	// expectWake waits for a wake of bob's session (carol's dropped copies
	// wake hers, which this test does not look at).
	expectWake := func(why string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ss := <-woken:
				if slices.Contains(ss, bob) {
					return
				}
			case <-deadline:
				t.Fatalf("%s: bob's session was not woken", why)
			}
		}
	}

	fill() // NATS reports this one
	expectWake("the first drop")
	fill() // not this one: no copy of bob's got through in between
	expectWake("a drop of the same streak")

	// A copy of bob's gets through: NATS reports the next drop itself, and
	// the router stops watching.
	publish(bobSub)
	waitFor("the router no longer watches bob", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		_, watched := r.slow[bobSub]
		return !watched && delivered(bobSub) > 0
	})
	for len(woken) > 0 {
		if ss := <-woken; slices.Contains(ss, bob) {
			t.Fatal("bob's session woken again with nothing of his dropped")
		}
	}
}
