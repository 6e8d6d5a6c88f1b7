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

// Receipts are handed to the app once per message, status and recipient,
// a delivered after the read of the same message is dropped as stale, and
// every receipt frame is acked, dropped or not.
func TestReceiptsAreHandedOnceAndAllAcked(t *testing.T) {
	s := newScript(t)
	c := s.dial(t, Options{}, newWaiter(true))
	sc := s.accept(t)

	sc.receipt("m1", protocol.StatusDelivered, "bob", 30)
	sc.receipt("m1", protocol.StatusDelivered, "bob", 31) // again
	sc.receipt("m1", protocol.StatusRead, "bob", 32)
	sc.receipt("m1", protocol.StatusDelivered, "carol", 33) // another recipient
	sc.receipt("m2", protocol.StatusRead, "bob", 34)
	sc.receipt("m2", protocol.StatusDelivered, "bob", 35) // stale after the read
	sc.receipt("m3", protocol.StatusDelivered, "bob", 36)
	sc.expectAcks(t, 30, 31, 32, 33, 34, 35, 36)
	want := []Receipt{
		{ID: "m1", Status: protocol.StatusDelivered, By: "bob"},
		{ID: "m1", Status: protocol.StatusRead, By: "bob"},
		{ID: "m1", Status: protocol.StatusDelivered, By: "carol"},
		{ID: "m2", Status: protocol.StatusRead, By: "bob"},
		{ID: "m3", Status: protocol.StatusDelivered, By: "bob"},
	}
	for _, w := range want {
		r := recvReceipt(t, c)
		if r.ID != w.ID || r.Status != w.Status || r.By != w.By || r.Device != "phone" {
			t.Fatalf("got %+v, want %+v", r, w)
		}
	}

	// Redelivered after a reconnect: acked again, not handed again.
	sc.closeWith(protocol.CloseSlow, "no pong")
	sc2 := s.accept(t)
	sc2.receipt("m1", protocol.StatusRead, "bob", 32)
	sc2.receipt("m4", protocol.StatusDelivered, "bob", 37)
	sc2.expectAcks(t, 32, 37)
	if r := recvReceipt(t, c); r.ID != "m4" {
		t.Fatalf("got %+v, want m4's", r)
	}
}
