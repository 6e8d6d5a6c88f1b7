package client

import (
	"fmt"
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
// apart): the SDK keeps the receipt's position and applies it when the
// "sent" comes.
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
	for _, o := range []*outgoing{o1, o2} {
		if _, err := outcome(t, c, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []Receipt{{ID: "m1", Status: protocol.StatusRead, Seq: 20}, {ID: "m2", Status: protocol.StatusDelivered, Seq: 21}} {
		if r := recvReceipt(t, c); r.ID != w.ID || r.Status != w.Status || r.Seq != w.Seq || r.By != "bob" {
			t.Fatalf("got %+v, want %+v", r, w)
		}
	}
}

// acksTest dials the script with AckGather gather and counts the writes of
// frames the client framed itself.
func acksTest(t *testing.T, gather time.Duration) (*script, *Client, *sconn, *atomic.Int32) {
	t.Helper()
	s := newScript(t)
	var writes atomic.Int32
	s.hooks.wrote = func([]byte) { writes.Add(1) }
	c := s.dial(t, Options{AckGather: gather}, newWaiter(true))
	return s, c, s.accept(t), &writes
}

// Acks made soon after others wait, and go out together: with the frame
// the app makes next, ahead of it and in the same write, so frames keep
// their order.
func TestAcksMadeTogetherGoOutInOneWrite(t *testing.T) {
	_, c, sc, writes := acksTest(t, time.Hour)
	for seq := uint64(10); seq < 15; seq++ {
		sc.msg(fmt.Sprintf("a%d", seq), "alice", seq)
	}
	for range 5 {
		c.Ack(recvMsg(t, c).Seq)
	}
	sc.expectAcks(t, 10) // the first after a quiet spell goes at once
	if err := c.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	sc.expectAcks(t, 11, 12, 13, 14)
	if f := sc.next(t); f.Type != protocol.TypeTyping {
		t.Fatalf("next frame %s, want the typing frame after the acks", f.Type)
	}
	if n := writes.Load(); n != 2 {
		t.Fatalf("%d writes, want the first ack's and the rest's with the typing frame", n)
	}
}

// Acks waiting when nothing else is written go out once AckGather is up.
func TestGatheredAcksGoOutWhenTheirTimeIsUp(t *testing.T) {
	_, c, sc, writes := acksTest(t, 20*time.Millisecond)
	for seq := uint64(10); seq < 13; seq++ {
		sc.msg(fmt.Sprintf("a%d", seq), "alice", seq)
	}
	for range 3 {
		c.Ack(recvMsg(t, c).Seq)
	}
	sc.expectAcks(t, 10, 11, 12)
	if n := writes.Load(); n > 3 {
		t.Fatalf("%d writes for 3 acks", n)
	}
}

// Acks still waiting when their connection is lost are not written on the
// next one (the gateway there has not delivered those seqs yet): the
// messages come again, and the client acks them again.
func TestAcksWaitingWhenTheConnectionDropsAreMadeAgain(t *testing.T) {
	s, c, sc, _ := acksTest(t, time.Hour)
	sc.msg("a1", "alice", 10)
	sc.msg("a2", "alice", 11)
	c.Ack(recvMsg(t, c).Seq)
	c.Ack(recvMsg(t, c).Seq) // waits
	sc.expectAcks(t, 10)
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	for f := range sc.frames { // read until the first connection ended
		t.Fatalf("the first connection got %s %d after its ack of 10", f.Type, f.Seq)
	}

	sc2 := s.accept(t)
	sc2.msg("a2", "alice", 11)
	sc2.expectAcks(t, 11) // acked again on its redelivery...
	sc2.fence(t, c)       // ...and only then: the waiting one was dropped

	// An ack made on the new connection while the old one's wait was
	// still set goes out with the next frame, as ever.
	sc2.msg("a3", "alice", 12)
	c.Ack(recvMsg(t, c).Seq)
	if err := c.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	sc2.expectAcks(t, 12)
	if f := sc2.next(t); f.Type != protocol.TypeTyping {
		t.Fatalf("next frame %s, want the typing frame after the ack", f.Type)
	}
}

// An ack made on a new connection while a wait set on the old one is
// running goes out when that wait is up, on the new connection.
func TestAckOnANewConnectionGoesOutWhenAnOldWaitIsUp(t *testing.T) {
	s, c, sc, _ := acksTest(t, 200*time.Millisecond)
	sc.msg("a1", "alice", 10)
	sc.msg("a2", "alice", 11)
	c.Ack(recvMsg(t, c).Seq)
	c.Ack(recvMsg(t, c).Seq) // waits up to 200 ms
	sc.expectAcks(t, 10)
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	sc2 := s.accept(t)
	sc2.msg("a3", "alice", 12)
	c.Ack(recvMsg(t, c).Seq) // joins the wait set on the first connection
	sc2.expectAcks(t, 12)
}

// Acks waiting when the app closes the client go out before the close.
func TestAcksWaitingWhenTheAppClosesGoOutFirst(t *testing.T) {
	_, c, sc, _ := acksTest(t, time.Hour)
	sc.msg("a1", "alice", 10)
	sc.msg("a2", "alice", 11)
	c.Ack(recvMsg(t, c).Seq)
	c.Ack(recvMsg(t, c).Seq) // waits
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	sc.expectAcks(t, 10, 11)
	for f := range sc.frames { // until the connection ended
		t.Fatalf("after the acks: %s %d", f.Type, f.Seq)
	}
}
