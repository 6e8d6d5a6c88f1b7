package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

// queuedOnTheWire connects a client to a script, with hooks h, and
// queues send p1, which the script has read.
func queuedOnTheWire(t *testing.T, h hooks) (*Client, *sconn, *Pending) {
	t.Helper()
	s := newScript(t)
	s.hooks = h
	c := s.dial(t, Options{}, newWaiter(true))
	sc := s.accept(t)
	p, err := c.Queue("bob", "p1", []byte(`1`))
	if err != nil {
		t.Fatal(err)
	}
	sc.expectSends(t, "p1")
	return c, sc, p
}

// A Wait that gives up withdraws a queued send; a Wait after that says so
// at once rather than waiting for an answer that never comes.
func TestPendingWaitAfterAWithdrawal(t *testing.T) {
	_, _, p := queuedOnTheWire(t, hooks{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first Wait: %v, want its deadline", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Wait(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrWithdrawn) {
			t.Fatalf("a Wait after the withdrawal: %v, want ErrWithdrawn", err)
		}
	case <-time.After(stuck):
		t.Fatal("a Wait after the withdrawal waits for good")
	}
}

// Of two Waits on one queued send, the one that gives up leaves it to the
// other, which gets its "sent".
func TestPendingWaitGivingUpLeavesTheSendToAnother(t *testing.T) {
	counted := make(chan string, 2)
	_, sc, p := queuedOnTheWire(t, hooks{waiting: func(id string) { counted <- id }})
	type res struct {
		s   Sent
		err error
	}
	long := make(chan res, 1)
	go func() {
		s, err := p.Wait(context.Background())
		long <- res{s, err}
	}()
	select {
	case <-counted: // the long Wait holds it now
	case <-time.After(stuck):
		t.Fatal("the long Wait never started waiting")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("short Wait: %v", err)
	}
	sc.sent("p1", 7)
	select {
	case r := <-long:
		if r.err != nil || r.s.Seq != 7 {
			t.Fatalf("long Wait: %+v %v, want sent at seq 7", r.s, r.err)
		}
	case <-time.After(stuck):
		t.Fatal("the long Wait never returned: the short one withdrew the send it still waited for")
	}
}

// OnConnect may send: the resends are written before it is called, and
// it is called with nothing held that a send needs.
func TestQueueFromOnConnect(t *testing.T) {
	s := newScript(t)
	var cp atomic.Pointer[Client]
	queued := make(chan error, 4)
	opts := Options{URL: s.url, Token: WithToken("tok"), OnConnect: func(string) {
		if c := cp.Load(); c != nil { // a reconnect
			_, err := c.Queue("bob", "draft", []byte(`"d"`))
			queued <- err
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), stuck)
	defer cancel()
	c, err := dialWith(ctx, opts, hooks{wait: newWaiter(true).wait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cp.Store(c)
	sc := s.accept(t)
	sc.ws.Close() // the client reconnects and calls OnConnect again
	sc2 := s.accept(t)
	select {
	case err := <-queued:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(stuck):
		t.Fatal("Queue called from OnConnect never returned")
	}
	sc2.expectSends(t, "draft")
}

// A tick that came before the copy of this user's own message from
// another device is stored with the copy, in one write. Stored apart, a
// failure of the tick's write dropped the connection, and the copy that
// came again was a repeat the app had: the tick was lost.
func TestOwnCopyEarlyTickSurvivesAFailedStoreWrite(t *testing.T) {
	st := storeWithTrigger(t, `CREATE TRIGGER fail_ticks BEFORE UPDATE OF status ON messages
WHEN NEW.status = 2 AND NOT EXISTS (SELECT 1 FROM messages WHERE id = 'unlock')
BEGIN SELECT RAISE(ABORT, 'injected: disk busy'); END`)
	s := newScript(t)
	c := s.dial(t, Options{Store: st, AckGather: -1}, newWaiter(true))
	sc := s.accept(t)
	sc.receipt(protocol.StatusDelivered, "bob", 42, 42, 100)
	sc.expectAcks(t, 100)
	own := protocol.AppendOwnMsg(nil, "x1", "alice", "laptop", "bob", 7, 42, 1795582349000, []byte(`"hi"`), nil)
	sc.write(own)
	m := recvMsg(t, c)
	if m.To != "bob" || m.SentSeq != 42 {
		t.Fatalf("own copy %+v", m)
	}
	select {
	case r := <-c.Receipts():
		if r.ID != "x1" || r.Status != protocol.StatusDelivered {
			t.Fatalf("receipt %+v", r)
		}
	case sc2 := <-s.conns:
		// A separate write of the tick failed and dropped the connection:
		// the copy comes again, once the store works.
		if _, err := st.Received(localstore.Message{Conv: "zed", From: "zed", Device: "d", ID: "unlock", Seq: 1, TS: time.Now(), Body: []byte(`"x"`)}); err != nil {
			t.Fatal(err)
		}
		sc2.write(own)
		c.Ack(m.Seq)
		sc2.expectAcks(t, 7)
		select {
		case r := <-c.Receipts():
			t.Logf("tick after the copy came again: %+v", r)
		case <-time.After(2 * time.Second):
			t.Fatal("the delivered tick of x1 never reached the app")
		}
	case <-time.After(stuck):
		t.Fatal("neither the tick nor a reconnect")
	}
	if got, _, _ := st.Message("", "x1"); got.Status != localstore.Delivered {
		t.Fatalf("the store has x1 at %v, want %v", got.Status, localstore.Delivered)
	}
}

// A read made while reconnecting is written on the next connection,
// after the resends: the sender learns of it without another read.
func TestReadWhileReconnectingIsWrittenOnTheNextConnection(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	connected := make(chan string, 4)
	c := s.dial(t, Options{AckGather: -1, OnConnect: func(sid string) { connected <- sid }}, w)
	<-connected
	sc := s.accept(t)
	sc.msg("m1", "bob", 5)
	m := recvMsg(t, c)
	c.Ack(m.Seq)
	sc.expectAcks(t, 5)
	sc.ws.Close()
	r := w.next(t) // disconnected, waiting to reconnect
	c.Read(m.Seq)  // the user reads it meanwhile
	r.end()
	sc2 := s.accept(t)
	select {
	case <-connected:
	case <-time.After(stuck):
		t.Fatal("no reconnect")
	}
	if err := c.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	for {
		f := sc2.next(t)
		if f.Type == protocol.TypeRead && f.Seq == 5 {
			return
		}
		if f.Type == protocol.TypeTyping {
			t.Fatal("the read of seq 5 made while reconnecting was never written")
		}
	}
}
