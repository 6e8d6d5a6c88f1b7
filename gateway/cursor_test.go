package gateway

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The cursor is saved CursorDelay after the floor first moves, with every
// move made meanwhile: one write, not one per ack. The session's end saves
// the last floor and waits for it; nothing is saved after that.
func TestCursorGathersMovesAndSavesLast(t *testing.T) {
	cfg := testConfig()
	cfg.CursorDelay = time.Hour // the test runs the timer's op itself
	fc := &fakeCursors{}
	srv := testServer(t, cfg, &fakeStream{}, fc)
	s := newSession(srv, Identity{User: "bob", Device: "phone"}, newFakeTransport())
	defer s.timer.stop()
	c := &s.cursor
	c.init(10)

	c.moved(10) // not past what is saved
	c.moved(12)
	c.moved(15)
	c.moved(14) // a floor never goes back
	if saved, _ := fc.saves(); len(saved) != 0 {
		t.Fatalf("saved %v before CursorDelay", saved)
	}
	c.due()
	c.due() // nothing new
	if saved, _ := fc.saves(); !slices.Equal(saved, []uint64{15}) {
		t.Fatalf("saved %v, want [15]", saved)
	}
	c.moved(20)
	c.final()
	c.moved(30)
	c.due()
	saved, stored := fc.saves()
	if !slices.Equal(saved, []uint64{15}) || !slices.Equal(stored, []uint64{20}) {
		t.Fatalf("saved %v and stored %v, want [15] and, at the end, [20]", saved, stored)
	}
}

// With no CursorDelay every move is saved at once. The end still stores
// the floor and waits for it: the saves were not waited for, and the
// last may have been lost. A session whose floor never moved stores
// nothing.
func TestCursorWithoutDelaySavesAtOnce(t *testing.T) {
	fc := &fakeCursors{}
	srv := testServer(t, testConfig(), &fakeStream{}, fc)
	s := newSession(srv, Identity{User: "bob", Device: "phone"}, newFakeTransport())
	defer s.timer.stop()
	s.cursor.init(0)
	s.cursor.moved(1)
	s.cursor.moved(2)
	s.cursor.final()
	if saved, stored := fc.saves(); !slices.Equal(saved, []uint64{1, 2}) || !slices.Equal(stored, []uint64{2}) {
		t.Fatalf("saved %v, stored %v; want [1 2] and, at the end, [2]", saved, stored)
	}
	idle := newSession(srv, Identity{User: "bob", Device: "laptop"}, newFakeTransport())
	defer idle.timer.stop()
	idle.cursor.init(7)
	idle.cursor.final()
	if _, stored := fc.saves(); len(stored) != 1 {
		t.Fatalf("stored %v: a session that moved nothing stored its cursor", stored)
	}
}

// The session's timer runs its ops when due, each once, earliest first.
func TestSessionTimerRunsEachOpWhenDue(t *testing.T) {
	o := &opLog{}
	st := &sessionTimer{owner: o}
	defer st.stop()
	now := time.Now()
	st.set(opCursor, now.Add(20*time.Millisecond))
	st.set(opExpire, now.Add(time.Hour))
	st.set(opPubs, now.Add(time.Millisecond))
	st.set(opSecondLook, now.Add(10*time.Millisecond))
	st.clear(opSecondLook)
	waitFor(t, func() error {
		if got := o.list(); !slices.Equal(got, []timerOp{opPubs, opCursor}) {
			return fmt.Errorf("ran %v, want [opPubs opCursor]", got)
		}
		return nil
	})
	st.mu.Lock()
	next := st.nextLocked()
	st.mu.Unlock()
	if next != now.Add(time.Hour).UnixNano() {
		t.Fatalf("timer next set for %d, want the expiry", next)
	}
}

type opLog struct {
	mu  sync.Mutex
	ops []timerOp
}

func (o *opLog) onTimer(op timerOp) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, op)
}

func (o *opLog) list() []timerOp {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.ops)
}

// A session replaced by a newer one of the same device answers the kick
// once it has stored the device's cursor, so the newer one, reading the
// cursor next, delivers nothing the device had acked and was settled.
func TestKickIsAnsweredOnceTheCursorIsStored(t *testing.T) {
	storing, gate := make(chan uint64, 1), make(chan struct{})
	fs := &fakeStream{}
	seq := fs.store("bob", "alice", "a1")
	srv := testServer(t, testConfig(), fs, &fakeCursors{storing: storing, gate: gate})
	srv.replies = &replies{}
	s, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, seq)
	s.feed.settle(seq) // acked, its tick stored: the floor moved

	answered := make(chan struct{})
	kick := &nats.Msg{Data: []byte(fmt.Sprintf("%d newer", time.Now().Add(time.Hour).UnixNano()))}
	go func() { s.onKick(kick); close(answered) }()
	<-s.feed.finished()
	go s.stop() // as the close, which ends the read loop, does
	if floor := <-storing; floor != seq {
		t.Fatalf("stored cursor %d, want %d", floor, seq)
	}
	select {
	case <-answered:
		t.Fatal("the kick was answered before the device's cursor was stored")
	default:
	}
	close(gate)
	<-answered
}

// A session whose connection ended, still storing the device's cursor
// when a newer session of the device asks, answers once it is stored
// (the newer one reads it next), not at once because it stopped: the
// common way a device comes back (its connection dropped, it reconnects).
func TestKickDuringStopIsAnsweredOnceTheCursorIsStored(t *testing.T) {
	storing, gate := make(chan uint64, 1), make(chan struct{})
	fs := &fakeStream{}
	seq := fs.store("bob", "alice", "a1")
	fc := &fakeCursors{storing: storing, gate: gate}
	cfg := testConfig()
	cfg.KickTimeout = time.Minute // its wait's bound: far beyond the store's
	srv := testServer(t, cfg, fs, fc)
	srv.replies = &replies{}
	s, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, seq)
	s.feed.settle(seq) // acked, its tick stored: the floor moved
	go s.stop()        // the connection ended
	if floor := <-storing; floor != seq {
		t.Fatalf("storing cursor %d, want %d", floor, seq)
	}
	time.AfterFunc(50*time.Millisecond, func() { close(gate) }) // the store takes a while
	s.onKick(&nats.Msg{Data: []byte(fmt.Sprintf("%d newer", time.Now().Add(time.Hour).UnixNano()))})
	if _, stored := fc.saves(); !slices.Equal(stored, []uint64{seq}) {
		t.Fatalf("the kick was answered with the cursors stored %v, want [%d]", stored, seq)
	}
}

// A replaced session whose socket's writer hangs (a device gone to another
// network) reaches stop only after WriteTimeout: the kick's answer must
// not wait for that, and still comes once the cursor is stored.
func TestKickIsAnsweredWithTheCursorStoredBeforeStop(t *testing.T) {
	fs := &fakeStream{}
	seq := fs.store("bob", "alice", "a1")
	fc := &fakeCursors{}
	srv := testServer(t, testConfig(), fs, fc)
	s, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, seq)
	s.feed.settle(seq)

	s.onKick(&nats.Msg{Data: []byte(fmt.Sprintf("%d newer", time.Now().Add(time.Hour).UnixNano()))}) // no stop
	if _, stored := fc.saves(); !slices.Equal(stored, []uint64{seq}) {
		t.Fatalf("answered with the cursors stored %v, want [%d]", stored, seq)
	}
}
