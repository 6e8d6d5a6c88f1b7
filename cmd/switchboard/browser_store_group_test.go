package main_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-im/switchboard/client"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// The chat page keeps its group chats in the SDK's local store too: what
// is typed in a group while the gateway is out of reach, the group's
// history with its ticks, and the reads made on the user's other devices.

// groupBadge is a JavaScript expression: the unread badge of group.
func groupBadge(group string) string {
	return fmt.Sprintf(`document.querySelector('#contacts li[data-group=%q] .badge')?.textContent`, group)
}

// fanOut is how long a member may wait for a group's message: after the
// all-in-one is killed and started again, the groups function's
// partition may hold the first message for its durable's ack wait (30
// s) before fanning it out. A deadline for a broken server, never a
// window that passes a test.
const fanOut = 45 * time.Second

// recvGroup waits for the next message of c's in group, skipping none:
// a system message is op:<op>, a message its body.
func recvGroup(t *testing.T, c *client.Client, group string) (client.Message, string) {
	t.Helper()
	m := tk.RecvMsg(t, c, fanOut)
	if m.Group != group {
		t.Fatalf("got a message in %q (%s from %s), want one in %s", m.Group, m.ID, m.From, group)
	}
	if m.Event != nil {
		return m, "op:" + m.Event.Op
	}
	return m, string(m.Body)
}

// Group messages typed while the gateway is out of reach are kept across
// a reload made while it is still away, and sent once it is back, in
// order, under their ids; one whose "sent" never reached the page is
// sent again after a reload and stored once. Each member, connecting
// afterwards, gets each exactly once, in order. The members' reads tick
// them read, and a reload shows the group's history with the same ticks.
func TestBrowserStoreKeepsOfflineGroupMessagesAcrossReloads(t *testing.T) {
	data := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"--data", data, "--nats-listen", "127.0.0.1:0", "--listen", addr}
	p := start(t, args...)
	b := tk.StartBrowser(t)
	alice := signIn(t, b, p, "alice", "laptop", dropSent)
	if code := createGroup(t, alice, "friends", "Friends", "bob, carol"); code != "" {
		t.Fatalf("the create was refused: %s", code)
	}
	say(alice, "before")
	alice.WaitFor(seen, "before sent", outgoing("before")+` === 'sent'`)

	// The gateway goes away; the page's files stay reachable.
	p.kill()
	stop := standIn(t, addr)
	alice.WaitFor(seen, "alice's page reconnecting", `document.getElementById('conn').dataset.state === 'reconnecting'`)
	say(alice, "offline 1")
	say(alice, "offline 2")
	alice.WaitFor(seen, "both pending", outgoing("offline 1")+` === 'pending' && `+outgoing("offline 2")+` === 'pending'`)
	alice.WaitFor(seen, "both in the store's outbox", kept+`.then((v) => v === 'offline 1,offline 2')`)

	// A reload while the gateway is still away: the page works offline
	// from its store, with the group's history, and takes more.
	alice.Navigate(p.HTTP + "/")
	alice.WaitFor(seen, "the page offline", `!document.getElementById('app').hidden && document.getElementById('conn').dataset.state === 'reconnecting'`)
	alice.WaitFor(seen, "the group back", `document.getElementById('chat-head').dataset.group === 'friends' && document.getElementById('peer').textContent === 'Friends'`)
	if got, want := tk.Eval[string](alice, conversation), "out before sent\nout offline 1 pending\nout offline 2 pending"; got != want {
		t.Fatalf("after the offline reload the page shows\n%s\nwant\n%s", got, want)
	}
	if n := tk.Eval[int](alice, notices("You created the group “Friends” with bob and carol")); n != 1 {
		t.Fatalf("after the offline reload the page shows the create notice %d times", n)
	}
	say(alice, "offline 3")
	alice.WaitFor(seen, "the third in the store's outbox", kept+`.then((v) => v === 'offline 1,offline 2,offline 3')`)

	// The gateway is back: the page connects and sends the outbox.
	stop()
	p = start(t, args...)
	alice.WaitFor(seen, "alice connected", `document.getElementById('conn').dataset.state === 'connected'`)
	for _, text := range []string{"offline 1", "offline 2", "offline 3"} {
		alice.WaitFor(seen, text+" sent", outgoing(text)+` === 'sent'`)
	}
	alice.WaitFor(seen, "the outbox empty", kept+`.then((v) => v === '')`)

	// A group send the server stores whose "sent" the page never sees,
	// then a reload: sent again under its id, and answered dup.
	alice.Do(chromedp.Evaluate[chromedp.Void](`window.__dropSent = true`))
	say(alice, "unconfirmed")
	alice.WaitFor(seen, "its sent dropped", `window.__dropped.length === 1`)
	alice.Navigate(p.HTTP + "/")
	alice.WaitFor(seen, "signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
	alice.WaitFor(seen, "unconfirmed sent after the reload", outgoing("unconfirmed")+` === 'sent'`)
	alice.WaitFor(seen, "the outbox empty", kept+`.then((v) => v === '')`)

	// Each member's first device gets the group's log once, in order, and
	// the fence next.
	texts := []string{"before", "offline 1", "offline 2", "offline 3", "unconfirmed"}
	members := map[string]*client.Client{}
	for _, user := range []string{"bob", "carol"} {
		c := tk.DialToken(t, p.WSURL, token(t, data, user, "phone"))
		members[user] = c
		var got []string
		for range len(texts) + 1 {
			m, what := recvGroup(t, c, "friends")
			got = append(got, what)
			c.Ack(m.Seq)
		}
		want := "op:create"
		for _, text := range texts {
			want += " " + string(tk.Body(text))
		}
		if strings.Join(got, " ") != want {
			t.Fatalf("%s got\n%s\nwant\n%s", user, strings.Join(got, " "), want)
		}
	}
	say(alice, "fence")
	for user, c := range members {
		m, what := recvGroup(t, c, "friends")
		if what != string(tk.Body("fence")) {
			t.Fatalf("%s got %s after the last message, want the fence", user, what)
		}
		if d := c.Stats().DuplicatesDropped; d != 0 {
			t.Fatalf("%s's inbox held %d second copies", user, d)
		}
		c.Ack(m.Seq)
		c.Read(m.Seq)
	}
	for _, text := range append(texts, "fence") {
		alice.WaitFor(seen, text+" read", outgoing(text)+` === 'read'`)
	}

	// A reload shows the same group history, with the same ticks.
	want := tk.Eval[string](alice, conversation)
	if n := strings.Count(want, "\n") + 1; n != 6 {
		t.Fatalf("the group shows %d messages, want 6:\n%s", n, want)
	}
	alice.Navigate(p.HTTP + "/")
	alice.WaitFor(seen, "signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
	alice.WaitFor(seen, "the group back", `document.getElementById('chat-head').dataset.group === 'friends'`)
	if got := tk.Eval[string](alice, conversation); got != want {
		t.Fatalf("after the reload the page shows\n%s\nwant\n%s", got, want)
	}
}

// A group read on alice's phone clears the group's unread badge on her
// laptop's page; a group message she sends from the phone shows there
// as hers, with its ticks; both are kept in the page's store and shown
// the same after a reload.
func TestBrowserStoreGroupReadOnAnotherDevice(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	b := tk.StartBrowser(t)
	laptop := signIn(t, b, p, "alice", "laptop")
	openChat(laptop, "carol") // looking elsewhere
	phone := tk.DialToken(t, p.WSURL, token(t, data, "alice", "phone"))
	bob := tk.DialToken(t, p.WSURL, token(t, data, "bob", "phone"))

	ctx, cancel := context.WithTimeout(context.Background(), seen)
	defer cancel()
	if _, err := bob.GroupOp(ctx, "create", "friends", "Friends", []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	laptop.WaitFor(seen, "the group listed on the laptop", `!!document.querySelector('#contacts li[data-group="friends"]')`)
	if _, err := bob.SendGroup(ctx, "friends", "b1", tk.Body("hi alice")); err != nil {
		t.Fatal(err)
	}
	laptop.WaitFor(seen, "bob's message unread on the laptop", groupBadge("friends")+` === '1'`)
	for _, want := range []string{"op:create", string(tk.Body("hi alice"))} {
		m, what := recvGroup(t, phone, "friends")
		if what != want {
			t.Fatalf("the phone got %s, want %s", what, want)
		}
		phone.Ack(m.Seq)
		if m.Event == nil {
			phone.Read(m.Seq)
		}
	}
	laptop.WaitFor(seen, "the badge cleared by the phone's read", groupBadge("friends")+` === ''`)

	// Sent from the phone: on the laptop's page as alice's, ticked read
	// once bob read it.
	if _, err := phone.SendGroup(ctx, "friends", "p1", tk.Body("from my phone")); err != nil {
		t.Fatal(err)
	}
	for {
		m := tk.RecvMsg(t, bob, seen)
		bob.Ack(m.Seq)
		if m.ID == "p1" {
			bob.Read(m.Seq)
			break
		}
	}
	openGroup(laptop, "friends")
	laptop.WaitFor(seen, "the phone's message read, on the laptop", outgoing("from my phone")+` === 'read'`)

	openChat(laptop, "carol")
	laptop.Navigate(p.HTTP + "/")
	laptop.WaitFor(seen, "signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
	laptop.WaitFor(seen, "the group listed", `!!document.querySelector('#contacts li[data-group="friends"]')`)
	if b := tk.Eval[string](laptop, groupBadge("friends")); b != "" {
		t.Fatalf("after the reload the group's badge is %q, want none", b)
	}
	openGroup(laptop, "friends")
	if got, want := tk.Eval[string](laptop, conversation), "in hi alice \nout from my phone read"; got != want {
		t.Fatalf("after the reload the laptop shows\n%q\nwant\n%q", got, want)
	}
}

// A group chat an older page kept in localStorage stays on screen, before
// what the store holds of the group, across reloads, each message once.
func TestBrowserStoreKeepsAnOlderPagesGroupChat(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	bob := tk.DialToken(t, p.WSURL, token(t, data, "bob", "phone"))
	ctx, cancel := context.WithTimeout(context.Background(), seen)
	defer cancel()
	if _, err := bob.GroupOp(ctx, "create", "friends", "Friends", []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendGroup(ctx, "friends", "new1", tk.Body("new")); err != nil {
		t.Fatal(err)
	}

	pg := tk.StartBrowser(t).NewPage(t, "alice", recordSent)
	pg.Navigate(p.HTTP + "/")
	pg.WaitFor(seen, "the development sign-in form", `!document.getElementById('dev-form').hidden`)
	pg.Do(chromedp.Evaluate[chromedp.Void](`localStorage.setItem('switchboard.v1.alice.laptop', JSON.stringify({
		contacts: [],
		groups: { friends: { name: 'Friends', createdBy: 'bob', members: [{ user: 'bob', admin: true }, { user: 'alice', admin: false }], left: false } },
		chats: { 'g:friends': [
			{ id: 'old1', from: 'bob', group: 'friends', seq: 0, ts: 1795582349000, body: 'from before' },
			{ id: 'old2', from: 'alice', group: 'friends', seq: 0, ts: 1795582349000, body: 'mine before', tick: 'read' },
		] },
		read: {},
		open: 'g:friends',
	}))`))
	pg.Do(
		chromedp.SetValue(chromedp.ID("dev-user"), "alice"),
		chromedp.SetValue(chromedp.ID("dev-device"), "laptop"),
		chromedp.Click(chromedp.ID("dev-signin")),
	)
	pg.WaitFor(seen, "alice connected", `document.getElementById('conn').dataset.state === 'connected'`)
	pg.WaitFor(seen, "the group open", `document.getElementById('chat-head').dataset.group === 'friends'`)
	const want = "in from before \nout mine before read\nin new "
	pg.WaitFor(seen, "the older page's messages, then the new one", conversation+` === `+fmt.Sprintf("%q", want))
	for range 2 {
		pg.Navigate(p.HTTP + "/")
		pg.WaitFor(seen, "signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
		pg.WaitFor(seen, "the group open", `document.getElementById('chat-head').dataset.group === 'friends'`)
		if got := tk.Eval[string](pg, conversation); got != want {
			t.Fatalf("after a reload the page shows\n%q\nwant\n%q", got, want)
		}
	}
}
