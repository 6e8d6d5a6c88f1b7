package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/functions/groups"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A group read from its log (docs/GROUP-LOG.md) through the SDK: its
// messages come with their place in the log (GSeq) and no Seq; AckGroup
// acks them, so a device back on a new connection gets only what came
// since (a message acked came again only if its ack was lost, and the
// SDK would drop it by id).
func TestSDKReadsGroupLog(t *testing.T) {
	n := tk.StartNATS(t)
	nc := n.Connect(t, natsauth.Groups)
	js, _ := jetstream.New(nc)
	cfg := groups.DefaultConfig()
	cfg.LogMembers = 2 // on its log from its create
	s, err := groups.Start(context.Background(), nc, js, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	tk.StartFunctions(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := alice.CreateGroup(ctx, "crowd", "Crowd", "bob"); err != nil {
		t.Fatal(err)
	}
	ack := func(c *client.Client, m client.Message) {
		if m.GSeq != 0 {
			c.AckGroup(m.Group, m.GSeq)
		} else {
			c.Ack(m.Seq)
		}
	}
	if m := tk.RecvMsg(t, bob, 15*time.Second); m.Event == nil || m.Seq == 0 {
		t.Fatalf("bob got %+v, want the create as a copy", m)
	} else {
		ack(bob, m)
	}
	send := func(id string) uint64 {
		sent, err := alice.SendGroup(ctx, "crowd", id, tk.Body(id))
		if err != nil {
			t.Fatal(err)
		}
		return sent.Seq
	}
	at := send("m1")
	if m := tk.RecvMsg(t, bob, 15*time.Second); m.ID != "m1" || m.GSeq != at || m.Seq != 0 || m.Group != "crowd" {
		t.Fatalf("bob got %+v, want m1 from the log at %d", m, at)
	} else {
		ack(bob, m)
	}
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	at = send("m2")
	bob = tk.Dial(t, g.URL, "bob", "phone")
	laptop := tk.Dial(t, g.URL, "bob", "laptop") // a second device, for the read_sync below
	m := tk.RecvMsg(t, bob, 15*time.Second)
	if m.ID != "m2" || m.GSeq != at {
		t.Fatalf("bob back got %+v, want m2 at %d: m1 was acked", m, at)
	}
	// Read by its place: alice hears that every member read m2 (and so
	// m1), after the delivered ticks.
	bob.AckGroup(m.Group, m.GSeq)
	bob.ReadGroup(m.Group, m.GSeq)
	read := map[string]bool{}
	for !read["m2"] {
		r := tk.RecvReceipt(t, alice, 15*time.Second)
		if r.Group != "crowd" {
			t.Fatalf("alice got %+v", r)
		}
		if r.Status == "read" {
			read[r.ID] = true
		}
	}
	if !read["m1"] {
		t.Fatalf("alice heard m2 read before m1: %v", read)
	}
	// bob's other device hears of the read by its place in the log.
	select {
	case rs := <-laptop.ReadSyncs():
		if rs.Group != "crowd" || rs.GSeq != m.GSeq || rs.Seq != 0 || rs.Device != "phone" {
			t.Fatalf("bob's laptop got %+v, want a read of crowd up to %d on the phone", rs, m.GSeq)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("bob's laptop heard nothing of the read")
	}
}
