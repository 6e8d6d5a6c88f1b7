package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// recvPresence returns the next presence event about user, skipping
// events about others.
func recvPresence(t *testing.T, c *client.Client, user string) client.Presence {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case p := <-c.PresenceEvents():
			if p.User == user {
				return p
			}
		case <-deadline:
			t.Fatalf("no presence event about %s", user)
		}
	}
}

// waitPresence reads presence events about user until one says online
// (or offline), skipping answers that raced ahead of the change. The user
// must not be hidden, and offline must come with a last seen time.
func waitPresence(t *testing.T, c *client.Client, user string, online bool) {
	t.Helper()
	for {
		p := recvPresence(t, c, user)
		switch {
		case p.Hidden:
			t.Fatalf("%s hidden: %+v", user, p)
		case p.Online != online:
			continue
		case !online && p.LastSeen.IsZero():
			t.Fatalf("%s offline with no last seen: %+v", user, p)
		}
		return
	}
}

func nextPresenceEvent(t *testing.T, c *client.Client) client.Presence {
	t.Helper()
	select {
	case p := <-c.PresenceEvents():
		return p
	case <-time.After(wait):
		t.Fatal("no presence event")
	}
	return client.Presence{}
}

// A follower gets the current state at once, then each change: online
// when the first device connects, offline with a last seen time when the
// last one leaves.
func TestPresenceFollowsDevicesComingAndGoing(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	if err := alice.SubscribePresence("bob"); err != nil {
		t.Fatal(err)
	}
	if p := recvPresence(t, alice, "bob"); p.Online || p.Hidden || !p.LastSeen.IsZero() {
		t.Fatalf("never-seen bob: %+v", p)
	}
	phone := tk.Dial(t, g.URL, "bob", "phone")
	if p := recvPresence(t, alice, "bob"); !p.Online {
		t.Fatalf("bob connected: %+v", p)
	}
	laptop := tk.Dial(t, g.URL, "bob", "laptop")
	_ = phone.Close()
	before := time.Now().Add(-time.Second)
	_ = laptop.Close()
	p := recvPresence(t, alice, "bob")
	if p.Online || p.LastSeen.Before(before) {
		t.Fatalf("bob left: %+v, want offline, last seen after %s", p, before)
	}

	if err := alice.UnsubscribePresence("bob"); err != nil {
		t.Fatal(err)
	}
	// The unsubscribe is applied in order with the frames after it: a
	// status round trip proves the gateway has read it.
	if _, err := alice.Settings(context.Background(), client.SettingsChange{}); err != nil {
		t.Fatal(err)
	}
	// What the gateway sent before it read the unsubscribe came before
	// the settings answer, so the SDK has queued it by now: a late copy of
	// an earlier change (publishes of one user's changes can cross on a
	// loaded machine) is not news after the unsubscribe.
	for drained := false; !drained; {
		select {
		case <-alice.PresenceEvents():
		default:
			drained = true
		}
	}
	carol := tk.Dial(t, g.URL, "carol", "phone")
	if err := carol.SubscribePresence("bob"); err != nil {
		t.Fatal(err)
	}
	recvPresence(t, carol, "bob")
	tk.Dial(t, g.URL, "bob", "phone")
	// carol still follows bob: once she sees him online, the update was
	// published; alice, who stopped following, then asks about zed and
	// gets that answer with nothing about bob before it.
	// (bob's leaving, published before carol followed, may still reach
	// her after her answer.)
	waitPresence(t, carol, "bob", true)
	if err := alice.SubscribePresence("zed"); err != nil {
		t.Fatal(err)
	}
	if p := nextPresenceEvent(t, alice); p.User != "zed" {
		t.Fatalf("alice, who unfollowed bob, got %+v", p)
	}
	if err := alice.SubscribePresence("bad.id"); !errors.Is(err, client.ErrBadID) {
		t.Fatalf("SDK accepted a bad id: %v", err)
	}
}

// bob shows his presence to contacts only: carol, on his list, sees him;
// alice gets hidden in the first answer, and nothing when he comes and
// goes (TestHiddenPresenceSendsNothingOnChanges).
func TestLastSeenPrivacyThroughTheGateway(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	bob := tk.Dial(t, g.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	contacts := []string{"carol", "carol"}
	set, err := bob.Settings(ctx, client.SettingsChange{LastSeenPrivacy: protocol.PrivacyContacts, Contacts: &contacts})
	if err != nil {
		t.Fatal(err)
	}
	if set.LastSeenPrivacy != protocol.PrivacyContacts || len(set.Contacts) != 1 || !set.ReadReceipts {
		t.Fatalf("stored settings %+v", set)
	}
	alice := tk.Dial(t, g.URL, "alice", "phone")
	carol := tk.Dial(t, g.URL, "carol", "phone")
	for _, c := range []*client.Client{alice, carol} {
		if err := c.SubscribePresence("bob"); err != nil {
			t.Fatal(err)
		}
	}
	// Each change comes as it happens; an answer and a change that cross
	// may both say the same, so carol reads until the state she expects.
	waitPresence(t, carol, "bob", true)
	if p := recvPresence(t, alice, "bob"); !p.Hidden || p.Online {
		t.Fatalf("alice (not a contact) sees %+v", p)
	}
	_ = bob.Close()
	// carol's first answer may have been read before bob's lease was
	// applied and arrive after the update that says he is online: it says
	// offline, never seen. The offline that follows his close has his
	// last seen.
	for p := recvPresence(t, carol, "bob"); p.Online || p.LastSeen.IsZero(); p = recvPresence(t, carol, "bob") {
		if p.Hidden {
			t.Fatalf("carol, a contact, sees %+v", p)
		}
	}

	// Nobody: carol is hidden from now on too.
	bob = tk.Dial(t, g.URL, "bob", "phone")
	waitPresence(t, carol, "bob", true)
	if _, err := bob.Settings(ctx, client.SettingsChange{LastSeenPrivacy: protocol.PrivacyNobody}); err != nil {
		t.Fatal(err)
	}
	for p := recvPresence(t, carol, "bob"); !p.Hidden; p = recvPresence(t, carol, "bob") {
		if !p.Online {
			t.Fatalf("carol sees %+v after bob chose nobody", p)
		}
	}
}

// The sender asks for a message's status and gets each recipient's ticks;
// no one else can. With read receipts off, bob's reads stay private.
func TestStatusAndReadReceiptsSetting(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	send(t, alice, "bob", "m1", "hi")
	m := tk.RecvMsg(t, bob, wait)
	bob.Ack(m.Seq)
	if r := tk.RecvReceipt(t, alice, wait); r.Status != protocol.StatusDelivered || r.By != "bob" || r.ID != "m1" {
		t.Fatalf("receipt %+v, want delivered of m1 by bob", r)
	}
	bob.Read(m.Seq)
	if r := tk.RecvReceipt(t, alice, wait); r.Status != protocol.StatusRead || r.By != "bob" || r.ID != "m1" {
		t.Fatalf("receipt %+v, want read of m1 by bob", r)
	}
	// Delivered is answered from bob's cursor, saved a moment after his
	// ack: the status may lag the tick by that much, never the other way.
	tk.WaitFor(t, wait, func() error {
		st, err := alice.Status(ctx, "m1")
		if err != nil {
			return err
		}
		if tick := st["bob"]; !tick.Delivered || !tick.Read {
			return fmt.Errorf("status of m1: %+v", st)
		}
		return nil
	})
	// Bob asking about alice's message by its seq is refused.
	var se *client.ServerError
	if st, err := bob.StatusOf(ctx, m.Seq); !errors.As(err, &se) || se.Code != protocol.ErrUnknownSeq {
		t.Fatalf("bob asking about alice's m1 got %+v, %v; want unknown_seq", st, err)
	}

	off := false
	if set, err := bob.Settings(ctx, client.SettingsChange{ReadReceipts: &off}); err != nil || set.ReadReceipts {
		t.Fatalf("settings %+v, %v", set, err)
	}
	send(t, alice, "bob", "m2", "and this?")
	m = tk.RecvMsg(t, bob, wait)
	bob.Ack(m.Seq)
	bob.Read(m.Seq)
	if r := tk.RecvReceipt(t, alice, wait); r.Status != protocol.StatusDelivered || r.ID != "m2" {
		t.Fatalf("receipt %+v, want delivered m2", r)
	}
	tk.WaitFor(t, wait, func() error {
		st, err := alice.Status(ctx, "m2")
		if tick := st["bob"]; err != nil || !tick.Delivered {
			return fmt.Errorf("status of m2 = %+v, %v", st, err)
		}
		return nil
	})
	if st, _ := alice.Status(ctx, "m2"); st["bob"].Read {
		t.Fatalf("status of m2 = %+v, want delivered only", st["bob"])
	}
	// Fence: a tick that takes the path a read receipt would (the
	// receipts function, then alice's inbox), asked for once m2's read
	// was applied: the function stores a read tick before it raises the
	// read position, so one for m2 would come first.
	reads, err := n.JS.KeyValue(ctx, contract.ReadsKV)
	if err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, wait, func() error {
		e, err := reads.Get(ctx, contract.ReadKey("bob", "alice"))
		if err != nil || string(e.Value()) != strconv.FormatUint(m.Seq, 10) {
			return fmt.Errorf("bob's read position of alice: %v", err)
		}
		return nil
	})
	send(t, alice, "bob", "m3", "fence")
	bob.Ack(tk.NextMsgIs(t, bob, "alice", "m3", wait).Seq)
	if r := tk.RecvReceipt(t, alice, wait); r.ID != "m3" || r.Status != protocol.StatusDelivered {
		t.Fatalf("alice got %+v before the fence (m3 delivered) although bob turned read receipts off", r)
	}
}

// Bad presence and settings frames get error codes and change nothing.
func TestBadPresenceAndSettingsFrames(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.MaxPresenceSubs = 2
	g := tk.StartGateway(t, n, cfg)
	raw := connectRaw(t, g, "alice", "phone")
	for _, c := range []struct {
		frame string
		code  protocol.ErrorCode
	}{
		{`{"type":"presence_sub"}`, protocol.ErrBadField},
		{`{"type":"presence_sub","users":["a.b"]}`, protocol.ErrBadID},
		{`{"type":"presence_sub","users":"bob"}`, protocol.ErrBadField},
		{`{"type":"settings","last_seen_privacy":"friends"}`, protocol.ErrBadField},
		{`{"type":"settings","contacts":["ok","not ok"]}`, protocol.ErrBadID},
		{`{"type":"status"}`, protocol.ErrBadField},
		{`{"type":"presence_sub","users":["b","c","d"]}`, protocol.ErrTooMany},
	} {
		raw.write(c.frame)
		if f := nextOfType(raw, protocol.TypeError); f.Code != c.code {
			t.Errorf("%s: code %s, want %s", c.frame, f.Code, c.code)
		}
	}
	raw.write(`{"type":"settings"}`)
	if f := nextOfType(raw, protocol.TypeSettings); f.LastSeenPrivacy != protocol.PrivacyEveryone || f.ReadReceipts == nil || !*f.ReadReceipts || f.ID != "" {
		t.Fatalf("settings after bad frames: %+v", f)
	}
	// A settings frame with an id has it echoed, in the answer and in a
	// refusal; a bad id is refused naming none.
	raw.write(`{"type":"settings","id":"q-1","last_seen_privacy":"friends"}`)
	if f := nextOfType(raw, protocol.TypeError); f.Code != protocol.ErrBadField || f.ID != "q-1" {
		t.Fatalf("a bad change with an id: %+v, want bad_field naming q-1", f)
	}
	raw.write(`{"type":"settings","id":"q 2"}`)
	if f := nextOfType(raw, protocol.TypeError); f.Code != protocol.ErrBadID || f.ID != "" {
		t.Fatalf("a settings frame with a bad id: %+v, want bad_id", f)
	}
	raw.write(`{"type":"settings","id":"q-3"}`)
	if f := nextOfType(raw, protocol.TypeSettings); f.ID != "q-3" || f.ReadReceipts == nil {
		t.Fatalf("settings asked under q-3: %+v", f)
	}
}

// nextOfType reads frames until one of type typ, skipping presence frames
// (answers to a subscription that arrive in their own time).
func nextOfType(r *raw, typ string) *protocol.Frame {
	r.t.Helper()
	for {
		f := r.next()
		if f.Type == typ {
			return f
		}
		if f.Type != protocol.TypePresence {
			r.t.Fatalf("got %+v, want a %s frame", *f, typ)
		}
	}
}

func leaseOf(t *testing.T, n *tk.NATS, user, device string) (contract.Lease, uint64, error) {
	t.Helper()
	kv, err := n.JS.KeyValue(context.Background(), contract.PresenceKV)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), contract.LeaseKey(user, device))
	if err != nil {
		return contract.Lease{}, 0, err
	}
	var l contract.Lease
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		t.Fatal(err)
	}
	return l, e.Revision(), nil
}

// A lease that vanished under a live session (it expired while NATS was
// unreachable) is written again by the next refresh, and the user shows
// online again.
func TestLeaseIsTakenBackAfterItVanished(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.PresenceTTL = 3 * time.Second // refreshed within a second
	g := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	if err := alice.SubscribePresence("bob"); err != nil {
		t.Fatal(err)
	}
	// The first answer may predate the function applying bob's lease.
	waitPresence(t, alice, "bob", true)
	kv, err := n.JS.KeyValue(context.Background(), contract.PresenceKV)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(context.Background(), contract.LeaseKey("bob", "phone")); err != nil {
		t.Fatal(err)
	}
	waitPresence(t, alice, "bob", false) // the lease is gone
	// Written again by a refresh. (The presence frame alone would not
	// prove it: the answer to alice's subscription, computed before the
	// delete, can reach her after the update it raised.)
	tk.WaitFor(t, wait, func() error {
		if l, _, err := leaseOf(t, n, "bob", "phone"); err != nil || l.Session != bob.Session() {
			return tk.Errorf("lease %+v (%v), want bob's session %s", l, err, bob.Session())
		}
		return nil
	})
	waitPresence(t, alice, "bob", true)
}

// When a device connects again, the old session's end neither deletes nor
// overwrites the new session's lease, and the new one keeps refreshing.
func TestReplacedSessionLeavesTheNewLeaseAlone(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.PresenceTTL = 3 * time.Second
	g := tk.StartGateway(t, n, cfg)
	first := tk.Dial(t, g.URL, "bob", "phone", func(o *client.Options) { o.MinBackoff, o.MaxBackoff = time.Hour, time.Hour })
	old := first.Session()
	second := tk.Dial(t, g.URL, "bob", "phone")
	tk.WaitFor(t, wait, func() error {
		if g.Server.Sessions() != 1 {
			return fmt.Errorf("%d sessions", g.Server.Sessions())
		}
		return nil
	})
	// The welcome goes out before the first lease is written: wait for
	// one (the old session's or the new one's).
	var rev uint64
	tk.WaitFor(t, wait, func() (err error) {
		_, rev, err = leaseOf(t, n, "bob", "phone")
		return err
	})
	// A refresh after the old session ended proves the lease stayed the
	// new session's.
	tk.WaitFor(t, wait, func() error {
		l, r, err := leaseOf(t, n, "bob", "phone")
		switch {
		case err != nil:
			return err
		case l.Session != second.Session() || l.Session == old:
			return fmt.Errorf("lease held by session %s, want %s", l.Session, second.Session())
		case r <= rev:
			return fmt.Errorf("not refreshed yet")
		}
		return nil
	})
}

// updates watches a user's presence changes as the presence function (or
// a settings change) publishes them, so a test knows a change is on its
// way to the gateways before it acts again.
type updates struct {
	t   *testing.T
	sub *nats.Subscription
}

func watchUpdates(t *testing.T, n *tk.NATS, user string) *updates {
	t.Helper()
	sub, err := n.Conn.SubscribeSync(contract.PresenceSubject(user))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &updates{t: t, sub: sub}
}

// await reads published changes until one matches.
func (u *updates) await(online bool, visibility string) {
	u.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		m, err := u.sub.NextMsg(time.Until(deadline))
		if err != nil {
			u.t.Fatalf("no presence update online=%v visibility=%s: %v", online, visibility, err)
		}
		var up contract.PresenceUpdate
		if json.Unmarshal(m.Data, &up) == nil && up.Online == online && up.Visibility == visibility {
			return
		}
	}
}

// nextPresence reads the viewer's next frame, which must be a presence
// frame.
func nextPresence(r *raw) *protocol.Frame {
	r.t.Helper()
	f := r.next()
	if f.Type != protocol.TypePresence {
		r.t.Fatalf("got %+v, want a presence frame", *f)
	}
	return f
}

// answers reads the viewer's presence frames until there is one about
// each of users, and returns the last about each. A change published just
// before the viewer followed may reach it as well as the answer.
func answers(r *raw, users ...string) map[string]*protocol.Frame {
	r.t.Helper()
	got := map[string]*protocol.Frame{}
	for len(got) < len(users) {
		f := nextPresence(r)
		got[f.User] = f
	}
	return got
}

func setPrivacy(t *testing.T, c *client.Client, privacy string, contacts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ch := client.SettingsChange{LastSeenPrivacy: privacy}
	if contacts != nil {
		ch.Contacts = &contacts
	}
	if _, err := c.Settings(ctx, ch); err != nil {
		t.Fatal(err)
	}
}

// A follower who may not see a user's presence gets one hidden answer
// and then nothing when the user comes and goes: a hidden frame at each
// change would tell exactly when. The fence is carol, whom the follower
// may see, coming online after bob's changes were published.
func TestHiddenPresenceSendsNothingOnChanges(t *testing.T) {
	for _, tc := range []struct {
		name     string
		privacy  string
		contacts []string
	}{
		{"nobody", protocol.PrivacyNobody, nil},
		{"contacts, follower not one", protocol.PrivacyContacts, []string{"carol"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tk.StartNATS(t)
			g := tk.StartGateway(t, n, tk.TestConfig())
			bobs := watchUpdates(t, n, "bob")
			bob := tk.Dial(t, g.URL, "bob", "phone")
			bobs.await(true, protocol.PrivacyEveryone)
			setPrivacy(t, bob, tc.privacy, tc.contacts...)
			bobs.await(true, tc.privacy)
			_ = bob.Close()
			bobs.await(false, tc.privacy)

			alice := connectRaw(t, g, "alice", "phone")
			alice.write(`{"type":"presence_sub","users":["bob","carol"]}`)
			got := answers(alice, "bob", "carol")
			if f := got["bob"]; f == nil || !f.Hidden || f.Online || f.LastSeen != 0 {
				t.Fatalf("first answer about bob: %+v, want hidden", f)
			}
			if f := got["carol"]; f == nil || f.Hidden || f.Online {
				t.Fatalf("first answer about carol: %+v, want offline", f)
			}

			bob = tk.Dial(t, g.URL, "bob", "phone")
			bobs.await(true, tc.privacy)
			_ = bob.Close()
			bobs.await(false, tc.privacy)
			// The fence: carol's change is published after bob's.
			tk.Dial(t, g.URL, "carol", "phone")
			if f := nextPresence(alice); f.User != "carol" || !f.Online {
				t.Fatalf("alice got %+v before the fence (carol online): bob's comings and goings show", *f)
			}
		})
	}
}

// A privacy change is itself a change of what the follower may see: from
// everyone to nobody one hidden frame goes out, a second change that
// hides nothing new sends nothing, and back to everyone the state goes
// out again.
func TestPrivacyChangeSendsHiddenOnceThenStateAgain(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	bobs := watchUpdates(t, n, "bob")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	bobs.await(true, protocol.PrivacyEveryone)
	alice := connectRaw(t, g, "alice", "phone")
	alice.write(`{"type":"presence_sub","users":["bob","carol"]}`)
	got := answers(alice, "bob", "carol")
	if f := got["bob"]; f == nil || f.Hidden || !f.Online {
		t.Fatalf("first answer about bob: %+v, want online", f)
	}

	setPrivacy(t, bob, protocol.PrivacyNobody)
	if f := nextPresence(alice); f.User != "bob" || !f.Hidden {
		t.Fatalf("after bob chose nobody alice got %+v, want bob hidden", *f)
	}
	setPrivacy(t, bob, protocol.PrivacyContacts, "carol")
	bobs.await(true, protocol.PrivacyContacts)
	tk.Dial(t, g.URL, "carol", "phone")
	if f := nextPresence(alice); f.User != "carol" || !f.Online {
		t.Fatalf("alice got %+v before the fence (carol online), want no second hidden frame", *f)
	}

	setPrivacy(t, bob, protocol.PrivacyEveryone)
	if f := nextPresence(alice); f.User != "bob" || f.Hidden || !f.Online {
		t.Fatalf("after bob chose everyone alice got %+v, want bob online", *f)
	}
}

// Each settings frame that changes something is a KV write, so they have
// a bucket of their own, far tighter than other frames': 1 a second with
// a burst of 5. Past it a frame gets rate_limited and writes nothing.
func TestSettingsFramesHaveTheirOwnRateLimit(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	r := connectRaw(t, g, "mallory", "phone")
	const frames = 10
	start := time.Now()
	for i := range frames {
		r.write(fmt.Sprintf(`{"type":"settings","id":"q-%d","read_receipts":%v}`, i, i%2 == 0))
	}
	answered, limited := 0, 0
	seen := map[string]bool{}
	for range frames {
		switch f := r.next(); {
		case seen[f.ID] || f.ID == "":
			t.Fatalf("%+v: every answer and refusal names its own request", *f)
		case f.Type == protocol.TypeSettings:
			answered++
			seen[f.ID] = true
		case f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited && f.RetryMS > 0:
			limited++
			seen[f.ID] = true
		default:
			t.Fatalf("got %+v, want settings or rate_limited", *f)
		}
	}
	// The bucket refills at 1 a second while the frames are handled.
	if allowed := 5 + int(time.Since(start).Seconds()) + 1; limited == 0 || answered > allowed {
		t.Fatalf("%d settings frames answered, %d rate_limited; want at most %d answered", answered, limited, allowed)
	}
	r.send("sink", "after-settings-flood") // the connection is still open
}

// One presence_sub naming a group follows all its other members, more
// than a users list may name, and answers each one's state; changes
// follow. presence_unsub with the group stops them all.
func TestPresenceOfAWholeGroupInOneFrame(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	members := []string{"alice"}
	for i := range protocol.MaxUsersPerFrame + 44 {
		members = append(members, fmt.Sprintf("m%03d", i))
	}
	putGroup(t, n, "big", members...)
	m005 := watchUpdates(t, n, "m005")
	tk.Dial(t, g.URL, "m005", "phone")
	m005.await(true, protocol.PrivacyEveryone)

	alice := connectRaw(t, g, "alice", "phone")
	alice.write(`{"type":"presence_sub","group":"big"}`)
	got := answers(alice, members[1:]...)
	for _, u := range members[1:] {
		if f := got[u]; f == nil || f.Hidden || f.Online != (u == "m005") {
			t.Fatalf("answer about %s: %+v, want online only for m005", u, f)
		}
	}
	tk.Dial(t, g.URL, "m007", "phone")
	if f := nextPresence(alice); f.User != "m007" || !f.Online {
		t.Fatalf("after m007 connected alice got %+v", *f)
	}

	alice.write(`{"type":"presence_sub","users":["zed"]}`)
	if f := nextPresence(alice); f.User != "zed" || f.Online {
		t.Fatalf("answer about zed: %+v", *f)
	}
	alice.write(`{"type":"presence_unsub","group":"big"}`)
	// Frames take effect in order: yan's answer comes once the group is
	// unfollowed.
	alice.write(`{"type":"presence_sub","users":["yan"]}`)
	if f := nextPresence(alice); f.User != "yan" {
		t.Fatalf("after unfollowing the group alice got %+v, want the answer about yan", *f)
	}
	// Fence: zed is still followed; m008's coming must not show before
	// zed's, which is published after it.
	m008 := watchUpdates(t, n, "m008")
	tk.Dial(t, g.URL, "m008", "phone")
	m008.await(true, protocol.PrivacyEveryone)
	tk.Dial(t, g.URL, "zed", "phone")
	if f := nextPresence(alice); f.User != "zed" || !f.Online {
		t.Fatalf("after unfollowing the group alice got %+v, want zed online", *f)
	}
}

// What a group presence_sub refuses: users and a group at once, a bad
// group id, a group that does not exist, a group the user is not in, and
// a group larger than the connection may follow.
func TestPresenceOfAGroupRefusals(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.MaxPresenceSubs = 2
	g := tk.StartGateway(t, n, cfg)
	putGroup(t, n, "trio", "alice", "bob", "carol")
	putGroup(t, n, "four", "alice", "bob", "carol", "dave")
	alice := connectRaw(t, g, "alice", "phone")
	alice.write(`{"type":"presence_sub","group":"trio","users":["bob"]}`)
	alice.expectError(protocol.ErrBadField, "", 0)
	alice.write(`{"type":"presence_sub","group":"tr.io"}`)
	alice.expectError(protocol.ErrBadID, "", 0)
	alice.write(`{"type":"presence_sub","group":"nope"}`)
	alice.expectError(protocol.ErrUnknownGroup, "", 0)
	erin := connectRaw(t, g, "erin", "phone")
	erin.write(`{"type":"presence_sub","group":"trio"}`)
	erin.expectError(protocol.ErrNotMember, "", 0)

	// Three others, two allowed: the first two are followed and
	// answered, the third refused.
	alice.write(`{"type":"presence_sub","group":"four"}`)
	var followed []string
	refused := false
	for len(followed) < 2 || !refused {
		f := alice.next()
		switch f.Type {
		case protocol.TypePresence:
			followed = append(followed, f.User)
		case protocol.TypeError:
			if f.Code != protocol.ErrTooMany || refused {
				t.Fatalf("got %+v, want one too_many", *f)
			}
			refused = true
		default:
			t.Fatalf("got %+v", *f)
		}
	}
	if followed[0] == "dave" || followed[1] == "dave" {
		t.Fatalf("followed %v past the limit of 2", followed)
	}
}

// The SDK follows a group's members with one call, and again after a
// reconnect: carol connecting after alice's connection dropped shows
// only to a session that follows the group again (in the answer or as a
// change, whichever comes after the other).
func TestSDKFollowsAGroupsPresence(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	putGroup(t, n, "trio", "alice", "bob", "carol")
	proxy := tk.StartProxy(t, g.Addr)
	alice := tk.Dial(t, "ws://"+proxy.Addr+"/v1/ws", "alice", "phone")
	if err := alice.SubscribePresenceGroup("trio"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		if p := recvPresence(t, alice, u); p.Online || p.Hidden {
			t.Fatalf("answer about %s: %+v, want offline", u, p)
		}
	}
	if err := alice.SubscribePresenceGroup("trio.x"); !errors.Is(err, client.ErrBadID) {
		t.Fatalf("bad group id: %v, want ErrBadID", err)
	}
	proxy.DropAll()
	tk.Dial(t, g.URL, "carol", "phone")
	waitPresence(t, alice, "carol", true)
}

// Following a user followed already answers with their current state
// again: a device whose answer was refused (the presence function away,
// too many in flight) gets it by asking again, as the error tells it to.
func TestPresenceSubAgainAnswersTheCurrentState(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := connectRaw(t, g, "alice", "phone")
	alice.write(`{"type":"presence_sub","users":["bob"]}`)
	if f := alice.next(); f.Type != protocol.TypePresence || f.User != "bob" {
		t.Fatalf("first answer %+v", *f)
	}
	alice.write(`{"type":"presence_sub","users":["bob"]}`)
	alice.write(`{"type":"presence_sub","users":["carol"]}`)
	// Each frame's answer is asked of the presence function on its own,
	// so the two may come in either order; both come.
	got := map[string]bool{}
	for range 2 {
		f := alice.next()
		if f.Type != protocol.TypePresence || (f.User != "bob" && f.User != "carol") || got[f.User] {
			t.Fatalf("presence_sub for bob again, then for carol: got %+v after %v, want each one's state once", *f, got)
		}
		got[f.User] = true
	}
}

// A settings change asked again under its id after it was applied (its
// answer lost) is answered with the settings as they are, not applied
// again over a change made since, here from another device.
func TestSettingsChangeAskedAgainIsNotAppliedAgain(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	phone := connectRaw(t, g, "alice", "phone")
	laptop := connectRaw(t, g, "alice", "laptop")
	phone.write(`{"type":"settings","id":"q-7","read_receipts":false}`)
	if f := nextOfType(phone, protocol.TypeSettings); f.ID != "q-7" || f.ReadReceipts == nil || *f.ReadReceipts {
		t.Fatalf("the phone's change: %+v", f)
	}
	laptop.write(`{"type":"settings","id":"q-7","read_receipts":true}`) // the same id from another device is another change
	if f := nextOfType(laptop, protocol.TypeSettings); f.ID != "q-7" || f.ReadReceipts == nil || !*f.ReadReceipts {
		t.Fatalf("the laptop's change: %+v", f)
	}
	phone.write(`{"type":"settings","id":"q-7","read_receipts":false}`)
	if f := nextOfType(phone, protocol.TypeSettings); f.ID != "q-7" || f.ReadReceipts == nil || !*f.ReadReceipts {
		t.Fatalf("the phone's change asked again: %+v, want the laptop's later change kept", f)
	}
	phone.write(`{"type":"settings","id":"q-8","read_receipts":false}`)
	if f := nextOfType(phone, protocol.TypeSettings); f.ID != "q-8" || f.ReadReceipts == nil || *f.ReadReceipts {
		t.Fatalf("a new change: %+v", f)
	}
}
