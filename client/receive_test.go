package client

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

// Messages that come again after a reconnect are dropped by (from, id):
// one the app acked is acked again (its ack was lost with the connection),
// one the app still holds is left for the app to ack, and a second stored
// copy (a new seq) is acked by the client. The same id from another
// sender is another message.
func TestRedeliveredMessagesAreDroppedAndAckedAgain(t *testing.T) {
	s := newScript(t)
	w := newWaiter(true)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)

	sc.msg("a1", "alice", 10)
	sc.msg("a2", "alice", 11)
	for _, want := range []string{"a1", "a2"} {
		if m := recvMsg(t, c); m.ID != want || m.From != "alice" || string(m.Body) != `"hi"` {
			t.Fatalf("got %+v, want %s from alice", m, want)
		}
	}
	c.Ack(10) // a2 stays unacked: the app still holds it
	sc.expectAcks(t, 10)
	sc.closeWith(protocol.CloseServiceRestart, "delivered event not stored")

	sc2 := s.accept(t)
	sc2.msg("a1", "alice", 10) // acked, ack lost: ack again
	sc2.msg("a2", "alice", 11) // held by the app: nothing
	sc2.msg("a1", "alice", 20) // a second stored copy: ack, never shown
	sc2.msg("a1", "bob", 21)   // bob's a1 is a message of its own
	if m := recvMsg(t, c); m.ID != "a1" || m.From != "bob" || m.Seq != 21 {
		t.Fatalf("got %+v, want bob's a1 (seq 21)", m)
	}
	c.Ack(21)
	sc2.expectAcks(t, 10, 20, 21) // and no ack of 11
	if got := c.Stats().DuplicatesDropped; got != 3 {
		t.Fatalf("DuplicatesDropped = %d, want 3", got)
	}
}

// A receipt frame is a position: it covers every message of this client
// to its recipient in its range. Each is handed to the app once per
// message and tick, a delivered after the read is dropped as stale, a
// read covers delivered, and every frame is acked, whatever it moved.
func TestReceiptsArePositionsHandedOnceAndAllAcked(t *testing.T) {
	s := newScript(t)
	c := s.dial(t, Options{}, newWaiter(true))
	sc := s.accept(t)
	// m1..m3 to bob stored at 10, 12, 14 (others' messages in between);
	// m4 to carol at 13.
	sends := []struct {
		to, id string
		seq    uint64
	}{{"bob", "m1", 10}, {"bob", "m2", 12}, {"carol", "m4", 13}, {"bob", "m3", 14}}
	for _, x := range sends {
		o := queueTo(t, c, x.to, x.id)
		sc.expectSends(t, x.id)
		sc.sent(x.id, x.seq)
		if _, err := outcome(t, c, o); err != nil {
			t.Fatal(err)
		}
	}

	sc.receipt(protocol.StatusDelivered, "bob", 9, 12, 30)    // m1, m2
	sc.receipt(protocol.StatusDelivered, "bob", 11, 12, 31)   // m2 again: nothing
	sc.receipt(protocol.StatusRead, "bob", 0, 10, 32)         // m1 read
	sc.receipt(protocol.StatusDelivered, "carol", 13, 13, 33) // m4, another recipient
	sc.receipt(protocol.StatusRead, "bob", 0, 14, 34)         // m2 and m3 read; m3 never delivered: read covers it
	sc.receipt(protocol.StatusDelivered, "bob", 13, 14, 35)   // m3: stale after the read
	sc.expectAcks(t, 30, 31, 32, 33, 34, 35)
	want := []Receipt{
		{ID: "m1", Status: protocol.StatusDelivered, By: "bob", Seq: 10},
		{ID: "m2", Status: protocol.StatusDelivered, By: "bob", Seq: 12},
		{ID: "m1", Status: protocol.StatusRead, By: "bob", Seq: 10},
		{ID: "m4", Status: protocol.StatusDelivered, By: "carol", Seq: 13},
		{ID: "m2", Status: protocol.StatusRead, By: "bob", Seq: 12},
		{ID: "m3", Status: protocol.StatusRead, By: "bob", Seq: 14},
	}
	for _, w := range want {
		r := recvReceipt(t, c)
		if r.ID != w.ID || r.Status != w.Status || r.By != w.By || r.Seq != w.Seq || r.Device != "phone" {
			t.Fatalf("got %+v, want %+v", r, w)
		}
	}

	// Redelivered after a reconnect: acked again, not handed again; a
	// fence (a new tick) is the next thing the app gets.
	sc.closeWith(protocol.CloseSlow, "no pong")
	sc2 := s.accept(t)
	sc2.receipt(protocol.StatusRead, "bob", 0, 14, 34)
	sc2.receipt(protocol.StatusRead, "carol", 0, 13, 36)
	sc2.expectAcks(t, 34, 36)
	if r := recvReceipt(t, c); r.ID != "m4" || r.Status != protocol.StatusRead {
		t.Fatalf("got %+v, want m4's read", r)
	}
}

// A tick can overtake the "sent" of the message it covers (they travel
// apart): the SDK keeps the receipt's position and device and applies
// them when the "sent" comes, and the send's result names the tick too.
func TestTickBeforeSentIsApplied(t *testing.T) {
	s := newScript(t)
	c := s.dial(t, Options{}, newWaiter(true))
	sc := s.accept(t)
	o1, o2 := queue(t, c, "m1"), queue(t, c, "m2")
	sc.expectSends(t, "m1", "m2")
	sc.receipt(protocol.StatusDelivered, "bob", 20, 21, 40) // m1 and m2, both not yet confirmed
	sc.receipt(protocol.StatusRead, "bob", 0, 20, 41)       // m1 read
	sc.expectAcks(t, 40, 41)
	sc.sent("m1", 20)
	sc.sent("m2", 21)
	for i, o := range []*outgoing{o1, o2} {
		sent, err := outcome(t, c, o)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{protocol.StatusRead, protocol.StatusDelivered}[i]; sent.Tick != want {
			t.Fatalf("%s sent with tick %q, want %q", sent.ID, sent.Tick, want)
		}
	}
	for _, w := range []Receipt{{ID: "m1", Status: protocol.StatusRead, Seq: 20}, {ID: "m2", Status: protocol.StatusDelivered, Seq: 21}} {
		if r := recvReceipt(t, c); r.ID != w.ID || r.Status != w.Status || r.Seq != w.Seq || r.By != "bob" || r.Device != "phone" {
			t.Fatalf("got %+v, want %+v by bob on phone (the receipts' device)", r, w)
		}
	}
}

// fakeTimers stand in for the acks' waits: a test says when one is up.
type fakeTimers struct {
	mu  sync.Mutex
	set []*fakeTimer
}

type fakeTimer struct {
	mu      sync.Mutex
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (t *fakeTimer) isStopped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stopped
}

func (ft *fakeTimers) after(_ time.Duration, f func()) stopper {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{f: f}
	ft.set = append(ft.set, t)
	return t
}

// timer is the i-th wait set, failing the test if there are not that many.
func (ft *fakeTimers) timer(t *testing.T, i int) *fakeTimer {
	t.Helper()
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if i >= len(ft.set) {
		t.Fatalf("%d waits set, want at least %d", len(ft.set), i+1)
	}
	return ft.set[i]
}

func (ft *fakeTimers) count() int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return len(ft.set)
}

// up runs the wait's function, as time.AfterFunc would, unless stopped.
func (t *fakeTimer) up() {
	t.mu.Lock()
	stopped := t.stopped
	t.stopped = true
	t.mu.Unlock()
	if !stopped {
		t.f()
	}
}

// acksTest dials the script with acks gathered over an hour, their waits
// ended by the test (timers), and counts the writes of frames the client
// framed itself (writes).
func acksTest(t *testing.T, mod ...func(*Options)) (s *script, c *Client, sc *sconn, timers *fakeTimers, writes *atomic.Int32) {
	t.Helper()
	s = newScript(t)
	timers, writes = &fakeTimers{}, &atomic.Int32{}
	s.hooks.wrote = func([]byte) { writes.Add(1) }
	s.hooks.afterFunc = timers.after
	opts := Options{AckGather: time.Hour}
	for _, m := range mod {
		m(&opts)
	}
	c = s.dial(t, opts, newWaiter(true))
	return s, c, s.accept(t), timers, writes
}

// ackAll has the script deliver a<seq> for each seq from first, n of them,
// and the app ack each as it gets it.
func ackAll(t *testing.T, c *Client, sc *sconn, first uint64, n int) {
	t.Helper()
	for seq := first; seq < first+uint64(n); seq++ {
		sc.msg(fmt.Sprintf("a%d", seq), "alice", seq)
	}
	for range n {
		c.Ack(recvMsg(t, c).Seq)
	}
}

// expectNext checks that the next frame the client wrote is of type typ.
func expectNext(t *testing.T, sc *sconn, typ string) {
	t.Helper()
	if f := sc.next(t); f.Type != typ {
		t.Fatalf("next frame %s %d, want %s", f.Type, f.Seq, typ)
	}
}

// Acks made soon after others wait, and go out together: with the frame
// the app makes next, ahead of it and in the same write, so frames keep
// their order.
func TestAcksMadeTogetherGoOutInOneWrite(t *testing.T) {
	_, c, sc, timers, writes := acksTest(t)
	ackAll(t, c, sc, 10, 5)
	sc.expectAcks(t, 10) // the first after a quiet spell goes at once
	if err := c.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	sc.expectAcks(t, 11, 12, 13, 14)
	expectNext(t, sc, protocol.TypeTyping)
	if n := writes.Load(); n != 2 {
		t.Fatalf("%d writes, want the first ack's and the rest's with the typing frame", n)
	}
	if n := timers.count(); n != 1 {
		t.Fatalf("%d waits set, want one for the acks after the first", n)
	}
}

// Acks waiting when nothing else is written go out, together, once their
// wait is up.
func TestGatheredAcksGoOutWhenTheirTimeIsUp(t *testing.T) {
	_, c, sc, timers, writes := acksTest(t)
	ackAll(t, c, sc, 10, 3)
	sc.expectAcks(t, 10)
	timers.timer(t, 0).up()
	sc.expectAcks(t, 11, 12)
	if n := writes.Load(); n != 2 {
		t.Fatalf("%d writes, want 2: the first ack, then the two that waited", n)
	}
}

// Acks still waiting when their connection is lost are not written on the
// next one (the gateway there has not delivered those seqs yet), and the
// wait set for them ends: the messages come again, the client acks them
// again, and acks made on the new connection get a wait of their own.
func TestAcksWaitingWhenTheConnectionDropsAreMadeAgain(t *testing.T) {
	s, c, sc, timers, _ := acksTest(t)
	ackAll(t, c, sc, 10, 2) // 11 waits
	sc.expectAcks(t, 10)
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	for f := range sc.frames { // read until the first connection ended
		t.Fatalf("the first connection got %s %d after its ack of 10", f.Type, f.Seq)
	}

	sc2 := s.accept(t)
	sc2.msg("a11", "alice", 11)
	sc2.expectAcks(t, 11) // acked again on its redelivery...
	sc2.fence(t, c)       // ...and only then: the waiting one was dropped

	ackAll(t, c, sc2, 12, 1)
	old := timers.timer(t, 0)
	if !old.isStopped() {
		t.Fatal("the wait set on the first connection is still on")
	}
	old.up() // had it run: nothing to write
	timers.timer(t, 1).up()
	sc2.expectAcks(t, 12)
	sc2.fence(t, c)
}

// Acks waiting when the app closes the client go out before the close,
// and nothing after it.
func TestAcksWaitingWhenTheAppClosesGoOutFirst(t *testing.T) {
	_, c, sc, timers, _ := acksTest(t)
	ackAll(t, c, sc, 10, 2) // 11 waits
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Ack(12)               // after Close: never written
	timers.timer(t, 0).up() // stopped by Close: nothing
	sc.expectAcks(t, 10, 11)
	for f := range sc.frames { // until the connection ended
		t.Fatalf("after the acks: %s %d", f.Type, f.Seq)
	}
}

// deadlineConn is a client's TCP connection that counts writes made with
// no write deadline set on the socket since the write before: the
// websocket library sets one before each of its writes, and the socket
// keeps the last one, which may have passed by the time of a write of the
// client's own.
type deadlineConn struct {
	net.Conn
	mu      sync.Mutex
	set     bool
	unarmed int
}

func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	d.set = t.After(time.Now())
	d.mu.Unlock()
	return d.Conn.SetWriteDeadline(t)
}

func (d *deadlineConn) SetDeadline(t time.Time) error {
	d.mu.Lock()
	d.set = t.After(time.Now())
	d.mu.Unlock()
	return d.Conn.SetDeadline(t)
}

func (d *deadlineConn) Write(b []byte) (int, error) {
	d.mu.Lock()
	if !d.set {
		d.unarmed++
	}
	d.set = false
	d.mu.Unlock()
	return d.Conn.Write(b)
}

// Every write of gathered acks sets its own deadline on the socket: one
// left from the library's last write (a pong's, 5 s) would have failed a
// write made later, and dropped the connection.
func TestGatheredAcksSetTheirOwnWriteDeadline(t *testing.T) {
	var dc *deadlineConn
	_, c, sc, timers, _ := acksTest(t, func(o *Options) {
		o.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				dc = &deadlineConn{Conn: conn}
				return dc, nil
			}
			return nil, err
		}
	})
	ackAll(t, c, sc, 10, 2)
	sc.expectAcks(t, 10)
	timers.timer(t, 0).up()
	sc.expectAcks(t, 11)
	sc.fence(t, c)
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.unarmed != 0 {
		t.Fatalf("%d writes went out with no write deadline set for them", dc.unarmed)
	}
}

// Once 64 acks are waiting they go out at once, without waiting for their
// time: a device reading a backlog past the gateway's max-inflight would
// otherwise stall until it is up.
func TestManyWaitingAcksGoOutAtOnce(t *testing.T) {
	_, c, sc, timers, writes := acksTest(t)
	ackAll(t, c, sc, 1, 1+ackBatch)
	sc.expectAcks(t, 1) // at once: the first after a quiet spell
	seqs := make([]uint64, ackBatch)
	for i := range seqs {
		seqs[i] = uint64(2 + i)
	}
	sc.expectAcks(t, seqs...) // with no wait up
	if n := writes.Load(); n != 2 {
		t.Fatalf("%d writes, want 2", n)
	}
	if !timers.timer(t, 0).isStopped() {
		t.Fatal("the wait is still on after its acks went out")
	}
}

// An Ack that read the connection (A) just before A dropped may reach the
// ack queue after the client reconnected (B) and the app acked messages
// on B. It must not drop B's waiting acks: B delivers nothing twice in a
// session, so those messages would never settle, and past max_inflight
// unsettled the gateway would stop delivering to the device.
func TestStaleAckLeavesTheNewConnectionsAcks(t *testing.T) {
	s, c, sc, timers, _ := acksTest(t)
	ackAll(t, c, sc, 10, 1)
	sc.expectAcks(t, 10)

	// The app gets 11 on A and calls Ack(11): Ack's first half, and
	// ack()'s read of c.conn, happen while A is current...
	sc.msg("a11", "alice", 11)
	m := recvMsg(t, c)
	c.mu.Lock()
	c.acked.add(seqKey(m.Seq))
	connA := c.conn
	c.mu.Unlock()

	// ...then A drops and B comes up before that goroutine runs on.
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	for range sc.frames {
	}
	sc2 := s.accept(t)
	sc2.msg("a11", "alice", 11) // redelivered, acked: acked again at once
	sc2.expectAcks(t, 11)
	ackAll(t, c, sc2, 12, 2) // the app acks 12 and 13 on B: they wait

	// The stalled Ack goroutine runs on: ack() calls add with conn A.
	if c.acks.add(connA, m.Seq, c.opts.AckGather, c.ackAfter) {
		c.flushAcks()
	}
	for i := 0; i < timers.count(); i++ {
		timers.timer(t, i).up()
	}
	// B must still get 12 and 13 (the fence's write takes waiting acks
	// ahead of itself).
	if err := c.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	f := sc2.next(t)
	if f.Type != protocol.TypeAck || f.Seq != 12 {
		t.Fatalf("B's next frame is %s seq %d: the acks of 12 and 13 made on B were dropped and are never written on B", f.Type, f.Seq)
	}
}

// The app stops draining Messages (its buffer full, the read loop blocked
// handing on the next) and calls Close with an ack waiting: the ack, and
// then the close frame, still go out (the read loop, ending with the
// client, used to close the connection under them).
func TestCloseWritesWaitingAcksWhileTheReadLoopIsBlocked(t *testing.T) {
	_, c, sc, _, _ := acksTest(t, func(o *Options) { o.Buffer = 1 })
	ackAll(t, c, sc, 10, 2) // 10 at once, 11 waits
	sc.expectAcks(t, 10)
	sc.msg("a12", "alice", 12) // fills the buffer
	sc.msg("a13", "alice", 13) // the read loop blocks handing it on
	// Nothing signals a full buffer: look at it until it is.
	filled, tick := time.After(5*time.Second), time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for len(c.Messages()) < 1 {
		select {
		case <-filled:
			t.Fatal("the buffer never filled")
		case <-tick.C:
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for f := range sc.frames {
		got = append(got, f.Type)
		if f.Type == protocol.TypeAck && f.Seq == 11 {
			return
		}
	}
	t.Fatalf("the ack of 11, made before Close, never went out (frames after ack 10: %v)", got)
}
