package gateway

import (
	"errors"
	"fmt"
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
	publish := func(subj string) {
		t.Helper()
		if err := pub.Publish(subj, nil); err != nil {
			t.Fatal(err)
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// fill holds the router with one of carol's copies in its hands and
	// one waiting, then has one of bob's dropped.
	fill := func(round int) {
		t.Helper()
		r.mu.Lock()
		publish("sb.live.carol")
		waitFor("the router holds carol's copy", func() bool { return delivered(carolSub) == int64(2*round+1) && len(r.ch) == 0 })
		publish("sb.live.carol")
		waitFor("carol's second copy waits", func() bool { return delivered(carolSub) == int64(2*round+2) && len(r.ch) == 1 })
		publish("sb.live.bob")
		waitFor(fmt.Sprintf("bob's copy %d is dropped", round+1), func() bool { return dropped(bobSub) == round+1 })
		r.mu.Unlock()
	}
	expectWake := func(why string) {
		t.Helper()
		select {
		case ss := <-woken:
			if len(ss) != 1 || ss[0] != bob {
				t.Fatalf("%s: woke %v, want bob's session", why, ss)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: bob's session was not woken", why)
		}
	}

	fill(0) // NATS reports this one
	expectWake("the first drop")
	fill(1) // not this one: no copy of bob's got through in between
	expectWake("a drop of the same streak")

	// A copy of bob's gets through: NATS reports the next drop itself, and
	// the router stops watching.
	publish("sb.live.bob")
	waitFor("bob's copy got through", func() bool { return delivered(bobSub) == 1 })
	waitFor("the router no longer watches bob", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.slow) == 0
	})
	if len(woken) != 0 {
		t.Fatalf("woken again with nothing dropped: %v", <-woken)
	}
}
