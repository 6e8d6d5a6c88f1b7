package main_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/valyala/fasthttp"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/web"
)

// The chat page keeps its 1:1 conversations and its outbox in the SDK's
// local store (IndexedDB): a reload is a restart of the app in the same
// browser profile.

// dropSent makes a page drop the "sent" frames the gateway writes while
// window.__dropSent is set, keeping them in window.__dropped: a send
// stored by the server whose confirmation never reached the page, as when
// the page goes away in between.
const dropSent = `(() => {
	const d = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage');
	window.__dropped = [];
	Object.defineProperty(WebSocket.prototype, 'onmessage', {
		configurable: true,
		get() { return d.get.call(this); },
		set(fn) {
			d.set.call(this, (e) => {
				if (window.__dropSent && typeof e.data === 'string') {
					try {
						const f = JSON.parse(e.data);
						if (f.type === 'sent') { window.__dropped.push(f); return; }
					} catch {}
				}
				fn(e);
			});
		},
	});
})();`

// kept is a JavaScript expression: the bodies in the page's store's
// outbox (alice on laptop), read from IndexedDB as they are on disk.
const kept = `new Promise((res, rej) => {
	const r = indexedDB.open('switchboard.alice.laptop');
	r.onerror = () => rej(r.error);
	r.onsuccess = () => {
		const db = r.result;
		const q = db.transaction('messages').objectStore('messages').index('outbox').getAll();
		q.onsuccess = () => { db.close(); res(q.result.map((m) => m.body).join(',')); };
	};
})`

// conversation is a JavaScript expression: the open conversation as
// shown, one "in|out text tick" per message.
const conversation = `[...document.querySelectorAll('#messages .msg')].map((e) =>
	(e.classList.contains('out') ? 'out ' : 'in ') + e.querySelector('.text')?.textContent + ' ' + (e.dataset.tick ?? '')).join('\n')`

// standIn serves the page's files on addr while the gateway is down, as a
// CDN or the browser's cache would: the page loads, the gateway's
// WebSocket and event stream do not answer. It returns its stop.
func standIn(t *testing.T, addr string) (stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: web.Handler(web.Options{DevTokens: true})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.ShutdownWithContext(ctx); err != nil {
			t.Errorf("stopping the stand-in: %v", err)
		}
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// Messages typed while the gateway is out of reach are kept across a
// reload of the page (made while it is still out of reach, the page
// working offline from its store) and sent once it is back, in order;
// one whose "sent" never reached the page is sent again after a reload
// under its id and stored once. Bob, connecting afterwards, gets each
// exactly once. After a reload the conversation shows the same history
// with the same ticks.
func TestBrowserStoreKeepsOfflineMessagesAcrossReloads(t *testing.T) {
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
	openChat(alice, "bob")
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
	// from its store, with its history, and takes more.
	alice.Navigate(p.HTTP + "/")
	alice.WaitFor(seen, "the page offline with its history", `!document.getElementById('app').hidden && document.getElementById('conn').dataset.state === 'reconnecting'`)
	alice.WaitFor(seen, "the conversation back", `document.getElementById('peer').textContent === 'bob'`)
	if got, want := tk.Eval[string](alice, conversation), "out before sent\nout offline 1 pending\nout offline 2 pending"; got != want {
		t.Fatalf("after the offline reload the page shows\n%s\nwant\n%s", got, want)
	}
	say(alice, "offline 3")
	alice.WaitFor(seen, "the third in the store's outbox", kept+`.then((v) => v === 'offline 1,offline 2,offline 3')`)

	// The gateway is back: the page connects and sends the outbox.
	stop()
	p = start(t, args...)
	alice.WaitFor(seen, "alice connected", `document.getElementById('conn').dataset.state === 'connected'`)
	// On a WebSocket: window.__dropSent below drops its frames.
	if got := tk.Eval[string](alice, `document.getElementById('conn').dataset.transport`); got != "websocket" {
		t.Fatalf("back after the restart on %q, want websocket", got)
	}
	for _, text := range []string{"offline 1", "offline 2", "offline 3"} {
		alice.WaitFor(seen, text+" sent", outgoing(text)+` === 'sent'`)
	}
	alice.WaitFor(seen, "the outbox empty", kept+`.then((v) => v === '')`)

	// A send the server stores whose "sent" the page never sees, then a
	// reload: sent again under its id, and answered dup.
	alice.Do(chromedp.Evaluate[chromedp.Void](`window.__dropSent = true`))
	say(alice, "unconfirmed")
	alice.WaitFor(seen, "its sent dropped", `window.__dropped.length === 1`)
	if tick := tk.Eval[string](alice, outgoing("unconfirmed")); tick != "pending" {
		t.Fatalf("the unconfirmed message shows %q, want pending", tick)
	}
	alice.Navigate(p.HTTP + "/")
	alice.WaitFor(seen, "signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
	alice.WaitFor(seen, "unconfirmed sent after the reload", outgoing("unconfirmed")+` === 'sent'`)
	alice.WaitFor(seen, "the outbox empty", kept+`.then((v) => v === '')`)

	// Bob's first device gets everything his inbox holds, each message
	// once, in order: no second stored copy (it would be a duplicate the
	// SDK drops), and the fence comes next.
	bob := tk.DialToken(t, p.WSURL, token(t, data, "bob", "phone"))
	for _, want := range []string{"before", "offline 1", "offline 2", "offline 3", "unconfirmed"} {
		m := tk.RecvMsg(t, bob, seen)
		if m.From != "alice" || string(m.Body) != string(tk.Body(want)) {
			t.Fatalf("bob got %s from %s, want %q", m.Body, m.From, want)
		}
		bob.Ack(m.Seq)
	}
	say(alice, "fence")
	m := tk.RecvMsg(t, bob, seen)
	if string(m.Body) != string(tk.Body("fence")) {
		t.Fatalf("bob got %s after the last message, want the fence", m.Body)
	}
	if d := bob.Stats().DuplicatesDropped; d != 0 {
		t.Fatalf("bob's inbox held %d second copies", d)
	}
	bob.Ack(m.Seq)
	bob.Read(m.Seq)
	for _, text := range []string{"before", "offline 1", "offline 2", "offline 3", "unconfirmed", "fence"} {
		alice.WaitFor(seen, text+" read", outgoing(text)+` === 'read'`)
	}

	// A reload shows the same conversation, with the same ticks.
	want := tk.Eval[string](alice, conversation)
	if n := strings.Count(want, "\n") + 1; n != 6 {
		t.Fatalf("the conversation has %d messages, want 6:\n%s", n, want)
	}
	alice.Navigate(p.HTTP + "/")
	alice.WaitFor(seen, "signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
	alice.WaitFor(seen, "the conversation back", `document.getElementById('peer').textContent === 'bob'`)
	if got := tk.Eval[string](alice, conversation); got != want {
		t.Fatalf("after the reload the page shows\n%s\nwant\n%s", got, want)
	}
}

// A device whose store was written by a newer version of the page is
// refused with a message that says so, and its store is left as it is.
func TestBrowserStoreRefusesANewerVersion(t *testing.T) {
	p := start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0")
	pg := tk.StartBrowser(t).NewPage(t, "alice", recordSent)
	pg.Navigate(p.HTTP + "/")
	pg.WaitFor(seen, "the development sign-in form", `!document.getElementById('dev-form').hidden`)
	pg.Do(chromedp.Evaluate[chromedp.Void](`(() => {
		const r = indexedDB.open('switchboard.alice.laptop', 9);
		r.onupgradeneeded = () => r.result.createObjectStore('from-the-future');
		r.onsuccess = () => { r.result.close(); window.made = true; };
	})()`))
	pg.WaitFor(seen, "the newer store made", `window.made === true`)
	pg.Do(
		chromedp.SetValue(chromedp.ID("dev-user"), "alice"),
		chromedp.SetValue(chromedp.ID("dev-device"), "laptop"),
		chromedp.Click(chromedp.ID("dev-signin")),
	)
	const want = "This browser's chat store for alice on laptop was written by a newer version of Switchboard (schema 9; this page knows 3), and was left as it is. Reload to get the newer page, or clear this site's data to start over."
	pg.WaitFor(seen, "the refusal", fmt.Sprintf(`document.getElementById('signin-error').textContent === %q`, want))
	if got := tk.Eval[string](pg, `new Promise((res) => { const r = indexedDB.open('switchboard.alice.laptop');
		r.onsuccess = () => { const db = r.result; res(db.version + ' ' + [...db.objectStoreNames].join(',')); db.close(); }; })`); got != "9 from-the-future" {
		t.Fatalf("the newer store is now %q, want it unchanged", got)
	}
	if n := tk.Eval[int](pg, `window.__sent.length`); n != 0 {
		t.Fatalf("the refused page wrote %d frames", n)
	}
}

// badge is a JavaScript expression: the unread badge of user's contact.
func badge(user string) string {
	return fmt.Sprintf(`document.querySelector('#contacts li[data-user=%q] .badge')?.textContent`, user)
}

// What alice sends from her phone shows on her laptop's page in the
// conversation with bob, with its ticks, and a read on the phone clears
// the unread badge there; both are kept in the page's store and shown the
// same after a reload.
func TestBrowserStoreOwnMessagesAndReadsFromAnotherDevice(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	b := tk.StartBrowser(t)
	laptop := signIn(t, b, p, "alice", "laptop")
	openChat(laptop, "carol") // looking elsewhere
	phone := tk.DialToken(t, p.WSURL, token(t, data, "alice", "phone"))
	bob := tk.DialToken(t, p.WSURL, token(t, data, "bob", "phone"))

	ctx, cancel := context.WithTimeout(context.Background(), seen)
	defer cancel()
	if _, err := phone.Send(ctx, "bob", "from-phone", tk.Body("from my phone")); err != nil {
		t.Fatal(err)
	}
	m := tk.RecvMsg(t, bob, seen)
	bob.Ack(m.Seq)
	bob.Read(m.Seq)
	laptop.WaitFor(seen, "bob listed on the laptop", `!!document.querySelector('#contacts li[data-user="bob"]')`)
	laptop.Do(chromedp.Click(chromedp.CSS(`#contacts li[data-user="bob"]`)))
	laptop.WaitFor(seen, "the phone's message read, on the laptop", outgoing("from my phone")+` === 'read'`)

	openChat(laptop, "carol")
	if _, err := bob.Send(ctx, "alice", "to-alice", tk.Body("hi alice")); err != nil {
		t.Fatal(err)
	}
	laptop.WaitFor(seen, "bob's message unread on the laptop", badge("bob")+` === '1'`)
	got := tk.RecvMsg(t, phone, seen)
	if got.ID != "to-alice" {
		t.Fatalf("the phone got %s, want bob's message", got.ID)
	}
	phone.Ack(got.Seq)
	phone.Read(got.Seq)
	laptop.WaitFor(seen, "the badge cleared by the phone's read", badge("bob")+` === ''`)

	laptop.Navigate(p.HTTP + "/")
	laptop.WaitFor(seen, "signed in again", `document.getElementById('conn').dataset.state === 'connected'`)
	laptop.WaitFor(seen, "bob listed", `!!document.querySelector('#contacts li[data-user="bob"]')`)
	if b := tk.Eval[string](laptop, badge("bob")); b != "" {
		t.Fatalf("after the reload bob's badge is %q, want none", b)
	}
	laptop.Do(chromedp.Click(chromedp.CSS(`#contacts li[data-user="bob"]`)))
	laptop.WaitFor(seen, "the conversation with bob", `document.getElementById('peer').textContent === 'bob'`)
	if got, want := tk.Eval[string](laptop, conversation), "out from my phone read\nin hi alice "; got != want {
		t.Fatalf("after the reload the laptop shows\n%q\nwant\n%q", got, want)
	}
}
