package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// Every device of a user tells the same story, on the all-in-one with
// its gateway, receipts and groups functions: what alice sends from her
// phone reaches her laptop as hers, in order, online and after the laptop
// was away, with its ticks; her phone does not get it back; reading on
// bob's phone marks the chat read on bob's laptop once and sends alice one
// read receipt; her group message reaches her laptop too. What a device
// must not get is proven by a marker that must arrive next.
func TestOwnMessagesAndReadsOnEveryDevice(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	dial := func(user, device string) *client.Client {
		return tk.DialToken(t, p.WSURL, token(t, data, user, device))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const wait = 15 * time.Second

	phone, laptop := dial("alice", "phone"), dial("alice", "laptop")
	bobPhone, bobLaptop := dial("bob", "phone"), dial("bob", "laptop")

	// next returns c's next message, acked, and fails unless it is from
	// `from` with id.
	next := func(c *client.Client, from, id string) client.Message {
		t.Helper()
		m := tk.NextMsgIs(t, c, from, id, wait)
		c.Ack(m.Seq)
		return m
	}
	send := func(c *client.Client, to, id string) client.Sent {
		t.Helper()
		s, err := c.Send(ctx, to, id, tk.Body("hi "+id))
		if err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		return s
	}
	// own checks that m is alice's message id to bob sent from her phone.
	own := func(m client.Message, id string, sent uint64) {
		t.Helper()
		if m.From != "alice" || m.Device != "phone" || m.To != "bob" || m.ID != id || m.SentSeq != sent || string(m.Body) != `"hi `+id+`"` {
			t.Fatalf("got %+v, want alice's %s to bob from her phone, sent at %d", m, id, sent)
		}
	}
	// ticks waits until c has had status for every one of ids.
	ticks := func(c *client.Client, status string, ids ...string) {
		t.Helper()
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		for len(want) > 0 {
			r := tk.RecvReceipt(t, c, wait)
			if r.Status == status && r.By == "bob" {
				delete(want, r.ID)
			}
		}
	}

	// Online: the laptop shows the phone's messages as alice's, in order.
	var ids []string
	sent := map[string]uint64{}
	for i := range 5 {
		id := fmt.Sprintf("m%d", i)
		ids = append(ids, id)
		sent[id] = send(phone, "bob", id).Seq
	}
	var last uint64
	for _, id := range ids {
		last = next(bobPhone, "alice", id).Seq
		next(bobLaptop, "alice", id)
	}
	for _, id := range ids {
		own(next(laptop, "alice", id), id, sent[id])
	}
	// Their delivered ticks reach both of alice's devices.
	ticks(phone, protocol.StatusDelivered, ids...)
	ticks(laptop, protocol.StatusDelivered, ids...)
	// The phone does not get its own messages back: bob's marker is its
	// next message (the copies are stored: the laptop had them).
	send(bobPhone, "alice", "f1")
	next(phone, "bob", "f1")
	next(laptop, "bob", "f1")
	if m := next(bobLaptop, "bob", "f1"); m.To != "alice" || m.Device != "phone" {
		t.Fatalf("bob's laptop got %+v, want his own f1 to alice", m)
	}

	// Reading on bob's phone: one read_sync on his laptop, one read
	// receipt at alice (covering all five), none back on his phone.
	bobPhone.Read(last)
	select {
	case rs := <-bobLaptop.ReadSyncs():
		if rs.Peer != "alice" || rs.Device != "phone" || rs.Seq != last {
			t.Fatalf("read_sync %+v, want alice's chat read to %d on the phone", rs, last)
		}
	case <-time.After(wait):
		t.Fatal("no read_sync on bob's laptop")
	}
	ticks(phone, protocol.StatusRead, ids...)
	ticks(laptop, protocol.StatusRead, ids...)
	f2 := send(phone, "bob", "f2")
	next(bobPhone, "alice", "f2")
	next(bobLaptop, "alice", "f2")
	own(next(laptop, "alice", "f2"), "f2", f2.Seq)
	if n := len(bobLaptop.ReadSyncs()); n != 0 {
		t.Fatalf("%d more read_syncs on bob's laptop, want none", n)
	}
	if n := len(bobPhone.ReadSyncs()); n != 0 {
		t.Fatalf("%d read_syncs on bob's phone, which read", n)
	}
	if n := countInbox(t, p, data, "alice", func(h nats.Header) bool {
		return h.Get(contract.HdrKind) == contract.KindReceipt && h.Get(contract.HdrStatus) == protocol.StatusRead
	}); n != 1 {
		t.Fatalf("%d read receipts stored for alice, want 1", n)
	}
	ticks(phone, protocol.StatusDelivered, "f2")
	ticks(laptop, protocol.StatusDelivered, "f2")

	// Offline: what the phone sends while the laptop is away reaches it
	// on its return, in order, with the ticks it missed.
	if err := laptop.Close(); err != nil {
		t.Fatal(err)
	}
	var away []string
	for i := range 3 {
		id := fmt.Sprintf("o%d", i)
		away = append(away, id)
		sent[id] = send(phone, "bob", id).Seq
	}
	for _, id := range away {
		next(bobPhone, "alice", id)
		next(bobLaptop, "alice", id)
	}
	ticks(phone, protocol.StatusDelivered, away...)
	laptop = dial("alice", "laptop")
	for _, id := range away {
		own(next(laptop, "alice", id), id, sent[id])
	}
	ticks(laptop, protocol.StatusDelivered, away...)

	// Groups: alice's group message reaches her laptop as hers, not her
	// phone.
	if _, err := phone.CreateGroup(ctx, "fam", "Fam", "bob"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{phone, laptop, bobPhone, bobLaptop} {
		if m := tk.RecvMsg(t, c, wait); m.Group != "fam" || m.Event == nil {
			t.Fatalf("got %+v, want the group's create", m)
		} else {
			c.Ack(m.Seq)
		}
	}
	if _, err := phone.SendGroup(ctx, "fam", "g1", tk.Body("hi all")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{laptop, bobPhone, bobLaptop} {
		if m := next(c, "alice", "g1"); m.Group != "fam" || m.Device != "phone" || m.To != "" {
			t.Fatalf("got %+v, want alice's g1 in fam from her phone", m)
		}
	}
	send(bobPhone, "alice", "f3")
	next(phone, "bob", "f3")
	next(laptop, "bob", "f3")
}

// countInbox counts the messages in user's inbox whose headers match, read
// as the operator.
func countInbox(t *testing.T, p *proc, data, user string, match func(nats.Header) bool) int {
	t.Helper()
	return tk.CountInbox(t, operatorJS(t, p, data), user, match)
}

// operatorJS connects to p's NATS as the operator, with the key in data,
// until the test ends.
func operatorJS(t *testing.T, p *proc, data string) jetstream.JetStream {
	t.Helper()
	opts, err := natsauth.RoleOptions(natsauth.Operator, filepath.Join(data, "nats"), "")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(p.NATSURL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
