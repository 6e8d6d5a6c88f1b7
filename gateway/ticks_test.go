package gateway_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// Tick gathering (ticks.go): a busy device asks for its delivered ticks
// at most once per interval; a quiet one, one holding half its
// MaxInflight unsettled, and one that stops, ask at once.

// ackNext reads the next frame, which must be a msg with seq, and acks it.
func (r *raw) ackNext(seq uint64) {
	r.t.Helper()
	if f := r.next(); f.Type != protocol.TypeMsg || f.Seq != seq {
		r.t.Fatalf("got %+v, want msg %d", *f, seq)
	}
	r.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, seq)))
}

// expectReceipt reads the next frame, which must be a delivered receipt
// for the stretch of the recipient's inbox that ends at last and holds
// first: a stretch starts just past what was settled before it (past
// after, at least), which may be before first.
func (r *raw) expectReceipt(after, first, last uint64) {
	r.t.Helper()
	f := r.next()
	if f.Type != protocol.TypeReceipt || f.Status != protocol.StatusDelivered || f.FromSeq <= after || f.FromSeq > first || f.ToSeq != last {
		r.t.Fatalf("got %+v, want a delivered receipt from after %d to %d..%d", *f, after, first, last)
	}
	r.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)))
}

// closeNormally sends a close frame and waits for the gateway's.
func (r *raw) closeNormally() {
	r.t.Helper()
	_ = r.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(wait))
	_ = r.ws.SetReadDeadline(time.Now().Add(wait))
	for {
		if _, _, err := r.ws.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				r.t.Fatalf("close: %v", err)
			}
			return
		}
	}
}

// firstTick starts a gateway with a one-minute TickInterval (and
// maxInflight, unless 0), connects alice and bob, and has bob ack alice's
// first message, s1: its tick comes at once, the first after a quiet
// spell.
func firstTick(t *testing.T, maxInflight int) (alice, bob *raw, s1 uint64) {
	t.Helper()
	return firstTickQuiet(t, maxInflight, 0)
}

// firstTickQuiet is firstTick with TickQuiet quiet (0: the interval is
// waited out).
func firstTickQuiet(t *testing.T, maxInflight int, quiet time.Duration) (alice, bob *raw, s1 uint64) {
	t.Helper()
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.TickInterval = time.Minute
	cfg.TickQuiet = quiet
	if maxInflight > 0 {
		cfg.MaxInflight = maxInflight
	}
	g := tk.StartGateway(t, n, cfg)
	alice = connectRaw(t, g, "alice", "phone")
	bob = connectRaw(t, g, "bob", "phone")
	s1 = alice.send("bob", "m1").Seq
	bob.ackNext(s1)
	alice.expectReceipt(0, s1, s1)
	return alice, bob, s1
}

// The first ack after a quiet spell is ticked at once; acks that follow
// within the interval are gathered into one receipt, asked for at once
// when the session stops.
func TestBusyDeviceGathersTicksIntoOneReceipt(t *testing.T) {
	alice, bob, s1 := firstTick(t, 0)

	// Within the interval: nothing is asked yet, so alice's frames are
	// her sends' only.
	var first, last uint64
	for i := 2; i <= 4; i++ {
		last = alice.send("bob", fmt.Sprintf("m%d", i)).Seq
		if first == 0 {
			first = last
		}
		bob.ackNext(last)
	}
	bob.closeNormally()
	alice.expectReceipt(s1, first, last)
}

// Gathering ends once the acks stop for TickQuiet: a burst's last acked
// messages are ticked soon after it, though the device still holds one
// unacked (so its stream has not ended), the interval (a minute) is far
// from over and the session goes on.
func TestBurstTickedOnceItsAcksStop(t *testing.T) {
	alice, bob, s1 := firstTickQuiet(t, 0, 50*time.Millisecond)
	seqs := burst(alice, bob, 2)
	expectTickedThrough(t, alice, s1, seqs[1])
}

// A device that has acked everything it was given, and whose deliveries
// have paused, is past its stream's end: its ticks are asked for then,
// though its acks stopped far less than TickQuiet ago (a minute, as is
// the interval) and the session goes on.
func TestBurstTickedOnceItsDeliveriesStop(t *testing.T) {
	alice, bob, s1 := firstTickQuiet(t, 0, time.Minute)
	seqs := burst(alice, bob, 3)
	expectTickedThrough(t, alice, s1, seqs[2])
}

// burst has alice send bob three messages and bob ack the first acked
// of them, and returns their seqs.
func burst(alice, bob *raw, acked int) []uint64 {
	var seqs []uint64
	for i := 2; i <= 4; i++ {
		seqs = append(seqs, alice.send("bob", fmt.Sprintf("m%d", i)).Seq)
	}
	for _, q := range seqs[:acked] {
		bob.ackNext(q)
	}
	return seqs
}

// expectTickedThrough reads alice's delivered receipts, acking each,
// until they cover everything from just past after to through: one
// receipt, or more if the acks or deliveries came further apart than the
// quiet (a slow machine), each from just past the one before.
func expectTickedThrough(t *testing.T, alice *raw, after, through uint64) {
	t.Helper()
	covered := after
	for covered < through {
		f := alice.next()
		if f.Type != protocol.TypeReceipt || f.Status != protocol.StatusDelivered || f.FromSeq <= covered || f.ToSeq < f.FromSeq {
			t.Fatalf("got %+v, want a delivered receipt from after %d", *f, covered)
		}
		alice.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)))
		covered = f.ToSeq
	}
	if covered != through {
		t.Fatalf("receipts up to %d, want %d", covered, through)
	}
}

// A device that holds half its MaxInflight acked but unsettled asks at
// once, so gathering never holds its delivery back: three times
// MaxInflight messages come while the interval is far from over, each
// settled in a receipt asked then, but for a last stretch shorter than
// half MaxInflight, which waits for the interval or the session's end.
func TestTickGatheringNeverHoldsDeliveryBack(t *testing.T) {
	alice, bob, s1 := firstTick(t, 4)

	// alice's sends are stored first, so her frames are sents until the
	// receipts begin.
	var seqs []uint64
	for i := 2; i <= 13; i++ {
		seqs = append(seqs, alice.send("bob", fmt.Sprintf("m%d", i)).Seq)
	}
	for _, q := range seqs {
		bob.ackNext(q) // each within wait, though the interval is a minute
	}
	// Had the unsettled held delivery back, bob would have stopped at
	// MaxInflight. Ending the session asks for whatever is left.
	bob.closeNormally()
	// Each receipt covers a stretch from just past the one before.
	covered := s1
	for len(seqs) > 0 {
		f := alice.next()
		if f.Type != protocol.TypeReceipt || f.Status != protocol.StatusDelivered || f.FromSeq <= covered || f.FromSeq > seqs[0] || f.ToSeq < seqs[0] {
			t.Fatalf("got %+v, want a delivered receipt from after %d to at least %d", *f, covered, seqs[0])
		}
		alice.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)))
		covered = f.ToSeq
		for len(seqs) > 0 && seqs[0] <= covered {
			seqs = seqs[1:]
		}
	}
}

// Group copies gather the same way: the member's position in the group
// moves once for copies acked within the interval (a watch sees every
// write of it).
func TestGroupPositionsGatherToo(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.TickInterval = time.Minute
	cfg.TickQuiet = 0
	g := tk.StartGateway(t, n, cfg)
	putGroup(t, n, "friends", "alice", "bob")
	groups, err := jetstream.New(n.Connect(t, natsauth.Groups))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ticks, err := n.JS.KeyValue(ctx, contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ticks.Watch(ctx, contract.GroupTickKey("friends", "bob"), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	position := func() string {
		t.Helper()
		select {
		case e := <-w.Updates():
			return string(e.Value())
		case <-ctx.Done():
			t.Fatal("no position written")
			return ""
		}
	}
	bob := connectRaw(t, g, "bob", "phone")

	bob.ackNext(copyInto(t, groups, "bob", contract.KindMsg, "alice", "phone", "g1", "friends", 51, []byte(`"one"`)))
	if p := position(); p != `{"d":51,"r":0}` {
		t.Fatalf("bob's position %s, want delivered 51 at once", p)
	}
	bob.ackNext(copyInto(t, groups, "bob", contract.KindMsg, "alice", "phone", "g2", "friends", 52, []byte(`"two"`)))
	bob.ackNext(copyInto(t, groups, "bob", contract.KindMsg, "alice", "phone", "g3", "friends", 53, []byte(`"three"`)))
	bob.closeNormally()
	if p := position(); p != `{"d":53,"r":0}` {
		t.Fatalf("bob's position %s, want delivered 53 in one write", p)
	}
}
