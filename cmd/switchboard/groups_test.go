package main_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// allInOne starts the all-in-one on a data dir of its own and returns
// a dialer of its users' phones, and a context for the test's calls.
func allInOne(t *testing.T) (dial func(user string) *client.Client, ctx context.Context) {
	t.Helper()
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return func(user string) *client.Client {
		return tk.DialToken(t, p.WSURL, token(t, data, user, "phone"))
	}, ctx
}

// A group on the all-in-one, through the real gateway and the real groups
// function: members online and offline, a member added and one removed
// around messages, typing, and the refusals. What a member must not get
// is proven by a marker that must arrive next.
func TestGroupsEndToEnd(t *testing.T) {
	dial, ctx := allInOne(t)
	const wait = 15 * time.Second

	// next returns c's next message, acked.
	next := func(c *client.Client) client.Message {
		t.Helper()
		m := tk.RecvMsg(t, c, wait)
		c.Ack(m.Seq)
		return m
	}
	isEvent := func(m client.Message, op string, users ...string) {
		t.Helper()
		if m.Group != "friends" || m.Event == nil || m.Event.Op != op || !slices.Equal(m.Event.Users, users) {
			t.Fatalf("got %+v (event %+v), want the %s %v system message", m, m.Event, op, users)
		}
	}
	isMsg := func(m client.Message, from, id string) {
		t.Helper()
		if m.Group != "friends" || m.Event != nil || m.From != from || m.ID != id {
			t.Fatalf("got %+v, want %s's group message %s", m, from, id)
		}
	}

	alice, bob := dial("alice"), dial("bob")
	g, err := alice.CreateGroup(ctx, "friends", "Friends", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Members) != 3 || !g.IsMember("carol") {
		t.Fatalf("created %+v", g)
	}
	isEvent(next(bob), "create", "bob", "carol")

	// Refusals change nothing: bob is no admin, mallory no member.
	var se *client.ServerError
	if _, err := bob.AddMembers(ctx, "friends", "mallory"); !errors.As(err, &se) || se.Code != protocol.ErrNotAdmin {
		t.Fatalf("a non-admin's add: %v", err)
	}
	mallory := dial("mallory")
	if _, err := mallory.SendGroup(ctx, "friends", "x1", tk.Body("let me in")); !errors.As(err, &se) || se.Code != protocol.ErrNotMember {
		t.Fatalf("a non-member's send: %v", err)
	}
	if _, err := alice.SendGroup(ctx, "nosuch", "x2", tk.Body("?")); !errors.As(err, &se) || se.Code != protocol.ErrUnknownGroup {
		t.Fatalf("a send to no group: %v", err)
	}

	if _, err := alice.SendGroup(ctx, "friends", "g1", tk.Body("before dave")); err != nil {
		t.Fatal(err)
	}
	isMsg(next(bob), "alice", "g1")

	// Typing in the group reaches bob, not the typist.
	if err := alice.SendTypingGroup("friends"); err != nil {
		t.Fatal(err)
	}
	select {
	case ty := <-bob.TypingEvents():
		if ty.From != "alice" || ty.Group != "friends" {
			t.Fatalf("typing %+v", ty)
		}
	case <-time.After(wait):
		t.Fatal("bob never saw alice typing in the group")
	}

	// dave, added after g1, gets the add and what follows, not g1.
	if _, err := alice.AddMembers(ctx, "friends", "dave"); err != nil {
		t.Fatal(err)
	}
	isEvent(next(bob), "add", "dave")
	if _, err := alice.SendGroup(ctx, "friends", "g2", tk.Body("with dave")); err != nil {
		t.Fatal(err)
	}
	isMsg(next(bob), "alice", "g2")
	dave := dial("dave")
	isEvent(next(dave), "add", "dave")
	isMsg(next(dave), "alice", "g2")

	// bob, removed, gets the removal and nothing after it.
	if _, err := alice.RemoveMembers(ctx, "friends", "bob"); err != nil {
		t.Fatal(err)
	}
	isEvent(next(bob), "remove", "bob")
	isEvent(next(dave), "remove", "bob")
	for _, id := range []string{"g3", "g4"} {
		if _, err := alice.SendGroup(ctx, "friends", id, tk.Body("without bob")); err != nil {
			t.Fatal(err)
		}
		isMsg(next(dave), "alice", id)
	}
	// g3 and g4 were fanned out in full before dave had g4 (a partition
	// handles one message at a time), so a copy of either for bob would
	// be in his inbox ahead of this one.
	if _, err := alice.Send(ctx, "bob", "fence", tk.Body("after g4")); err != nil {
		t.Fatal(err)
	}
	if m := next(bob); m.Group != "" || m.ID != "fence" {
		t.Fatalf("bob, removed, got %+v before the marker", m)
	}
	if _, err := bob.SendGroup(ctx, "friends", "b1", tk.Body("still here?")); !errors.As(err, &se) || se.Code != protocol.ErrNotMember {
		t.Fatalf("a removed member's send: %v", err)
	}

	// carol was never online: she gets the group's story as it concerns
	// her, in the log's order, after the fact.
	carol := dial("carol")
	isEvent(next(carol), "create", "bob", "carol")
	isMsg(next(carol), "alice", "g1")
	isEvent(next(carol), "add", "dave")
	isMsg(next(carol), "alice", "g2")
	isEvent(next(carol), "remove", "bob")
	isMsg(next(carol), "alice", "g3")
	isMsg(next(carol), "alice", "g4")

	// The record says who is in.
	g, err = carol.GroupInfo(ctx, "friends")
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, m := range g.Members {
		in = append(in, m.User)
	}
	slices.Sort(in)
	if !slices.Equal(in, []string{"alice", "carol", "dave"}) {
		t.Fatalf("members %v", in)
	}
}
