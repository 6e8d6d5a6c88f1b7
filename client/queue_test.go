package client

import (
	"context"
	"errors"
	"testing"

	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

// Queue and QueueGroup keep a send in the outbox (and the store) at once,
// in the order of the calls with Send's, without waiting; Wait gives the
// outcome; bad input is refused before anything is kept.
func TestQueueKeepsSendsInOrderWithoutWaiting(t *testing.T) {
	st, err := localstore.Open(t.TempDir() + "/q.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := newScript(t)
	c := s.dial(t, Options{Store: st}, newWaiter(true))
	sc := s.accept(t)

	if _, err := c.Queue("bad.user", "q0", []byte(`1`)); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad recipient: %v", err)
	}
	if _, err := c.QueueGroup("club", "q0", []byte{0xff}); !errors.Is(err, ErrBadBody) {
		t.Fatalf("bad body: %v", err)
	}
	p1, err := c.Queue("bob", "q1", []byte(`"one"`))
	if err != nil {
		t.Fatal(err)
	}
	o2 := queue(t, c, "q2")
	p3, err := c.QueueGroup("club", "q3", []byte(`"three"`))
	if err != nil {
		t.Fatal(err)
	}
	ob, err := st.Outbox()
	if err != nil || len(ob) != 3 || ob[0].ID != "q1" || ob[1].ID != "q2" || ob[2].ID != "q3" || ob[2].Group != "club" {
		t.Fatalf("store's outbox %+v %v, want q1, q2, q3 (in club)", ob, err)
	}
	sc.expectSends(t, "q1", "q2", "q3")
	sc.sent("q1", 11)
	sc.sent("q2", 12)
	sc.fail(protocol.ErrNotMember, "q3", 0)
	ctx, cancel := context.WithTimeout(context.Background(), stuck)
	defer cancel()
	if s, err := p1.Wait(ctx); err != nil || s.Seq != 11 || p1.ID() != "q1" {
		t.Fatalf("q1: %+v %v", s, err)
	}
	if _, err := outcome(t, c, o2); err != nil {
		t.Fatal(err)
	}
	var se *ServerError
	if _, err := p3.Wait(ctx); !errors.As(err, &se) || se.Code != protocol.ErrNotMember {
		t.Fatalf("q3: %v, want not_member", err)
	}
	if ob, _ := st.Outbox(); len(ob) != 0 {
		t.Fatalf("store's outbox after the answers: %+v", ob)
	}
	if m, _, _ := st.GroupMessage("club", "", "q3"); m.Status != localstore.Dropped {
		t.Fatalf("q3 stored as %+v, want dropped", m)
	}
}

// A send withdrawn (its only waiter gave up) is marked dropped in the
// store under the store's lock, so a Send or Queue of the same id made
// meanwhile keeps it again after the drop: it stays in the store's
// outbox, to be resent after a crash, while it is live.
func TestWithdrawnSendDroppedUnderTheStoreLock(t *testing.T) {
	st, err := localstore.Open(t.TempDir() + "/w.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := newScript(t)
	c, sc, _ := s.dialConnected(t, Options{Store: st})
	p, err := c.Queue("bob", "m-9", []byte(`"x"`))
	if err != nil {
		t.Fatal(err)
	}
	sc.expectSends(t, "m-9")
	var locked bool
	c.hooks.dropping = func(string) {
		locked = !c.storeMu.TryLock()
		if !locked {
			c.storeMu.Unlock()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with its context ended: %v", err)
	}
	if !locked {
		t.Fatal("the withdrawal was marked dropped without the store's lock: a same-id send could be kept before it")
	}
	if ob, _ := st.Outbox(); len(ob) != 0 {
		t.Fatalf("store's outbox after the withdrawal: %+v", ob)
	}
	if _, err := c.Queue("bob", "m-9", []byte(`"x"`)); err != nil {
		t.Fatal(err)
	}
	if ob, _ := st.Outbox(); len(ob) != 1 || ob[0].ID != "m-9" {
		t.Fatalf("store's outbox after the same id is sent again: %+v", ob)
	}
}
