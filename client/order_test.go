package client

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

// checkSeqs checks that each send was stored with the seq the script gave.
func checkSeqs(t *testing.T, c *Client, outs []*outgoing, first uint64) {
	t.Helper()
	for i, o := range outs {
		s, err := outcome(t, c, o)
		if err != nil || s.Seq != first+uint64(i) || s.ID != o.id {
			t.Fatalf("send %s: %+v, %v; want seq %d", o.id, s, err, first+uint64(i))
		}
	}
}

// A store_failed in the middle of a pipelined burst: the failed send is
// resent alone, after a backoff, and nothing newer is written until it is
// stored; then the rest go out in their original order.
func TestStoreFailedHoldsNewerSendsUntilTheResendIsStored(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}, w)
	sc := s.accept(t)

	// Pipelined: all five are written before any is answered.
	var outs []*outgoing
	for _, id := range []string{"m1", "m2", "m3", "m4", "m5"} {
		outs = append(outs, queue(t, c, id))
	}
	sc.expectSends(t, "m1", "m2", "m3", "m4", "m5")

	// m1 is stored; the store fails for m2 and for the three behind it,
	// which were in flight during the same outage.
	sc.sent("m1", 1)
	sc.fail(protocol.ErrStoreFailed, "m2", 0)
	sc.fail(protocol.ErrStoreFailed, "m3", 0)
	sc.fail(protocol.ErrStoreFailed, "m4", 0)
	sc.fail(protocol.ErrStoreFailed, "m5", 0)
	sc.msg("after-the-errors", "carol", 100)
	if m := recvMsg(t, c); m.ID != "after-the-errors" { // the client has read every error
		t.Fatalf("got %s", m.ID)
	}

	// The wait before m2's resend: a first retry waits up to MinBackoff.
	r := w.next(t)
	if r.d < time.Millisecond || r.d > 100*time.Millisecond {
		t.Fatalf("first resend waits %s, want 1ms..100ms", r.d)
	}
	// Sends made while m2 is held queue behind it: none is written.
	outs = append(outs, queue(t, c, "m6"), queue(t, c, "m7"))
	sc.fence(t, c)

	// The backoff passes: m2 goes out alone.
	r.end()
	sc.expectSends(t, "m2")
	sc.fence(t, c) // nothing newer while m2's resend is unanswered

	// m2 stored: the others follow in their original order, pipelined.
	sc.sent("m2", 2)
	sc.expectSends(t, "m3", "m4", "m5", "m6", "m7")
	for i, id := range []string{"m3", "m4", "m5", "m6", "m7"} {
		sc.sent(id, uint64(3+i))
	}
	checkSeqs(t, c, outs, 1)
	if len(w.reqs) != 0 {
		t.Fatalf("%d more waits asked for", len(w.reqs))
	}
}

// A resend that fails again waits longer (the bound doubles) and still
// holds the others; retry_ms, when the server gives it, is the wait.
func TestRepeatedFailuresBackOffAndHonourRetryMS(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{MinBackoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}, w)
	sc := s.accept(t)

	m1, m2 := queue(t, c, "m1"), queue(t, c, "m2")
	sc.expectSends(t, "m1", "m2")
	sc.fail(protocol.ErrStoreFailed, "m1", 0)
	sc.sent("m2", 1) // in flight behind m1 and stored: the window no client can close
	if _, err := outcome(t, c, m2); err != nil {
		t.Fatal(err)
	}
	m3 := queue(t, c, "m3")
	for i, bound := range []time.Duration{100, 200, 300, 300} {
		r := w.next(t)
		if r.d < time.Millisecond || r.d > bound*time.Millisecond {
			t.Fatalf("resend %d waits %s, want 1ms..%dms", i+1, r.d, bound)
		}
		r.end()
		sc.expectSends(t, "m1")
		sc.fail(protocol.ErrStoreFailed, "m1", 0)
	}
	r := w.next(t)
	r.end()
	sc.expectSends(t, "m1")
	sc.fail(protocol.ErrRateLimited, "m1", 250)
	if r := w.next(t); r.d != 250*time.Millisecond {
		t.Fatalf("rate_limited with retry_ms 250: waits %s", r.d)
	} else {
		sc.fence(t, c) // m3 still held
		r.end()
	}
	sc.expectSends(t, "m1")
	sc.sent("m1", 2)
	sc.expectSends(t, "m3")
	sc.sent("m3", 3)
	if s, err := outcome(t, c, m1); err != nil || s.Seq != 2 {
		t.Fatalf("m1: %+v %v", s, err)
	}
	if s, err := outcome(t, c, m3); err != nil || s.Seq != 3 {
		t.Fatalf("m3: %+v %v", s, err)
	}
}

// A held send whose caller gives up (its context ends) is withdrawn: it is
// not written again, and the sends behind it go ahead.
func TestWithdrawnHolderLetsTheOthersGo(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Send(ctx, "bob", "m1", []byte(`"m1"`))
		errc <- err
	}()
	sc.expectSends(t, "m1")
	m2 := queue(t, c, "m2")
	sc.expectSends(t, "m2")
	sc.fail(protocol.ErrStoreFailed, "m1", 0)
	w.next(t) // held; this wait is never ended
	m3 := queue(t, c, "m3")
	sc.fence(t, c)

	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send m1 = %v, want context.Canceled", err)
		}
	case <-time.After(stuck):
		t.Fatal("Send m1 did not return when its context ended")
	}
	// m2 is still on the wire; m3 was waiting and now goes.
	sc.expectSends(t, "m3")
	sc.sent("m2", 1)
	sc.sent("m3", 2)
	checkSeqs(t, c, []*outgoing{m2, m3}, 1)
	sc.fence(t, c) // m1 was not written again
}

// Two Sends of the same id wait for one send; one giving up does not
// withdraw it while the other still waits.
func TestSendsOfOneIDShareIt(t *testing.T) {
	s := newScript(t)
	c := s.dial(t, Options{}, newWaiter(false))
	sc := s.accept(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Send(ctx, "bob", "m1", []byte(`"m1"`))
		errc <- err
	}()
	sc.expectSends(t, "m1")
	o := queue(t, c, "m1") // joins: nothing more is written
	sc.fence(t, c)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("first Send = %v", err)
		}
	case <-time.After(stuck):
		t.Fatal("first Send did not return when its context ended")
	}
	sc.sent("m1", 7)
	if s, err := outcome(t, c, o); err != nil || s.Seq != 7 {
		t.Fatalf("second Send: %+v %v", s, err)
	}
}

// A Send whose context has already ended writes nothing.
func TestSendWithAnEndedContextWritesNothing(t *testing.T) {
	s := newScript(t)
	c := s.dial(t, Options{}, newWaiter(false))
	sc := s.accept(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Send(ctx, "bob", "m1", []byte(`"m1"`)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Send = %v, want context.Canceled", err)
	}
	sc.fence(t, c)
}

// A resend refused for good (an error resending cannot fix) fails its Send
// and ends the hold.
func TestRefusedResendEndsTheHold(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)

	m1 := queue(t, c, "m1")
	sc.expectSends(t, "m1")
	sc.fail(protocol.ErrUnavailable, "m1", 0)
	r := w.next(t)
	m2 := queue(t, c, "m2")
	sc.fence(t, c)
	r.end()
	sc.expectSends(t, "m1")
	sc.fail(protocol.ErrBadMedia, "m1", 0)
	var se *ServerError
	if _, err := outcome(t, c, m1); !errors.As(err, &se) || se.Code != protocol.ErrBadMedia {
		t.Fatalf("m1: %v, want bad_media", err)
	}
	sc.expectSends(t, "m2")
	sc.sent("m2", 1)
	checkSeqs(t, c, []*outgoing{m2}, 1)
}

// After a reconnect every unconfirmed send is written again, in order,
// followed by those made while disconnected.
func TestReconnectResendsUnconfirmedSendsInOrder(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)

	var outs []*outgoing
	for _, id := range []string{"m1", "m2", "m3", "m4"} {
		outs = append(outs, queue(t, c, id))
	}
	sc.expectSends(t, "m1", "m2", "m3", "m4")
	sc.sent("m1", 1)
	sc.sent("m2", 2)
	checkSeqs(t, c, outs[:2], 1)
	sc.closeWith(protocol.CloseServiceRestart, "gateway shutting down")

	r := w.next(t) // the reconnect's backoff: the client is disconnected
	outs = append(outs, queue(t, c, "m5"))
	r.end()
	sc2 := s.accept(t)
	sc2.expectSends(t, "m3", "m4", "m5")
	sc2.sent("m3", 3)
	sc2.sent("m4", 4)
	sc2.sent("m5", 5)
	checkSeqs(t, c, outs[2:], 3)
}

// A reconnect while a send is held writes every unconfirmed send in order;
// the hold then lasts until the held send is answered, so sends made after
// the reconnect still wait behind it.
func TestReconnectWhileHeld(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)

	m1, m2 := queue(t, c, "m1"), queue(t, c, "m2")
	sc.expectSends(t, "m1", "m2")
	sc.fail(protocol.ErrStoreFailed, "m1", 0)
	w.next(t) // m1's backoff, never ended: the reconnect overtakes it
	m3 := queue(t, c, "m3")
	sc.fence(t, c)
	sc.closeWith(protocol.CloseServiceRestart, "gateway shutting down")

	w.next(t).end() // the reconnect's backoff
	sc2 := s.accept(t)
	sc2.expectSends(t, "m1", "m2", "m3")
	m4 := queue(t, c, "m4")
	sc2.fence(t, c) // m4 waits for m1
	sc2.sent("m1", 1)
	sc2.expectSends(t, "m4")
	sc2.sent("m2", 2)
	sc2.sent("m3", 3)
	sc2.sent("m4", 4)
	checkSeqs(t, c, []*outgoing{m1, m2, m3, m4}, 1)
}

// Error codes follow the protocol's table, and one this SDK does not know
// (a newer server's) is retried like internal, as the protocol says.
func TestRetryableFollowsTheProtocol(t *testing.T) {
	for _, e := range protocol.Errors {
		if got := retryable(e.Code); got != e.Retry {
			t.Errorf("retryable(%s) = %v, want %v", e.Code, got, e.Retry)
		}
	}
	if !retryable("some_code_from_the_future") {
		t.Error("an unknown code is not retried, unlike internal")
	}
}

// At most sendWindow sends are on the wire unanswered: the rest go out as
// answers come, in order, on this connection and after a reconnect (a
// device back with hundreds of sends made offline would otherwise have
// them refused past the gateway's send burst, and be closed for it).
func TestSendsBeyondTheWindowWaitForAnswers(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)

	ids := make([]string, sendWindow+10)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i+1)
		queue(t, c, ids[i])
	}
	sc.expectSends(t, ids[:sendWindow]...)
	sc.fence(t, c) // nothing more was written
	sc.sent(ids[0], 1)
	sc.sent(ids[1], 2)
	sc.expectSends(t, ids[sendWindow], ids[sendWindow+1])
	sc.fence(t, c)

	// A reconnect writes the oldest sendWindow unanswered, then the rest
	// as they are answered.
	sc.closeWith(protocol.CloseServiceRestart, "gateway shutting down")
	w.next(t).end()
	sc2 := s.accept(t)
	sc2.expectSends(t, ids[2:2+sendWindow]...)
	sc2.fence(t, c)
	for i := 2; i < len(ids); i++ {
		sc2.sent(ids[i], uint64(i+1))
	}
	sc2.expectSends(t, ids[2+sendWindow:]...)
}

// A send whose frame is larger than the gateway takes is refused at once
// and never written: written, it would close the connection (1009) and go
// first again on every reconnect, holding every newer send back.
func TestSendLargerThanTheGatewayTakesIsRefusedAtOnce(t *testing.T) {
	s := newScript(t)
	c := s.dial(t, Options{}, newWaiter(true))
	sc := s.accept(t)
	big := []byte(`"` + strings.Repeat("x", 70000) + `"`)
	if _, err := c.Send(context.Background(), "bob", "big", big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a send past max_frame: %v, want ErrTooLarge", err)
	}
	sc.fence(t, c) // nothing was written
	o := queue(t, c, "m1")
	sc.expectSends(t, "m1")
	sc.sent("m1", 1)
	if _, err := outcome(t, c, o); err != nil {
		t.Fatal(err)
	}
}

// Withdrawing the sends on the wire frees their room in the window: a
// send waiting for room goes out at once, not at the next send.
func TestWithdrawnSendsLetTheSendWaitingForRoomGo(t *testing.T) {
	s := newScript(t)
	c := s.dial(t, Options{}, newWaiter(true))
	sc := s.accept(t)
	outs := make([]*outgoing, sendWindow)
	ids := make([]string, sendWindow)
	for i := range outs {
		ids[i] = fmt.Sprintf("w%d", i+1)
		outs[i] = queue(t, c, ids[i])
	}
	sc.expectSends(t, ids...)
	queue(t, c, "next")
	sc.fence(t, c) // waiting for room
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for _, o := range outs {
		if _, err := c.await(gone, o); !errors.Is(err, context.Canceled) {
			t.Fatalf("withdrawn send: %v", err)
		}
	}
	sc.expectSends(t, "next")
}

// A send kept in the store that is larger than the gateway takes (made
// under a larger max_frame, or by a build that did not check) is refused
// when the client connects, dropped from the store, and never written.
func TestRestoredSendLargerThanTheGatewayTakesIsDropped(t *testing.T) {
	st, err := localstore.Open(filepath.Join(t.TempDir(), "device.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	big := []byte(`"` + strings.Repeat("x", 70000) + `"`)
	if err := st.AddOutgoing(localstore.Outgoing{ID: "big", To: "bob", Body: big}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddOutgoing(localstore.Outgoing{ID: "small", To: "bob", Body: []byte(`"hi"`)}); err != nil {
		t.Fatal(err)
	}
	s := newScript(t)
	c := s.dial(t, Options{Store: st}, newWaiter(true))
	sc := s.accept(t)
	sc.expectSends(t, "small")
	sc.fence(t, c)
	left, err := st.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].ID != "small" {
		t.Fatalf("the store's outbox holds %+v, want small only", left)
	}
}

// Sends made while the client is away go out together once it is back:
// one write for all of them, in their order, where each was a write on
// both sides.
func TestSendsMadeAwayGoOutInOneWrite(t *testing.T) {
	s := newScript(t)
	var writes atomic.Int32
	s.hooks.wrote = func([]byte) { writes.Add(1) }
	w := newWaiter(false)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	r := w.next(t) // disconnected, waiting to reconnect
	var outs []*outgoing
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		outs = append(outs, queue(t, c, id))
	}
	r.end()
	sc2 := s.accept(t)
	sc2.expectSends(t, "a1", "a2", "a3", "a4")
	if n := writes.Load(); n != 1 {
		t.Fatalf("%d writes of sends, want the four in one", n)
	}
	for i, o := range outs {
		sc2.sent(o.id, uint64(i+1))
	}
	for i, o := range outs {
		if s, err := outcome(t, c, o); err != nil || s.Seq != uint64(i+1) {
			t.Fatalf("%s: %+v %v", o.id, s, err)
		}
	}
}

// No frame follows the client's close frame, whether it answered the
// server's close or closed itself: sends written together (on the socket
// itself) are refused like the library's own writes, and stay in the
// outbox for the next connection.
func TestNoSendFrameAfterTheCloseFrame(t *testing.T) {
	s := newScript(t)
	var writes atomic.Int32
	s.hooks.wrote = func([]byte) { writes.Add(1) }
	w := newWaiter(false)
	c, sc, connected := s.dialConnectedWith(t, Options{}, w)
	current := func() *websocket.Conn {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.conn
	}
	conn := current()
	two := []*outgoing{{id: "m-1", to: "bob", body: []byte(`1`)}, {id: "m-2", to: "bob", body: []byte(`2`)}}
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	r := w.next(t) // the read loop has answered the close and ended
	if err := c.writeSends(conn, two); !errors.Is(err, websocket.ErrCloseSent) {
		t.Fatalf("sends after answering the server's close: %v, want ErrCloseSent", err)
	}
	r.end()
	s.accept(t)
	select {
	case <-connected:
	case <-time.After(stuck):
		t.Fatal("the client did not connect again")
	}
	conn = current()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.writeSends(conn, two); !errors.Is(err, websocket.ErrCloseSent) {
		t.Fatalf("sends after Close: %v, want ErrCloseSent", err)
	}
	if n := writes.Load(); n != 0 {
		t.Fatalf("%d writes on the socket itself after a close frame", n)
	}
}
