package client

import (
	"testing"

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
