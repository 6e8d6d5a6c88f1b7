package web_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/chromedp"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// The SDK's local store (options.store, IndexedDB), against the scripted
// gateway: a reload of the page is a restart of the app, in the same
// browser profile, so with the same databases.

// reloadSDK reloads the page and connects a new client with opts (more
// Client options, as JavaScript), recording events as startSDK does; code
// runs right after the client is made, before its store is open.
func reloadSDK(t *testing.T, s *script, pg *tk.Page, opts string, code ...string) *sconn {
	t.Helper()
	pg.Navigate(s.srv.URL + "/")
	pg.WaitFor(stuck, "the SDK imported", `window.ready === true`)
	js(pg, fmt.Sprintf(`
		window.c = new sb.Client({ url: %q, token: 'tok', minBackoff: 1, maxBackoff: 20, %s });
		for (const ev of ['message', 'receipt', 'read_sync', 'typing', 'presence', 'connect', 'disconnect', 'close', 'error']) {
			c.on(ev, (d) => log.push([ev, d]));
		}
		%s;
		c.start().then(() => { window.started = true; }, (e) => { window.started = { name: e.name, code: e.code }; })`,
		s.wsURL(), opts, strings.Join(code, ";")))
	conn := s.accept(t)
	pg.WaitFor(stuck, "connected", `window.started === true`)
	return conn
}

// history is a conversation as the store holds it: id@seq:status, own
// ones marked >.
func history(pg *tk.Page, conv string) string {
	return tk.Eval[string](pg, fmt.Sprintf(`c.store.messages(%q).then((ms) => ms.map((m) => (m.own ? '>' : '') + m.id + '@' + m.seq + ':' + m.status).join(' '))`, conv))
}

const storeOpt = `store: 'sb-test'`

// Sends not confirmed when the page goes away are sent first after the
// reload, in order, under their ids; a send with the same id joins one;
// "sent" takes them out of the store's outbox.
func TestSDKStoreResendsTheOutboxAfterAReload(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	for _, id := range []string{"m1", "m2", "m3"} {
		send(pg, id)
	}
	c.expect(t, protocol.TypeSend, "m1", "m2", "m3")
	c.sent("m1", 1)
	if got := result(t, pg, "m1"); got != "seq 1" {
		t.Fatalf("m1: %s", got)
	}
	// The page goes away with m2 and m3 unconfirmed. The app of the next
	// page sends m3 again at once, and m2 once connected: each joins the
	// restored send, in its place.
	c = reloadSDK(t, s, pg, storeOpt, `c.send('bob', 'm3', 'm3').then((v) => { results.m3 = v; })`)
	c.expect(t, protocol.TypeSend, "m2", "m3")
	send(pg, "m2")
	c.fence(t, pg)
	c.sent("m2", 2)
	c.sent("m3", 3)
	if a, b := result(t, pg, "m2"), result(t, pg, "m3"); a != "seq 2" || b != "seq 3" {
		t.Fatalf("after the reload m2: %s, m3: %s", a, b)
	}
	pg.WaitFor(stuck, "the outbox empty", `c.store.outbox().then((o) => o.length === 0)`)
	if got := history(pg, "bob"); got != ">m1@1:sent >m2@2:sent >m3@3:sent" {
		t.Fatalf("history: %s", got)
	}
	// A third load sends nothing again.
	c = reloadSDK(t, s, pg, storeOpt)
	c.fence(t, pg)
}

// A send made while the store opens, joining one it restored, can still
// be withdrawn: its abort reaches the restored send, which leaves the
// outbox with its last caller gone.
func TestSDKStoreWithdrawsASendThatJoinedARestoredOne(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	send(pg, "m1")
	c.expect(t, protocol.TypeSend, "m1")
	// The page goes away with m1 unconfirmed; the next page's app sends
	// it again at once, with a signal, before the store is open.
	c = reloadSDK(t, s, pg, storeOpt, `window.ac = new AbortController(); c.send('bob', 'm1', 'm1', { signal: ac.signal }).then((v) => { results.m1 = v; }, (e) => { results.m1 = { error: e.name }; })`)
	c.expect(t, protocol.TypeSend, "m1") // the restored send, on connect
	js(pg, `ac.abort()`)
	pg.WaitFor(stuck, "the send withdrawn", `results.m1 !== undefined && results.m1.error === 'AbortError'`)
	pg.WaitFor(stuck, "the outbox empty", `c.store.outbox().then((o) => o.length === 0)`)
	// Nothing of it is written again: the next frame is the fence's.
	c.fence(t, pg)
}

// A message stored by an earlier page load is not given to the app
// again: its redelivery, acked or not, and a second stored copy are acked
// by the SDK; the cursor hint is the highest seq acked.
func TestSDKStoreDropsRepeatsAcrossReloads(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	js(pg, `c.on('message', (m) => { if (m.id !== 'unacked') c.ack(m.seq); })`)
	c.msg("m-1", "bob", 5)
	c.expect(t, protocol.TypeAck, 5)
	c.msg("unacked", "bob", 6)
	pg.WaitFor(stuck, "the unacked message given to the app", `log.some(([t, m]) => t === 'message' && m.id === 'unacked')`)

	c = reloadSDK(t, s, pg, storeOpt)
	js(pg, `c.on('message', (m) => c.ack(m.seq))`)
	c.msg("m-1", "bob", 5)
	c.msg("unacked", "bob", 6) // in the store: the app has it
	c.msg("m-1", "bob", 9)     // a second stored copy
	c.msg("m-2", "bob", 10)
	c.expect(t, protocol.TypeAck, 5, 6, 9, 10)
	if got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'message').map(([, m]) => m.id + '@' + m.seq))`); got != `["m-2@10"]` {
		t.Fatalf("messages given to the app after the reload: %s", got)
	}
	if got := history(pg, "bob"); got != "m-1@5:sent unacked@6:sent m-2@10:sent" {
		t.Fatalf("history: %s", got)
	}
	pg.WaitFor(stuck, "the cursor hint at 10", `c.store.cursorHint().then((h) => h === 10)`)
	if got := tk.Eval[int](pg, `c.stats.duplicatesDropped`); got != 3 {
		t.Fatalf("duplicates dropped: %d, want 3", got)
	}
}

// Ticks, read watermarks (this device's reads and other devices') and
// own messages from other devices are kept; after a reload, receipts
// for messages sent before it are events again, each tick once.
func TestSDKStoreKeepsTicksAndReadState(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	js(pg, `c.on('message', (m) => { c.ack(m.seq); if (m.from === 'bob') c.read(m.seq); })`)
	for i, id := range []string{"a", "b", "c"} {
		send(pg, id)
		c.expect(t, protocol.TypeSend, id)
		c.sent(id, uint64(10+i))
		result(t, pg, id)
	}
	c.write(protocol.AppendReceipt(nil, protocol.StatusDelivered, "bob", "phone", 10, 11, 50, 1795582350000))
	c.expect(t, protocol.TypeAck, 50)
	c.write(protocol.AppendReceipt(nil, protocol.StatusRead, "bob", "phone", 0, 10, 51, 1795582350000))
	c.expect(t, protocol.TypeAck, 51)
	c.msg("from-bob", "bob", 52)
	c.expect(t, protocol.TypeAck, 52)
	c.expect(t, protocol.TypeRead, 52)
	c.msg("from-erin", "erin", 53) // not read
	c.expect(t, protocol.TypeAck, 53)
	c.write(protocol.AppendReadSync(nil, "carol", "phone", 30, 54, 1795582351000))
	c.expect(t, protocol.TypeAck, 54)
	c.write(protocol.AppendOwnMsg(nil, "o1", "alice", "phone", "dave", 55, 15, 1795582349000, []byte(`"from my phone"`), nil))
	c.expect(t, protocol.TypeAck, 55)

	c = reloadSDK(t, s, pg, storeOpt)
	if got := history(pg, "bob"); got != ">a@10:read >b@11:delivered >c@12:sent from-bob@52:sent" {
		t.Fatalf("bob's history: %s", got)
	}
	if got := history(pg, "dave"); got != ">o1@15:sent" {
		t.Fatalf("dave's history (an own message from another device): %s", got)
	}
	got := tk.Eval[string](pg, `Promise.all([c.store.conversations(), c.store.readWatermark('carol')]).then(([cs, carol]) =>
		cs.map((x) => x.conv + ' ' + x.messages + ' unread ' + x.unread + ' read ' + x.readSeq).join(', ') + '; carol read ' + carol)`)
	if want := "dave 1 unread 0 read 0, erin 1 unread 1 read 0, bob 4 unread 0 read 52; carol read 30"; got != want {
		t.Fatalf("conversations:\n%s\nwant\n%s", got, want)
	}

	// Receipts after the reload move the messages sent before it.
	c.write(protocol.AppendReceipt(nil, protocol.StatusRead, "bob", "phone", 0, 12, 60, 1795582350000))
	c.expect(t, protocol.TypeAck, 60)
	c.write(protocol.AppendReceipt(nil, protocol.StatusDelivered, "dave", "laptop", 15, 15, 61, 1795582350000))
	c.expect(t, protocol.TypeAck, 61)
	events := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'receipt').map(([, r]) => r.status + ' ' + r.id + '@' + r.seq))`)
	if want := `["read b@11","read c@12","delivered o1@15"]`; events != want {
		t.Fatalf("receipt events after the reload: %s, want %s", events, want)
	}
	if got := history(pg, "bob"); got != ">a@10:read >b@11:read >c@12:read from-bob@52:sent" {
		t.Fatalf("bob's history after the read: %s", got)
	}
}

// A database written by a newer SDK is refused with a StoreError that
// says so, and left as it is; the client does not connect.
func TestSDKStoreRefusesANewerVersion(t *testing.T) {
	s := newScript(t)
	pg := tk.StartBrowser(t).NewPage(t, "sdk")
	pg.Navigate(s.srv.URL + "/")
	pg.WaitFor(stuck, "the SDK imported", `window.ready === true`)
	js(pg, `const r = indexedDB.open('sb-test', 7);
		r.onupgradeneeded = () => r.result.createObjectStore('future');
		r.onsuccess = () => { r.result.close(); window.made = true; }`)
	pg.WaitFor(stuck, "the newer database made", `window.made === true`)
	got := tk.Eval[string](pg, fmt.Sprintf(`new sb.Client({ url: %q, token: 'tok', store: 'sb-test' }).start().then(() => 'started',
		(e) => [e.name, e.code, e.found, e.known, e.message].join(' | '))`, s.wsURL()))
	want := "StoreError | newer_version | 7 | 3 | switchboard: local store \"sb-test\" is at schema version 7, written by a newer SDK; this SDK knows up to 3: use the newer SDK, or delete the database (it was not changed)"
	if got != want {
		t.Fatalf("start: %s\nwant %s", got, want)
	}
	if got := tk.Eval[string](pg, `sb.openStore('sb-test').then(() => 'opened', (e) => e.code)`); got != "newer_version" {
		t.Fatalf("openStore: %s", got)
	}
	kept := tk.Eval[string](pg, `new Promise((res) => { const r = indexedDB.open('sb-test');
		r.onsuccess = () => { const db = r.result; res(db.version + ' ' + [...db.objectStoreNames].join(',')); db.close(); }; })`)
	if kept != "7 future" {
		t.Fatalf("the newer database is now %q, want it unchanged (7 future)", kept)
	}
	// Fence: the refused client never connected; a second client's
	// connection is the next one the gateway sees.
	js(pg, fmt.Sprintf(`new sb.Client({ url: %q, token: 'second' }).start()`, s.wsURL()))
	if c := s.accept(t); c.token != "second" {
		t.Fatalf("the next connection has token %q: the refused client connected", c.token)
	}
}

// A store another client holds open is refused (locked) until it is
// closed; a database that is not a store is refused (corrupt).
func TestSDKStoreLockedAndCorrupt(t *testing.T) {
	s := newScript(t)
	pg, _ := startSDK(t, s, storeOpt)
	got := tk.Eval[string](pg, fmt.Sprintf(`new sb.Client({ url: %q, token: 'tok', store: 'sb-test' }).ready().then(() => 'opened', (e) => e.name + ' ' + e.code)`, s.wsURL()))
	if got != "StoreError locked" {
		t.Fatalf("a second client on the same store: %s", got)
	}
	js(pg, `c.close()`)
	pg.WaitFor(stuck, "the store free again", `sb.openStore('sb-test').then((st) => { st.close(); return true; }, () => false)`)

	js(pg, `const r = indexedDB.open('not-a-store', 1); r.onsuccess = () => { r.result.close(); window.made = true; }`)
	pg.WaitFor(stuck, "the foreign database made", `window.made === true`)
	if got := tk.Eval[string](pg, `sb.openStore('not-a-store').then(() => 'opened', (e) => e.name + ' ' + e.code)`); got != "StoreError corrupt" {
		t.Fatalf("a database that is not a store: %s", got)
	}
}

// A send the store cannot keep (the quota is full) is rejected with a
// StoreError and never written; once there is room, the same id is sent
// once.
func TestSDKStoreQuotaFullSendsNothing(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	quota := func(size *float64) {
		t.Helper()
		if _, err := chromedp.Call(pg.Context(), storage.OverrideQuotaForOrigin, storage.OverrideQuotaForOriginParams{Origin: s.srv.URL, QuotaSize: size}); err != nil {
			t.Fatal(err)
		}
	}
	quota(new(float64(1)))
	js(pg, `window.big = 'x'.repeat(60000); c.send('bob', 'big', big).then((v) => { results.big = v; }, (e) => { results.big = { error: e.name, code: e.code, message: e.message }; })`)
	if got := result(t, pg, "big"); got != "StoreError quota" {
		t.Fatalf("a send over the quota: %s", got)
	}
	if msg := tk.Eval[string](pg, `results.big.message`); !strings.Contains(msg, "quota") || !strings.Contains(msg, "nothing of this write was kept") {
		t.Fatalf("the error says %q", msg)
	}
	c.fence(t, pg) // nothing was written before it
	quota(nil)
	js(pg, `delete results.big; c.send('bob', 'big', big).then((v) => { results.big = v; }, (e) => { results.big = { error: e.name, code: e.code }; })`)
	c.expect(t, protocol.TypeSend, "big")
	c.sent("big", 1)
	if got := result(t, pg, "big"); got != "seq 1" {
		t.Fatalf("the send once there is room: %s", got)
	}
	c.fence(t, pg)
}

// A message whose store write fails (a full disk, say; here the store's
// write refuses it once) ends the connection, and the messages behind it
// on that connection are neither given to the app nor stored ahead of
// it: they come again after the reconnect, behind it, in order.
func TestSDKStoreKeepsOrderWhenAWriteFails(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	js(pg, `c.on('message', (m) => c.ack(m.seq));
		const received = c.store.received.bind(c.store);
		let failed = false;
		c.store.received = (m, ...rest) => {
			if (m.id === 'm-1' && !failed) {
				failed = true;
				// As a disk does: the write fails after a while, once the
				// frames behind it have come in.
				return new Promise((_, reject) => setTimeout(() => reject(new DOMException('scripted', 'UnknownError')), 300));
			}
			return received(m, ...rest);
		}`)
	frames := func(c *sconn) {
		c.msg("m-1", "bob", 5)
		c.msg("m-2", "bob", 6)
		c.msg("m-3", "bob", 7)
	}
	frames(c)
	pg.WaitFor(stuck, "the store's error", `log.some(([t, e]) => t === 'error' && e.code === 'local_store')`)
	c = s.accept(t)
	frames(c)
	c.expect(t, protocol.TypeAck, 5, 6, 7)
	if got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'message').map(([, m]) => m.id))`); got != `["m-1","m-2","m-3"]` {
		t.Fatalf("messages given to the app: %s", got)
	}
	if got := history(pg, "bob"); got != "m-1@5:sent m-2@6:sent m-3@7:sent" {
		t.Fatalf("history: %s", got)
	}
}

// A send made before the page first connected (offline, before any
// welcome said the gateway's limit) that is larger than the gateway takes
// is rejected when the page connects, dropped from the store, and never
// written; the sends behind it go.
func TestSDKStoreDropsAKeptSendLargerThanTheGatewayTakes(t *testing.T) {
	s := newScript(t)
	pg := tk.StartBrowser(t).NewPage(t, "sdk")
	pg.Navigate(s.srv.URL + "/")
	pg.WaitFor(stuck, "the SDK imported", `window.ready === true`)
	js(pg, fmt.Sprintf(`
		window.c = new sb.Client({ url: %q, token: 'tok', minBackoff: 1, maxBackoff: 20, %s });
		c.send('bob', 'big', 'x'.repeat(70000)).then((v) => { results.big = v; }, (e) => { results.big = { error: e.name, code: '' }; });
		c.send('bob', 'small', 'hi').then((v) => { results.small = v; }, (e) => { results.small = { error: e.name, code: e.code }; });
		c.start()`, s.wsURL(), storeOpt))
	c := s.accept(t)
	c.expect(t, protocol.TypeSend, "small")
	c.sent("small", 1)
	if got := result(t, pg, "big"); got != "RangeError " {
		t.Fatalf("the send past max_frame: %q", got)
	}
	if got := result(t, pg, "small"); got != "seq 1" {
		t.Fatalf("small: %s", got)
	}
	if got := tk.Eval[int](pg, `c.store.outbox().then((o) => o.length)`); got != 0 {
		t.Fatalf("the store's outbox holds %d sends, want none", got)
	}
}

// A store that fails every message write ends each connection (the
// message comes again on the next), and the waits before connecting
// again grow as for connects that fail, instead of starting over at
// minBackoff after each.
func TestSDKStoreFailuresBackOff(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	js(pg, `c.on('reconnecting', (d) => log.push(['reconnecting', d]));
		c.store.received = () => Promise.reject(new DOMException('scripted', 'QuotaExceededError'))`)
	for i := range 6 {
		c.msg("m-1", "bob", 5)
		pg.WaitFor(stuck, "a reconnect", fmt.Sprintf(`log.filter(([t]) => t === 'reconnecting').length > %d`, i))
		c = s.accept(t)
	}
	if got := tk.Eval[float64](pg, `Math.max(...log.filter(([t]) => t === 'reconnecting').map(([, d]) => d.delay))`); got <= 1 {
		t.Fatalf("6 connections ended by a failing store, each followed by a wait of %v ms at most: no backoff", got)
	}
}

// status of a message sent to another region names its recipient after a
// reload too, when the message is already read (so no longer among those
// whose ticks the client follows): the local store knows whom it went to.
func TestSDKStoreNamesTheRecipientOfAnOldMessage(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	const far = uint64(1)<<52 + 9
	send(pg, "far")
	c.expect(t, protocol.TypeSend, "far")
	c.sent("far", far)
	result(t, pg, "far")
	c.write(protocol.AppendReceipt(nil, protocol.StatusRead, "bob", "phone", 0, far, 60, 1795582350000))
	c.expect(t, protocol.TypeAck, 60)
	pg.WaitFor(stuck, "the message read in the store", `c.store.messages('bob').then((ms) => ms.length === 1 && ms[0].status === 'read')`)

	c = reloadSDK(t, s, pg, storeOpt)
	js(pg, fmt.Sprintf(`c.status(%d).then((v) => { results.st = v; }, (e) => { results.st = { error: e.name, code: e.code }; })`, far))
	f := c.next(t)
	if f.Type != protocol.TypeStatus || f.Seq != far || f.To != "bob" {
		t.Fatalf("status after the reload wrote %+v, want a status of %d to bob", f, far)
	}
	c.write(protocol.EncodeStatus(far, map[string]protocol.Ticks{"bob": {Delivered: true, Read: true}}))
	pg.WaitFor(stuck, "the status", `results.st !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.st)`); got != `{"bob":{"delivered":true,"read":true}}` {
		t.Fatalf("status resolved with %s", got)
	}
}
