package web_test

import (
	"fmt"
	"testing"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// groupHistory is a group's conversation as the store holds it:
// id@seq:status, own ones marked >, system messages with their op.
func groupHistory(pg *tk.Page, group string) string {
	return tk.Eval[string](pg, fmt.Sprintf(`c.store.groupMessages(%q).then((ms) => ms.map((m) =>
		(m.own ? '>' : '') + (m.event ? m.event.op + ':' : '') + m.id + '@' + m.seq + ':' + m.status).join(' '))`, group))
}

// conversations lists the store's conversations: group/conv messages
// unread readSeq.
func conversations(pg *tk.Page) string {
	return tk.Eval[string](pg, `c.store.conversations().then((cs) => cs.map((x) =>
		x.group + '/' + x.conv + ' ' + x.messages + ' unread ' + x.unread + ' read ' + x.readSeq).join(', '))`)
}

// The store keeps group traffic as the Go store does: group sends go
// through the same ordered outbox as 1:1 sends and are resent after a
// reload, in order, under their ids; group messages, system messages
// and own group copies from other devices are kept, and dropped (acked)
// when redelivered after the reload; group receipts tick the group's
// messages, and a group read_sync raises the group's read watermark.
func TestSDKStoreKeepsGroupTraffic(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	js(pg, `c.on('read_sync', (d) => log.push(['read_sync', d])); c.on('message', (m) => c.ack(m.seq))`)
	js(pg, `for (const [id, send] of [['g1', () => c.sendGroup('friends', 'g1', 'one')], ['d1', () => c.send('bob', 'd1', 'direct')],
		['g2', () => c.sendGroup('friends', 'g2', 'two')]]) send().then((v) => { results[id] = v; }, (e) => { results[id] = { error: e.name, code: e.code }; })`)
	c.expect(t, protocol.TypeSend, "g1", "d1", "g2")
	c.sent("g1", 40)
	if got := result(t, pg, "g1"); got != "seq 40" {
		t.Fatalf("g1: %s", got)
	}
	pg.WaitFor(stuck, "the outbox holding d1 and g2", `c.store.outbox().then((o) => o.map((p) => p.id + ':' + (p.group || p.to)).join(' ') === 'd1:bob g2:friends')`)

	c.write(protocol.AppendGroupMsg(nil, "b1", "bob", "phone", "friends", 60, 1795582349000, []byte(`"hi all"`), nil))
	c.expect(t, protocol.TypeAck, 60)
	c.write(protocol.AppendGroupEvent(nil, "ev-1", "bob", "phone", "friends", 61, 1795582349000, []byte(`{"op":"add","users":["carol"]}`)))
	c.expect(t, protocol.TypeAck, 61)
	c.write(protocol.AppendOwnGroupMsg(nil, "o1", "alice", "phone", "friends", 62, 41, 1795582349000, []byte(`"from my phone"`), nil))
	c.expect(t, protocol.TypeAck, 62)
	c.write(protocol.AppendGroupReceipt(nil, protocol.StatusDelivered, "friends", "carol", "phone", 40, 41, 63, 1795582350000))
	c.expect(t, protocol.TypeAck, 63)
	c.write(protocol.AppendGroupReadSync(nil, "friends", "phone", 61, 64, 1795582351000))
	c.expect(t, protocol.TypeAck, 64)
	c.write(protocol.AppendGroupMsg(nil, "b2", "bob", "phone", "friends", 65, 1795582352000, []byte(`"still there?"`), nil))
	c.expect(t, protocol.TypeAck, 65)
	got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'receipt' || t === 'read_sync').map(([t, d]) =>
		t === 'receipt' ? [t, d.id, d.status, d.group, d.seq] : [t, d.peer, d.group, d.device, d.seq]))`)
	if want := `[["receipt","g1","delivered","friends",40],["receipt","o1","delivered","friends",41],["read_sync","","friends","phone",61]]`; got != want {
		t.Fatalf("events:\n%s\nwant\n%s", got, want)
	}

	// The reload: the unconfirmed sends go first, in order, the group's
	// with its group.
	c = reloadSDK(t, s, pg, storeOpt, `c.on('message', (m) => c.ack(m.seq))`)
	for _, id := range []string{"d1", "g2"} {
		f := c.next(t)
		if f.Type != protocol.TypeSend || f.ID != id {
			t.Fatalf("after the reload: %s %s, want the send %s", f.Type, f.ID, id)
		}
		if id == "g2" && (f.Group != "friends" || f.To != "" || string(f.Body) != `"two"`) {
			t.Fatalf("g2 resent with group %q to %q body %s", f.Group, f.To, f.Body)
		}
	}
	if got, want := groupHistory(pg, "friends"), ">g1@40:delivered >g2@0:pending b1@60:sent add:ev-1@61:sent >o1@41:delivered b2@65:sent"; got != want {
		t.Fatalf("the group's history after the reload:\n%s\nwant\n%s", got, want)
	}
	if got, want := conversations(pg), "friends/friends 6 unread 1 read 61, /bob 1 unread 0 read 0"; got != want {
		t.Fatalf("conversations:\n%s\nwant\n%s", got, want)
	}
	if w := tk.Eval[int](pg, `c.store.groupReadWatermark('friends')`); w != 61 {
		t.Fatalf("the group's read watermark is %d, want 61", w)
	}

	// Redeliveries are dropped and acked; a group read receipt after the
	// reload ticks the messages sent before it; g2's "sent" confirms it.
	c.write(protocol.AppendGroupMsg(nil, "b1", "bob", "phone", "friends", 60, 1795582349000, []byte(`"hi all"`), nil))
	c.write(protocol.AppendGroupEvent(nil, "ev-1", "bob", "phone", "friends", 61, 1795582349000, []byte(`{"op":"add","users":["carol"]}`)))
	c.write(protocol.AppendOwnGroupMsg(nil, "o1", "alice", "phone", "friends", 62, 41, 1795582349000, []byte(`"from my phone"`), nil))
	c.expect(t, protocol.TypeAck, 60, 61, 62)
	c.sent("d1", 12)
	c.sent("g2", 42)
	pg.WaitFor(stuck, "the outbox empty", `c.store.outbox().then((o) => o.length === 0)`)
	c.write(protocol.AppendGroupReceipt(nil, protocol.StatusRead, "friends", "carol", "phone", 0, 41, 70, 1795582353000))
	c.expect(t, protocol.TypeAck, 70)
	c.fence(t, pg)
	if got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'message' || t === 'receipt').map(([t, d]) => [t, d.id, d.status ?? '']))`); got != `[["receipt","g1","read"],["receipt","o1","read"]]` {
		t.Fatalf("events after the reload: %s", got)
	}
	if got, want := groupHistory(pg, "friends"), ">g1@40:read >g2@42:sent b1@60:sent add:ev-1@61:sent >o1@41:read b2@65:sent"; got != want {
		t.Fatalf("the group's history at the end:\n%s\nwant\n%s", got, want)
	}
	if got := history(pg, "bob"); got != ">d1@12:sent" {
		t.Fatalf("bob's history: %s", got)
	}

	// A group send refused for good leaves the outbox, dropped.
	js(pg, `c.sendGroup('friends', 'g3', 'three').then((v) => { results.g3 = v; }, (e) => { results.g3 = { error: e.name, code: e.code }; })`)
	c.expect(t, protocol.TypeSend, "g3")
	pg.WaitFor(stuck, "g3 in the store's outbox", `c.store.outbox().then((o) => o.length === 1 && o[0].group === 'friends')`)
	c.write(protocol.EncodeError(protocol.ErrNotMember, "scripted", "g3", 0, 0))
	if got := result(t, pg, "g3"); got != "ServerError not_member" {
		t.Fatalf("g3: %s", got)
	}
	pg.WaitFor(stuck, "g3 dropped", `c.store.groupMessage('friends', '', 'g3').then((m) => m.status === 'dropped')`)
	if n := tk.Eval[int](pg, `c.store.outbox().then((o) => o.length)`); n != 0 {
		t.Fatalf("the outbox holds %d sends after the refusal", n)
	}
}

// v1Store makes the database sb-test as version 1 of the store left it
// (the schema of its first migration, written here as it was released),
// with 1:1 messages both ways (4,500 from zed first), a pending send,
// ticks, a read watermark and a cursor hint.
const v1Store = `new Promise((res, rej) => {
	const r = indexedDB.open('sb-test', 1);
	r.onupgradeneeded = () => {
		const db = r.result;
		const m = db.createObjectStore('messages', { keyPath: 'n', autoIncrement: true });
		m.createIndex('key', ['from', 'id'], { unique: true });
		m.createIndex('conv', ['conv', 'n']);
		m.createIndex('seq', 'seq');
		m.createIndex('outbox', 'pending');
		m.createIndex('tickable', 'tickable');
		m.createIndex('incoming', 'incoming');
		db.createObjectStore('conversations', { keyPath: 'conv' });
		db.createObjectStore('meta', { keyPath: 'key' });
		for (let i = 0; i < 4500; i++) { // more than the migration reads at once
			m.add({ conv: 'zed', from: 'zed', device: 'phone', id: 'z' + i, seq: 100 + i, ts: 1795582349000, body: 'z', media: null, status: 1, acked: true, incoming: ['zed', 100 + i] });
		}
		const own = (id, seq, status) => ({ conv: 'bob', from: '', device: '', id, seq, ts: 1795582349000, body: id, media: null, status, acked: false });
		m.add({ ...own('a', 10, 1), tickable: ['bob', 10] });
		m.add({ ...own('b', 11, 2), tickable: ['bob', 11] });
		m.add({ conv: 'bob', from: 'bob', device: 'phone', id: 'm', seq: 50, ts: 1795582349000, body: 'hi', media: null, status: 1, acked: true, incoming: ['bob', 50] });
		m.add({ conv: 'erin', from: 'erin', device: 'phone', id: 'e', seq: 51, ts: 1795582349000, body: 'yo', media: null, status: 1, acked: true, incoming: ['erin', 51] });
		m.add({ ...own('p', 0, 0), pending: 1 });
		r.transaction.objectStore('conversations').put({ conv: 'bob', readSeq: 50 });
		r.transaction.objectStore('meta').put({ key: 'cursor_hint', value: 51 });
	};
	r.onerror = () => rej(r.error);
	r.onsuccess = () => { r.result.close(); res(true); };
})`

// A version-1 store is migrated to the latest version (through 2, then
// 3) in its upgrade transaction with its data intact: its history,
// outbox (resent first), ticks (moved by receipts after the migration),
// read watermark, cursor hint and dedup keys; group traffic is kept
// beside it afterwards.
func TestSDKStoreMigratesVersion1(t *testing.T) {
	s := newScript(t)
	pg := tk.StartBrowser(t).NewPage(t, "sdk")
	pg.Navigate(s.srv.URL + "/")
	pg.WaitFor(stuck, "the SDK imported", `window.ready === true`)
	if !tk.Eval[bool](pg, v1Store) {
		t.Fatal("the version-1 store was not made")
	}
	c := reloadSDK(t, s, pg, storeOpt, `c.on('message', (m) => c.ack(m.seq))`)
	c.expect(t, protocol.TypeSend, "p")
	if v := tk.Eval[int](pg, `c.store.version`); v != 3 {
		t.Fatalf("the store is at version %d, want 3", v)
	}
	if got, want := history(pg, "bob"), ">a@10:sent >b@11:delivered m@50:sent >p@0:pending"; got != want {
		t.Fatalf("bob's history after the migration:\n%s\nwant\n%s", got, want)
	}
	if got, want := conversations(pg), "/bob 4 unread 0 read 50, /erin 1 unread 1 read 0, /zed 4500 unread 4500 read 0"; got != want {
		t.Fatalf("conversations after the migration:\n%s\nwant\n%s", got, want)
	}
	if h := tk.Eval[int](pg, `c.store.cursorHint()`); h != 51 {
		t.Fatalf("the cursor hint is %d, want 51", h)
	}

	// The dedup keys came along: bob's message again is acked, not shown.
	c.msg("m", "bob", 50)
	c.expect(t, protocol.TypeAck, 50)
	c.write(protocol.AppendMsg(nil, "z4499", "zed", "phone", 4599, 1795582349000, []byte(`"z"`), nil))
	c.expect(t, protocol.TypeAck, 4599)
	c.write(protocol.AppendReceipt(nil, protocol.StatusRead, "bob", "phone", 0, 11, 71, 1795582350000))
	c.expect(t, protocol.TypeAck, 71)
	c.sent("p", 12)
	c.write(protocol.AppendGroupMsg(nil, "g", "bob", "phone", "friends", 72, 1795582351000, []byte(`"in a group"`), nil))
	c.expect(t, protocol.TypeAck, 72)
	if got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'message' || t === 'receipt').map(([t, d]) => [t, d.id, d.status ?? '']))`); got != `[["receipt","a","read"],["receipt","b","read"],["message","g",""]]` {
		t.Fatalf("events after the migration: %s", got)
	}
	pg.WaitFor(stuck, "p confirmed", `c.store.outbox().then((o) => o.length === 0)`)
	if got, want := history(pg, "bob"), ">a@10:read >b@11:read m@50:sent >p@12:sent"; got != want {
		t.Fatalf("bob's history at the end:\n%s\nwant\n%s", got, want)
	}
	if got, want := conversations(pg), "friends/friends 1 unread 1 read 0, /bob 4 unread 0 read 50, /erin 1 unread 1 read 0, /zed 4500 unread 4500 read 0"; got != want {
		t.Fatalf("conversations at the end:\n%s\nwant\n%s", got, want)
	}
}

// A group read_sync is a 'read_sync' event with group; the presence of
// a group's members is followed with one frame, again after each
// reconnect, until it is unfollowed.
func TestSDKGroupReadSyncAndPresence(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.on('read_sync', (d) => log.push(['read_sync', d]))`)
	c.write(protocol.AppendGroupReadSync(nil, "friends", "phone", 52, 81, 1795582352000))
	c.expect(t, protocol.TypeAck, 81)
	if got := events(pg, "read_sync"); got != `[{"peer":"","group":"friends","device":"phone","seq":52,"ts":1795582352000}]` {
		t.Fatalf("read_sync events: %s", got)
	}

	js(pg, `c.subscribePresence('erin'); c.subscribePresenceGroup('friends'); c.subscribePresenceGroup('work')`)
	presence := func(c *sconn, typ, what string) {
		t.Helper()
		f := c.next(t)
		got := f.Group
		if len(f.Users) > 0 {
			got = fmt.Sprint(f.Users)
		}
		if f.Type != typ || got != what {
			t.Fatalf("next frame %s %q %v, want %s %s", f.Type, f.Group, f.Users, typ, what)
		}
	}
	presence(c, protocol.TypePresenceSub, "[erin]")
	presence(c, protocol.TypePresenceSub, "friends")
	presence(c, protocol.TypePresenceSub, "work")
	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	presence(c, protocol.TypePresenceSub, "[erin]")
	presence(c, protocol.TypePresenceSub, "friends")
	presence(c, protocol.TypePresenceSub, "work")
	js(pg, `c.unsubscribePresenceGroup('work')`)
	presence(c, protocol.TypePresenceUnsub, "work")
	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	presence(c, protocol.TypePresenceSub, "[erin]")
	presence(c, protocol.TypePresenceSub, "friends")
	c.fence(t, pg)
	if got := tk.Eval[string](pg, `(() => { try { c.subscribePresenceGroup('no good'); return 'taken'; } catch (e) { return e.name; } })()`); got != "TypeError" {
		t.Fatalf("a bad group id: %s", got)
	}
}

// The store keeps the messages of a group read from its log with their
// place in it: acked by place (one ack covers the group up to it), read
// by place from this page and from another device (read_sync with
// gseq), counted unread against that place; one this user sent from
// another device as their own at its place. After a reload, one an
// earlier page stored comes again: dropped, and acked by place.
func TestSDKStoreKeepsGroupLog(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, storeOpt)
	js(pg, `c.on('message', (m) => { if (m.id === 'b1') c.ackGroup(m.group, m.gseq); })`)
	groupFrame := func(typ string, gseq uint64) {
		t.Helper()
		if f := c.next(t); f.Type != typ || f.Group != "crowd" || f.GSeq != gseq || f.Seq != 0 {
			t.Fatalf("next frame %+v, want %s of crowd at %d", *f, typ, gseq)
		}
	}
	b1 := protocol.AppendGroupLogMsg(nil, "b1", "bob", "phone", "crowd", 70, 1795582349000, []byte(`"hi all"`), nil)
	b2 := protocol.AppendGroupLogMsg(nil, "b2", "bob", "phone", "crowd", 71, 1795582350000, []byte(`"later"`), nil)
	o1 := protocol.AppendGroupLogMsg(nil, "o1", "alice", "laptop", "crowd", 72, 1795582351000, []byte(`"from my laptop"`), nil)
	c.write(b1)
	groupFrame(protocol.TypeAck, 70)
	c.write(b2)
	c.write(o1)
	c.fence(t, pg) // b2 and o1 held by the app
	js(pg, `c.readGroup('crowd', 70)`)
	groupFrame(protocol.TypeRead, 70)

	logHistory := func() string {
		return tk.Eval[string](pg, `c.store.groupMessages('crowd').then((ms) => ms.map((m) =>
			(m.own ? '>' : '') + m.id + '@' + m.seq + '/' + m.gseq + (m.acked ? ':acked' : '')).join(' '))`)
	}
	// Written by the handler (ack and read are not waited for): waited for.
	pg.WaitFor(stuck, "b1 acked in the store", `c.store.groupMessage('crowd', 'bob', 'b1').then((m) => m?.acked)`)
	if got, want := logHistory(), "b1@0/70:acked b2@0/71 >o1@72/0"; got != want {
		t.Fatalf("the group's history:\n%s\nwant\n%s", got, want)
	}
	pg.WaitFor(stuck, "the read place at 70", `c.store.groupReadPlace('crowd').then((p) => p === 70)`)
	if got := tk.Eval[string](pg, `c.store.conversations().then((cs) => JSON.stringify(cs.map((x) => [x.group, x.unread, x.readSeq, x.readGSeq])))`); got != `[["crowd",1,0,70]]` {
		t.Fatalf("conversations: %s, want crowd with b2 unread, read up to 70 in its log", got)
	}
	c.write(protocol.AppendGroupLogReadSync(nil, "crowd", "laptop", 71, 90, 1795582352000))
	c.expect(t, protocol.TypeAck, 90)
	if p := tk.Eval[int](pg, `c.store.groupReadPlace('crowd')`); p != 71 {
		t.Fatalf("read place %d after the read_sync, want 71", p)
	}

	// The reload: b2 and b1 come again; both were stored, so neither is
	// an event, and each is acked by its place.
	c = reloadSDK(t, s, pg, storeOpt, `c.on('message', (m) => log.push(['late', m.id]))`)
	c.write(b2)
	groupFrame(protocol.TypeAck, 71)
	c.write(b1)
	groupFrame(protocol.TypeAck, 70)
	c.fence(t, pg)
	if got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'late'))`); got != `[]` {
		t.Fatalf("the app got again: %s", got)
	}
	if got, want := logHistory(), "b1@0/70:acked b2@0/71:acked >o1@72/0"; got != want {
		t.Fatalf("the group's history after the reload:\n%s\nwant\n%s", got, want)
	}
}
