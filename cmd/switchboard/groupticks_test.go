package main_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// Group receipts on the all-in-one: the sender's delivered tick comes
// once the last member's device acked, its read once the last member
// read (a member with read receipts off included, as WhatsApp does in
// groups), one event per message; message info for the sender only.
func TestGroupReceiptsEndToEnd(t *testing.T) {
	dial, ctx := allInOne(t)
	const wait = 15 * time.Second

	alice, bob, carol := dial("alice"), dial("bob"), dial("carol")
	off := false
	if _, err := carol.Settings(ctx, client.SettingsChange{ReadReceipts: &off}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateGroup(ctx, "club", "Club", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol} {
		m := tk.RecvMsg(t, c, wait)
		if m.Event == nil || m.Event.Op != "create" {
			t.Fatalf("got %+v, want the create", m)
		}
		c.Ack(m.Seq)
	}
	s1, err := alice.SendGroup(ctx, "club", "c1", tk.Body("one"))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := alice.SendGroup(ctx, "club", "c2", tk.Body("two"))
	if err != nil {
		t.Fatal(err)
	}
	recv2 := func(c *client.Client) (a, b client.Message) {
		t.Helper()
		a, b = tk.RecvMsg(t, c, wait), tk.RecvMsg(t, c, wait)
		if a.ID != "c1" || b.ID != "c2" || a.Group != "club" {
			t.Fatalf("got %s, %s, want c1, c2 in club", a.ID, b.ID)
		}
		return a, b
	}
	b1, b2 := recv2(bob)
	c1, c2 := recv2(carol)
	// A tick names the member whose move made it due: carol's, the
	// last. Bob's request may still be settling when carol's position
	// lands (the status below sees his position as soon as it is written),
	// and then it finds everyone there and names bob: each request
	// counts its own member as the mover. Which one is told is a race
	// between two moves at once; that no tick comes before the last
	// member's move is the receipts function's own test
	// (TestGroupTicksWaitForTheLastMember).
	completer := func(by string) bool { return by == "carol" || by == "bob" }

	// bob's device acks; carol's holds both.
	bob.Ack(b1.Seq)
	bob.Ack(b2.Seq)
	status := func(seq uint64, want string) client.GroupStatus {
		t.Helper()
		var st client.GroupStatus
		tk.WaitFor(t, wait, func() error {
			var err error
			if st, err = alice.GroupStatus(ctx, "club", seq); err != nil {
				return err
			}
			if got := fmt.Sprint(st.Members); got != want {
				return fmt.Errorf("members %s, want %s", got, want)
			}
			return nil
		})
		return st
	}
	if st := status(s2.Seq, "map[bob:{true false} carol:{false false}]"); st.AllDelivered || st.AllRead {
		t.Fatalf("status %+v: all delivered before carol had it", st)
	}
	carol.Ack(c1.Seq)
	carol.Ack(c2.Seq)
	for _, id := range []string{"c1", "c2"} {
		r := tk.RecvReceipt(t, alice, wait)
		if r.ID != id || r.Status != protocol.StatusDelivered || r.Group != "club" || !completer(r.By) {
			t.Fatalf("alice's receipt %+v, want %s delivered in club, made so by carol (or bob)", r, id)
		}
	}

	// Reads: bob first, then carol.
	bob.Read(b2.Seq)
	if st := status(s2.Seq, "map[bob:{true true} carol:{true false}]"); st.AllRead {
		t.Fatalf("status %+v: all read before carol read", st)
	}
	carol.Read(c2.Seq)
	for _, id := range []string{"c1", "c2"} {
		r := tk.RecvReceipt(t, alice, wait)
		if r.ID != id || r.Status != protocol.StatusRead || r.Group != "club" || !completer(r.By) {
			t.Fatalf("alice's receipt %+v, want %s read in club, made so by carol (or bob)", r, id)
		}
	}
	if st := status(s1.Seq, "map[bob:{true true} carol:{true true}]"); !st.AllDelivered || !st.AllRead {
		t.Fatalf("status %+v, want all delivered and read", st)
	}
	// Message info is the sender's only.
	var se *client.ServerError
	if _, err := bob.GroupStatus(ctx, "club", s1.Seq); !errors.As(err, &se) || se.Code != protocol.ErrUnknownSeq {
		t.Fatalf("bob asking about alice's message: %v, want unknown_seq", err)
	}
}

// A member who never gets a message stops holding its tick back once
// removed, though nobody's position in the group moves after: the
// sender's delivered tick comes from the removal itself, naming the last
// member to get there, on no device.
func TestGroupReceiptAfterARemovalInAQuietGroup(t *testing.T) {
	dial, ctx := allInOne(t)
	const wait = 15 * time.Second

	alice, bob := dial("alice"), dial("bob") // carol stays away
	if _, err := alice.CreateGroup(ctx, "club", "Club", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	if m := tk.RecvMsg(t, bob, wait); m.Event == nil || m.Event.Op != "create" {
		t.Fatalf("bob got %+v, want the create", m)
	} else {
		bob.Ack(m.Seq)
	}
	s1, err := alice.SendGroup(ctx, "club", "c1", tk.Body("one"))
	if err != nil {
		t.Fatal(err)
	}
	m := tk.RecvMsg(t, bob, wait)
	if m.ID != "c1" {
		t.Fatalf("bob got %+v, want c1", m)
	}
	bob.Ack(m.Seq)
	tk.WaitFor(t, wait, func() error { // bob's position is in
		st, err := alice.GroupStatus(ctx, "club", s1.Seq)
		if err != nil {
			return err
		}
		if !st.Members["bob"].Delivered {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if _, err := alice.RemoveMembers(ctx, "club", "carol"); err != nil {
		t.Fatal(err)
	}
	// Bob's device does not ack the removal's system message: no position
	// moves in the group from here on.
	r := tk.RecvReceipt(t, alice, wait)
	if r.ID != "c1" || r.Status != protocol.StatusDelivered || r.Group != "club" || r.By != "bob" || r.Device != "" {
		t.Fatalf("alice's receipt %+v, want c1 delivered in club by bob on no device", r)
	}
}
