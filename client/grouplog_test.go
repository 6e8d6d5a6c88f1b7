package client_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/client/localstore"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A group read from its log (docs/GROUP-LOG.md) through the SDK: its
// messages come with their place in the log (GSeq) and no Seq; AckGroup
// acks them, so a device back on a new connection gets only what came
// since (a message acked came again only if its ack was lost, and the
// SDK would drop it by id).
func TestSDKReadsGroupLog(t *testing.T) {
	n := tk.StartNATS(t)
	tk.StartGroupsOnLog(t, n, 2) // on its log from its create
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

// The SDK's store keeps the messages of a group read from its log, with
// their place in it: incoming ones, acked by place; one this user sent
// from another device as their own; the read place, from this device
// and from another (read_sync). A message an earlier process stored
// comes again after a restart: it is not handed to the app again, and
// acked.
func TestSDKStoreKeepsGroupLog(t *testing.T) {
	n := tk.StartNATS(t)
	tk.StartGroupsOnLog(t, n, 2)
	tk.StartFunctions(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	path := filepath.Join(t.TempDir(), "phone.db")
	openBob := func() (*client.Client, *localstore.Store) {
		st, err := localstore.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return tk.Dial(t, g.URL, "bob", "phone", func(o *client.Options) { o.Store = st }), st
	}
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob, st := openBob()
	tablet := tk.Dial(t, g.URL, "bob", "tablet")
	if _, err := alice.CreateGroup(ctx, "crowd", "Crowd", "bob"); err != nil {
		t.Fatal(err)
	}
	if m := tk.RecvMsg(t, bob, 15*time.Second); m.Event == nil {
		t.Fatalf("bob got %+v, want the create", m)
	} else {
		bob.Ack(m.Seq)
	}
	send := func(c *client.Client, id string) uint64 {
		sent, err := c.SendGroup(ctx, "crowd", id, tk.Body(id))
		if err != nil {
			t.Fatal(err)
		}
		return sent.Seq
	}
	next := func(c *client.Client, id string) client.Message {
		t.Helper()
		m := tk.RecvMsg(t, c, 15*time.Second)
		if m.ID != id || m.GSeq == 0 || m.Seq != 0 {
			t.Fatalf("got %+v, want %s from the log", m, id)
		}
		return m
	}
	m1, m2 := send(alice, "m1"), send(alice, "m2")
	next(bob, "m1")
	next(bob, "m2")
	b1 := send(tablet, "b1") // bob's own, from his other device
	next(bob, "b1")
	bob.AckGroup("crowd", m1)
	bob.ReadGroup("crowd", m1)

	ms, err := st.GroupMessages("crowd", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		if m.Event != nil {
			continue
		}
		got = append(got, fmt.Sprintf("%s from %q seq %d gseq %d acked %v", m.ID, m.From, m.Seq, m.GSeq, m.Acked))
	}
	want := []string{
		fmt.Sprintf(`m1 from "alice" seq 0 gseq %d acked true`, m1),
		fmt.Sprintf(`m2 from "alice" seq 0 gseq %d acked false`, m2),
		fmt.Sprintf(`b1 from "" seq %d gseq 0 acked false`, b1), // own: at the place its receipts name
	}
	if !slices.Equal(got, want) {
		t.Fatalf("bob's store holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	convs, err := st.Conversations()
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 1 || convs[0].Group != "crowd" || convs[0].ReadGSeq != m1 || convs[0].Unread != 1 {
		t.Fatalf("conversations %+v, want crowd read up to %d, m2 unread", convs, m1)
	}

	// m2 handed and not acked: after a restart it comes again, is kept
	// from the app and acked; m3 is what the app gets next.
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	bob, st = openBob()
	m3 := send(alice, "m3")
	if m := next(bob, "m3"); m.GSeq != m3 {
		t.Fatalf("m3 at %d, want %d", m.GSeq, m3)
	}
	if m, ok, err := st.GroupMessage("crowd", "alice", "m2"); err != nil || !ok || !m.Acked {
		t.Fatalf("m2 after the restart: %+v %v %v, want acked by the SDK", m, ok, err)
	}
	if st := bob.Stats(); st.DuplicatesDropped == 0 {
		t.Errorf("stats %+v: m2's repeat not counted", st)
	}
	// A read on the tablet reaches the phone's store.
	tablet.ReadGroup("crowd", m3)
	select {
	case rs := <-bob.ReadSyncs():
		if rs.GSeq != m3 {
			t.Fatalf("read_sync %+v, want up to %d", rs, m3)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no read_sync")
	}
	if at, err := st.GroupReadPlace("crowd"); err != nil || at != m3 {
		t.Fatalf("read place %d %v, want %d", at, err, m3)
	}
}
