package main_test

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/web"
)

// The browser tests drive the chat page in headless Chromium against the
// real all-in-one binary: each user is a browser context of its own, signed
// in through the development token form. They wait on what the pages show,
// never on time.

// seen is how long a page may take to show something the test is sure will
// happen: a deadline for a broken page, never a window that passes a test.
const seen = 15 * time.Second

// recordSent keeps every frame a page writes to its WebSocket in
// window.__sent, in order, for tests of what a page did not send.
const recordSent = `(() => {
	const send = WebSocket.prototype.send;
	window.__sent = [];
	WebSocket.prototype.send = function (data) {
		try { window.__sent.push(JSON.parse(data)); } catch {}
		return send.call(this, data);
	};
})();`

// blockWebSocket makes a page's network refuse every WebSocket, as some
// proxies and firewalls do: the constructor throws. (A blocked URL in
// the DevTools protocol does not stop a WebSocket.)
const blockWebSocket = `(() => {
	window.WebSocket = class {
		constructor() { throw new DOMException('this network does not carry WebSockets', 'SecurityError'); }
	};
})();`

// signIn opens the chat page for user in a browser context of its own and
// signs in through the development token form. Scripts run in the page
// before its own.
func signIn(t *testing.T, b *tk.Browser, p *proc, user, device string, scripts ...string) *tk.Page {
	t.Helper()
	pg := b.NewPage(t, user, append([]string{recordSent}, scripts...)...)
	pg.Navigate(p.HTTP + "/")
	pg.WaitFor(seen, "the development sign-in form", `!document.getElementById('dev-form').hidden`)
	pg.Do(
		chromedp.SetValue(chromedp.ID("dev-user"), user),
		chromedp.SetValue(chromedp.ID("dev-device"), device),
		chromedp.Click(chromedp.ID("dev-signin")),
	)
	pg.WaitFor(seen, user+" signed in and connected", `document.getElementById('conn').dataset.state === 'connected'`)
	return pg
}

// openChat adds user as a contact (or picks them) and opens the conversation.
func openChat(pg *tk.Page, user string) {
	pg.Do(chromedp.SetValue(chromedp.ID("contact-id"), user), chromedp.Click(chromedp.CSS("#add-contact button")))
	pg.WaitFor(seen, "the conversation with "+user+" open", fmt.Sprintf(`document.getElementById('peer').textContent === %q`, user))
}

// say types text into the composer and sends it.
func say(pg *tk.Page, text string) {
	pg.Do(chromedp.SendKeys(chromedp.ID("text"), text), chromedp.Click(chromedp.ID("send")))
}

// outgoing is a JavaScript expression: the tick ("pending", "sent",
// "delivered", "read") of this page's message with text, or undefined.
func outgoing(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages .msg.out')].find((e) => e.querySelector('.text')?.textContent === %q)?.dataset.tick`, text)
}

// incoming counts the messages on screen from the other user with text.
func incoming(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages .msg.in')].filter((e) => e.querySelector('.text')?.textContent === %q).length`, text)
}

func peerStatus(s string) string {
	return fmt.Sprintf(`document.getElementById('peer-status').textContent.startsWith(%q)`, s)
}

// Two users chat 1:1 in two browsers: presence, the three ticks, a read
// receipt only once the message is on screen, typing, the last-seen
// setting, last seen.
func TestBrowserChat(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	b := tk.StartBrowser(t)
	alice := signIn(t, b, p, "alice", "laptop")
	bob := signIn(t, b, p, "bob", "laptop")

	// Bob looks at another conversation when alice's message comes.
	openChat(bob, "carol")
	openChat(alice, "bob")
	alice.WaitFor(seen, "bob shown online", peerStatus("online"))

	say(alice, "hello bob")
	alice.WaitFor(seen, "hello bob delivered", outgoing("hello bob")+` === 'delivered'`)
	bob.WaitFor(seen, "an unread badge for alice", `document.querySelector('#contacts li[data-user="alice"] .badge')?.textContent === '1'`)
	// Fence: bob's page acked the message (alice saw it delivered), and a
	// read on arrival would have been written in the same step, right
	// after that ack. There is none: it was not on screen.
	if n := tk.Eval[int](bob, `window.__sent.filter((f) => f.type === 'read').length`); n != 0 {
		t.Fatalf("bob's page sent %d read frames for a message not on screen", n)
	}
	if tick := tk.Eval[string](alice, outgoing("hello bob")); tick != "delivered" {
		t.Fatalf("alice's message is %q before bob opened it, want delivered", tick)
	}

	bob.Do(chromedp.Click(chromedp.CSS(`#contacts li[data-user="alice"]`)))
	bob.WaitFor(seen, "alice's message on bob's screen", incoming("hello bob")+` === 1`)
	alice.WaitFor(seen, "hello bob read", outgoing("hello bob")+` === 'read'`)
	bob.WaitFor(seen, "the badge gone", `document.querySelector('#contacts li[data-user="alice"] .badge').textContent === ''`)

	// Typing shows on the other side; the message that follows replaces it
	// and, the conversation being open there, is read at once.
	bob.Do(chromedp.SendKeys(chromedp.ID("text"), "hi al"))
	alice.WaitFor(seen, "bob typing", peerStatus("typing…"))
	bob.Do(chromedp.SendKeys(chromedp.ID("text"), "ice"), chromedp.Click(chromedp.ID("send")))
	alice.WaitFor(seen, "bob's answer", incoming("hi alice")+` === 1`)
	alice.WaitFor(seen, "typing gone with the message", peerStatus("online"))
	bob.WaitFor(seen, "hi alice read", outgoing("hi alice")+` === 'read'`)

	// Bob hides his last seen from everyone, then shows it again.
	lastSeen := func(v string) {
		bob.Do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
			`(() => { const s = document.getElementById('set-lastseen'); s.value = %q; s.dispatchEvent(new Event('change')); })()`, v)))
	}
	bob.Do(chromedp.Click(chromedp.ID("settings-toggle")))
	bob.WaitFor(seen, "bob's settings read", `document.getElementById('set-receipts').checked`)
	lastSeen("nobody")
	alice.WaitFor(seen, "bob hidden", `document.getElementById('peer-status').textContent === ''`)
	lastSeen("everyone")
	alice.WaitFor(seen, "bob shown again", peerStatus("online"))

	// Bob leaves: alice sees when he was last seen.
	bob.Do(chromedp.Click(chromedp.ID("signout")))
	alice.WaitFor(seen, "bob's last seen", peerStatus("last seen today at"))
}

// A photo sent from one page is uploaded through a ticket, sent as a media
// message and shown on the other page from its download URL, its sha256
// checked.
func TestBrowserMedia(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	b := tk.StartBrowser(t)
	alice := signIn(t, b, p, "alice", "laptop")
	bob := signIn(t, b, p, "bob", "phone")
	openChat(alice, "bob")
	openChat(bob, "alice")

	img := image.NewRGBA(image.Rect(0, 0, 7, 5))
	for x := range 7 {
		for y := range 5 {
			img.Set(x, y, color.RGBA{uint8(30 * x), uint8(50 * y), 200, 255})
		}
	}
	path := filepath.Join(t.TempDir(), "photo.png")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	f.Close()

	alice.Do(chromedp.SetUploadFiles(chromedp.ID("file"), []string{path}))
	const shown = `(() => { const i = document.querySelector('#messages .msg.in img'); return i && i.dataset.loaded === 'true' && i.src.startsWith('blob:') && i.naturalWidth === 7 && i.naturalHeight === 5; })()`
	bob.WaitFor(seen, "the photo downloaded, checked and shown", shown)
	alice.WaitFor(seen, "the photo read", `document.querySelector('#messages .msg.out')?.dataset.tick === 'read'`)
}

// The page survives a restart of the server: a message typed while it
// was down goes out once it is back, and what was sent meanwhile from
// elsewhere arrives, once. A reload keeps the device and its history.
func TestBrowserSurvivesRestart(t *testing.T) {
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
	alice := signIn(t, b, p, "alice", "laptop")
	bob := signIn(t, b, p, "bob", "laptop")
	openChat(alice, "bob")
	openChat(bob, "alice")
	say(alice, "before")
	alice.WaitFor(seen, "before read", outgoing("before")+` === 'read'`)

	p.kill()
	alice.WaitFor(seen, "alice's page reconnecting", `document.getElementById('conn').dataset.state === 'reconnecting'`)
	say(alice, "while down")
	alice.WaitFor(seen, "while down pending", outgoing("while down")+` === 'pending'`)

	p = start(t, args...)
	cli := tk.DialToken(t, p.WSURL, token(t, data, "alice", "terminal"))
	ctx, cancel := context.WithTimeout(context.Background(), seen)
	defer cancel()
	if _, err := cli.Send(ctx, "bob", "from-the-terminal", tk.Body("sent while the page was away")); err != nil {
		t.Fatal(err)
	}

	bob.WaitFor(seen, "the terminal's message", incoming("sent while the page was away")+` === 1`)
	bob.WaitFor(seen, "the message typed while down", incoming("while down")+` === 1`)
	alice.WaitFor(seen, "while down read", outgoing("while down")+` === 'read'`)
	for _, pg := range []*tk.Page{alice, bob} {
		pg.WaitFor(seen, "connected again", `document.getElementById('conn').dataset.state === 'connected'`)
	}
	// Whatever came again after the crash is on screen once.
	if n := tk.Eval[int](bob, incoming("before")); n != 1 {
		t.Fatalf("bob's page shows %q %d times", "before", n)
	}

	// A reload keeps the device signed in, with its history: the page
	// is the device, and the server hands each message to it once.
	bob.Navigate(p.HTTP + "/")
	bob.WaitFor(seen, "signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
	bob.WaitFor(seen, "the conversation back", incoming("before")+` === 1 && `+incoming("while down")+` === 1`)
	alice.Navigate(p.HTTP + "/")
	alice.WaitFor(seen, "alice's ticks back", outgoing("while down")+` === 'read'`)
	say(alice, "after the reload")
	bob.WaitFor(seen, "a message after the reload", incoming("after the reload")+` === 1`)
	alice.WaitFor(seen, "after the reload read", outgoing("after the reload")+` === 'read'`)
}

// A token the server does not accept is refused at sign-in, saying why.
func TestBrowserSignInWithARefusedToken(t *testing.T) {
	p := start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0")
	other := strings.TrimSpace(tk.Run(t, binary, "token", "--jwt-secret", "another-secret-0123456789abcdef-0123456789",
		"--user", "alice", "--device", "laptop"))
	pg := tk.StartBrowser(t).NewPage(t, "alice")
	pg.Navigate(p.HTTP + "/")
	pg.WaitFor(seen, "the sign-in form", `!document.getElementById('signin').hidden`)
	pg.Do(chromedp.SetValue(chromedp.ID("token"), other), chromedp.Click(chromedp.ID("token-signin")))
	pg.WaitFor(seen, "the refusal", `document.getElementById('signin-error').textContent === 'The server refused the token (bad_token).'`)
}

// A page served from another origin cannot open a WebSocket to the
// gateway: the handshake is refused with 403, and the SDK's connect fails.
func TestBrowserForeignOriginRefused(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	// Another site, serving the SDK as a copy of its own.
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == web.PathSDK {
			w.Header().Set("Content-Type", "text/javascript")
			f, _ := web.Files.Open(strings.TrimPrefix(web.PathSDK, "/"))
			defer f.Close()
			_, _ = io.Copy(w, f)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><title>foreign</title><script type="module">
import { connect } from '/sdk/switchboard.js';
const q = new URLSearchParams(location.hash.slice(1));
connect({ url: q.get('ws'), token: q.get('token') }).then(
	() => { document.title = 'connected'; },
	(e) => { window.__err = e.name; document.title = 'refused'; });
</script>`)
	}))
	defer foreign.Close()

	b := tk.StartBrowser(t)
	pg := b.NewPage(t, "foreign")
	tok := token(t, data, "mallory", "browser")
	pg.Navigate(foreign.URL + "/#ws=" + p.WSURL + "&token=" + tok)
	pg.WaitFor(seen, "the connect refused", `document.title === 'refused'`)
	if e := tk.Eval[string](pg, `window.__err`); e != "ConnectError" {
		t.Fatalf("connect failed with %s, want a ConnectError", e)
	}
	// A page cannot read a refused handshake's status; the browser reports it.
	tk.WaitFor(t, seen, func() error {
		for _, l := range pg.Logs() {
			if strings.Contains(l, "WebSocket handshake: Unexpected response code: 403") {
				return nil
			}
		}
		return errors.New("the browser reported no 403 for the handshake")
	})
	m, err := http.Get(p.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Body.Close()
	body, _ := io.ReadAll(m.Body)
	if !strings.Contains(string(body), `switchboard_gateway_handshakes_refused_total{code="bad_origin"} `) {
		t.Fatalf("no bad_origin refusal counted:\n%s", body)
	}
}

// Two users chat where one's network blocks WebSockets: that page falls
// back to the HTTP fallback by itself (an event stream and POSTs) and the
// chat is the same: presence, typing, and all three ticks both ways, each
// message shown once.
func TestBrowserChatOverTheHTTPFallback(t *testing.T) {
	p := start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0")
	b := tk.StartBrowser(t)
	alice := signIn(t, b, p, "alice", "laptop", blockWebSocket)
	bob := signIn(t, b, p, "bob", "laptop")
	alice.WaitFor(seen, "alice on the HTTP fallback", `document.getElementById('conn').dataset.transport === 'sse'`)
	bob.WaitFor(seen, "bob on a WebSocket", `document.getElementById('conn').dataset.transport === 'websocket'`)

	openChat(bob, "carol")
	openChat(alice, "bob")
	alice.WaitFor(seen, "bob shown online", peerStatus("online"))

	// alice → bob: sent and delivered while bob looks elsewhere, read
	// once he opens the conversation.
	say(alice, "over http")
	alice.WaitFor(seen, "over http delivered", outgoing("over http")+` === 'delivered'`)
	bob.Do(chromedp.Click(chromedp.CSS(`#contacts li[data-user="alice"]`)))
	bob.WaitFor(seen, "alice's message on bob's screen", incoming("over http")+` === 1`)
	alice.WaitFor(seen, "over http read", outgoing("over http")+` === 'read'`)

	// bob → alice: typing, then the message, read at once on alice's open
	// conversation (her ack and read go out as POSTs).
	bob.Do(chromedp.SendKeys(chromedp.ID("text"), "over w"))
	alice.WaitFor(seen, "bob typing", peerStatus("typing…"))
	bob.Do(chromedp.SendKeys(chromedp.ID("text"), "s"), chromedp.Click(chromedp.ID("send")))
	alice.WaitFor(seen, "bob's message", incoming("over ws")+` === 1`)
	bob.WaitFor(seen, "over ws read", outgoing("over ws")+` === 'read'`)

	// A fence: nothing came twice before it, either way.
	say(alice, "fence")
	bob.WaitFor(seen, "the fence", incoming("fence")+` === 1`)
	if n := tk.Eval[int](bob, incoming("over http")); n != 1 {
		t.Fatalf("bob's page shows %q %d times", "over http", n)
	}
	if n := tk.Eval[int](alice, incoming("over ws")); n != 1 {
		t.Fatalf("alice's page shows %q %d times", "over ws", n)
	}
	// alice's page never had a WebSocket to write to.
	if n := tk.Eval[int](alice, `window.__sent.length`); n != 0 {
		t.Fatalf("alice's page wrote %d frames to a WebSocket", n)
	}
}

// refuseFirstWebSocket makes a page's first WebSocket fail its handshake
// (it asks for a path the gateway does not serve), as one made while the
// gateway is down for a restart fails, and every later one go where it
// was meant to.
const refuseFirstWebSocket = `(() => {
	const Real = window.WebSocket;
	let refused = false;
	window.WebSocket = class extends Real {
		constructor(url, protocols) {
			const u = refused ? url : String(url).replace('/v1/ws', '/v1/refused');
			refused = true;
			super(u, protocols);
		}
	};
})();`

// A WebSocket refused by a gateway that then answers plain HTTP (it was
// restarting) is not a network that blocks WebSockets: the page tries a
// WebSocket again and stays on it, rather than moving to the HTTP
// fallback for its whole life.
func TestBrowserRetriesAWebSocketBeforeTheFallback(t *testing.T) {
	p := start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0")
	b := tk.StartBrowser(t)
	alice := signIn(t, b, p, "alice", "laptop", refuseFirstWebSocket)
	if got := tk.Eval[string](alice, `document.getElementById('conn').dataset.transport`); got != "websocket" {
		t.Fatalf("after one refused WebSocket the page is on %q, want websocket", got)
	}
}

// createGroup makes a group from the page's new group form and returns
// the code of its refusal, or "" once the group is open.
func createGroup(t *testing.T, pg *tk.Page, group, name, members string) string {
	t.Helper()
	pg.Do(
		chromedp.Click(chromedp.ID("new-group-toggle")),
		chromedp.SetValue(chromedp.ID("group-id"), group),
		chromedp.SetValue(chromedp.ID("group-name"), name),
		chromedp.SetValue(chromedp.ID("group-members"), members),
		chromedp.Click(chromedp.ID("group-create")),
	)
	pg.WaitFor(seen, "the create answered", fmt.Sprintf(
		`document.getElementById('chat-head').dataset.group === %q || !!document.getElementById('group-error').dataset.code`, group))
	return tk.Eval[string](pg, `document.getElementById('group-error').dataset.code || ''`)
}

// openGroup picks a group in the page's list and waits for it to open.
func openGroup(pg *tk.Page, group string) {
	pg.WaitFor(seen, "the group "+group+" listed", fmt.Sprintf(`!!document.querySelector('#contacts li[data-group=%q]')`, group))
	pg.Do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`#contacts li[data-group=%q]`, group))))
	pg.WaitFor(seen, "the group "+group+" open", fmt.Sprintf(`document.getElementById('chat-head').dataset.group === %q`, group))
}

// notices counts the system messages on screen that read text.
func notices(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages .notice')].filter((e) => e.textContent === %q).length`, text)
}

// incomingFrom counts the group messages on screen from user with text.
func incomingFrom(user, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#messages .msg.in')].filter((e) => e.querySelector('.from')?.textContent === %q && e.querySelector('.text')?.textContent === %q).length`, user, text)
}

// Three users chat in a group made from the page: the members see its
// creation, each other's messages with their senders' names, and typing
// in the group; the sender's messages tick read once every member read
// them; a member who leaves is a notice to the others, and
// stops getting the group's messages; a member added later learns the
// group from the server and gets nothing sent before.
func TestBrowserGroupChat(t *testing.T) {
	p := start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0")
	b := tk.StartBrowser(t)
	alice := signIn(t, b, p, "alice", "laptop")
	bob := signIn(t, b, p, "bob", "laptop")
	carol := signIn(t, b, p, "carol", "laptop")

	if code := createGroup(t, alice, "friends", "Friends", "bob, carol"); code != "" {
		t.Fatalf("the create was refused: %s: %s", code, tk.Eval[string](alice, `document.getElementById('group-error').textContent`))
	}
	alice.WaitFor(seen, "the group named on alice's page", `document.getElementById('peer').textContent === 'Friends'`)
	alice.WaitFor(seen, "alice's create notice", notices("You created the group “Friends” with bob and carol")+` === 1`)
	openGroup(bob, "friends")
	bob.WaitFor(seen, "the create notice on bob's page", notices("Alice created the group “Friends” with you and carol")+` === 1`)
	bob.WaitFor(seen, "the group's name on bob's page", `document.getElementById('peer').textContent === 'Friends'`)
	openGroup(carol, "friends")
	carol.WaitFor(seen, "the create notice on carol's page", notices("Alice created the group “Friends” with bob and you")+` === 1`)

	// Typing in the group shows on the other members' pages, named.
	carol.Do(chromedp.SendKeys(chromedp.ID("text"), "hello"))
	bob.WaitFor(seen, "carol typing in the group", `document.getElementById('peer-status').textContent === 'carol is typing…'`)
	carol.Do(chromedp.SendKeys(chromedp.ID("text"), " all"), chromedp.Click(chromedp.ID("send")))
	bob.WaitFor(seen, "carol's message on bob's page", incomingFrom("carol", "hello all")+` === 1`)
	alice.WaitFor(seen, "carol's message on alice's page", incomingFrom("carol", "hello all")+` === 1`)
	bob.WaitFor(seen, "typing gone with the message", `!document.getElementById('peer-status').textContent.includes('typing')`)

	say(alice, "hi all")
	bob.WaitFor(seen, "alice's message on bob's page", incomingFrom("alice", "hi all")+` === 1`)
	carol.WaitFor(seen, "alice's message on carol's page", incomingFrom("alice", "hi all")+` === 1`)
	// Both have the group on screen: the group's receipts tick it read.
	alice.WaitFor(seen, "hi all read", outgoing("hi all")+` === 'read'`)
	if g := tk.Eval[string](alice, `document.querySelector('#messages .msg.out .tick').textContent`); g != "✓✓" {
		t.Fatalf("alice's group message shows %q, want two ticks", g)
	}

	// The group's info: its members in the order they joined, alice its admin.
	alice.Do(chromedp.Click(chromedp.ID("group-info-toggle")))
	alice.WaitFor(seen, "the members listed", `[...document.querySelectorAll('#gi-members li')].map((l) => l.dataset.user + ':' + l.dataset.admin).join(' ') === 'alice:true bob:false carol:false'`)

	// Carol leaves: the others see it, her page stops offering the composer,
	// and what alice sends next reaches bob only.
	carol.Do(chromedp.Click(chromedp.ID("group-info-toggle")), chromedp.Click(chromedp.ID("gi-leave")))
	bob.WaitFor(seen, "carol's leaving on bob's page", notices("Carol left")+` === 1`)
	alice.WaitFor(seen, "carol's leaving on alice's page", notices("Carol left")+` === 1`)
	alice.WaitFor(seen, "carol gone from the members", `[...document.querySelectorAll('#gi-members li')].map((l) => l.dataset.user).join(' ') === 'alice bob'`)
	carol.WaitFor(seen, "carol's page out of the group", `document.getElementById('composer').hidden && !document.getElementById('left-note').hidden`)
	carol.WaitFor(seen, "carol's own leaving", notices("You left")+` === 1`)

	// An admin adds a member, who learns the group's name and members from
	// the server and sees nothing sent before, and makes bob an admin.
	dave := signIn(t, b, p, "dave", "laptop")
	alice.Do(chromedp.SetValue(chromedp.ID("gi-add-users"), "dave"), chromedp.Click(chromedp.CSS("#gi-add button")))
	bob.WaitFor(seen, "dave's adding on bob's page", notices("Alice added dave")+` === 1`)
	// Alice's page has the add's answer (it clears the field) and its
	// notice: nothing of it is left to redraw her member list under a click.
	alice.WaitFor(seen, "the add on alice's page", notices("You added dave")+` === 1 && document.getElementById('gi-add-users').value === ''`)
	openGroup(dave, "friends")
	dave.WaitFor(seen, "dave's adding on his page", notices("Alice added you")+` === 1`)
	dave.WaitFor(seen, "the group's name on dave's page", `document.getElementById('peer').textContent === 'Friends'`)
	dave.Do(chromedp.Click(chromedp.ID("group-info-toggle")))
	dave.WaitFor(seen, "the members on dave's page", `[...document.querySelectorAll('#gi-members li')].map((l) => l.dataset.user + ':' + l.dataset.admin).join(' ') === 'alice:true bob:false dave:false'`)
	if n := tk.Eval[int](dave, `document.querySelectorAll('#messages .msg').length + document.querySelectorAll('#gi-add:not([hidden]), #gi-members button').length`); n != 0 {
		t.Fatalf("dave's page shows %d messages from before he was added, or admin controls", n)
	}
	alice.WaitFor(seen, "the promote button", `!!document.querySelector('#gi-members li[data-user="bob"] button.promote')`)
	alice.Do(chromedp.Click(chromedp.CSS(`#gi-members li[data-user="bob"] button.promote`)))
	bob.WaitFor(seen, "bob made admin", notices("Alice made you an admin")+` === 1`)
	alice.WaitFor(seen, "bob an admin on alice's page", notices("You made bob an admin")+` === 1 && document.querySelector('#gi-members li[data-user="bob"]').dataset.admin === 'true'`)

	// A rename shows on the members' pages, in the list and the header;
	// a removal is a notice. The rows the rename leaves as they were stay
	// the same elements through its redraws (the answer and the notice):
	// one made anew between the press and the release of a click loses it.
	keep := `(() => { window.__kept = document.querySelector(%q); })()`
	alice.Do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(keep, `#gi-members li[data-user="dave"]`)))
	bob.Do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(keep, `#contacts li[data-group="friends"]`)))
	alice.Do(chromedp.SetValue(chromedp.ID("gi-rename-name"), "Best Friends"), chromedp.Click(chromedp.CSS("#gi-rename button")))
	bob.WaitFor(seen, "the rename on bob's page", notices("Alice renamed the group to “Best Friends”")+` === 1`)
	bob.WaitFor(seen, "the new name on bob's page", `document.getElementById('peer').textContent === 'Best Friends' && document.querySelector('#contacts li[data-group="friends"] .name').textContent === 'Best Friends'`)
	alice.WaitFor(seen, "the rename on alice's page", notices("You renamed the group to “Best Friends”")+` === 1 && document.getElementById('gi-rename-name').value === ''`)
	for name, pg := range map[string]*tk.Page{"alice": alice, "bob": bob} {
		if !tk.Eval[bool](pg, `window.__kept.isConnected`) {
			t.Fatalf("the rename made %s's unchanged row anew: a click on it then would be lost", name)
		}
	}
	alice.Do(chromedp.Click(chromedp.CSS(`#gi-members li[data-user="dave"] button.remove`)))
	bob.WaitFor(seen, "dave's removal on bob's page", notices("Alice removed dave")+` === 1`)
	dave.WaitFor(seen, "dave's removal on his page", notices("Alice removed you")+` === 1 && !document.getElementById('left-note').hidden`)

	// Bob looks at another conversation: the group's message is counted
	// unread until he opens it.
	openChat(bob, "alice")
	say(alice, "after carol")
	bob.WaitFor(seen, "an unread badge for the group", `document.querySelector('#contacts li[data-group="friends"] .badge')?.textContent === '1'`)
	openGroup(bob, "friends")
	bob.WaitFor(seen, "the message after carol left", incomingFrom("alice", "after carol")+` === 1`)
	bob.WaitFor(seen, "the badge gone", `document.querySelector('#contacts li[data-group="friends"] .badge').textContent === ''`)
	say(bob, "a fence")
	alice.WaitFor(seen, "bob's fence", incomingFrom("bob", "a fence")+` === 1`)
	if n := tk.Eval[int](carol, incomingFrom("alice", "after carol")); n != 0 {
		t.Fatalf("carol's page shows a message sent after she left")
	}

	// A reload keeps the group and its history, each message once.
	bob.Navigate(p.HTTP + "/")
	bob.WaitFor(seen, "bob signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
	bob.WaitFor(seen, "the group open again", `document.getElementById('chat-head').dataset.group === 'friends' && document.getElementById('peer').textContent === 'Best Friends'`)
	bob.WaitFor(seen, "the history back", notices("Carol left")+` === 1 && `+incomingFrom("alice", "hi all")+` === 1 && `+outgoing("a fence")+` === 'read'`)
	say(bob, "after the reload")
	alice.WaitFor(seen, "bob's message after the reload", incomingFrom("bob", "after the reload")+` === 1`)
}
