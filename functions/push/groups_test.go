package push

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// startPushAs is startPush on a connection in the push role, so that
// the role's rights are what the function runs with.
func startPushAs(t *testing.T, n *tk.NATS, cfg Config) *Service {
	t.Helper()
	nc := n.Connect(t, natsauth.Push)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Start(ctx, nc, js, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// logStack is a server with the push function (in its role, on a
// recording webhook), the groups function with groups on their log from
// logMembers, the receipts and presence functions and a gateway.
type logStack struct {
	n   *tk.NATS
	h   *hook
	cfg Config // the push function's
	svc *Service
	g   *tk.Gateway
}

// startLogStack starts a logStack; tune, when set, changes the push
// function's config first.
func startLogStack(t *testing.T, logMembers int, tune func(*Config)) *logStack {
	t.Helper()
	st := &logStack{n: tk.StartNATS(t)}
	st.h = newHook(t, nil)
	st.cfg = testConfig(st.h.URL)
	if tune != nil {
		tune(&st.cfg)
	}
	st.svc = startPushAs(t, st.n, st.cfg)
	tk.StartGroupsOnLog(t, st.n, logMembers)
	tk.StartFunctions(t, st.n)
	st.g = tk.StartGateway(t, st.n, tk.TestConfig())
	return st
}

// waitGroupsSettled waits until the push-groups durable has settled
// every group message up to seq: none undelivered, none awaiting ack or
// retry.
func waitGroupsSettled(t testing.TB, js jetstream.JetStream, seq uint64) {
	t.Helper()
	tk.WaitFor(t, 20*time.Second, func() error {
		c, err := js.Consumer(context.Background(), contract.GroupsStream, contract.PushGroupsDurable)
		if err != nil {
			return err
		}
		ci := c.CachedInfo()
		if ci.NumPending != 0 || ci.NumAckPending != 0 || ci.Delivered.Stream < seq {
			return tk.Errorf("push-groups: pending %d, ack pending %d, delivered up to %d of %d",
				ci.NumPending, ci.NumAckPending, ci.Delivered.Stream, seq)
		}
		return nil
	})
}

// offline connects user's device once and waits until its lease is gone:
// the user has a device to wake and none online.
func offline(t *testing.T, g *tk.Gateway, presence jetstream.KeyValue, user, device string) {
	t.Helper()
	c := tk.Dial(t, g.URL, user, device)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		return leaseGone(context.Background(), presence, user, device)
	})
}

// Messages of a group read from its log are in no inbox: the push
// function reads them from GROUPS and wakes the members with no device
// online, through the same window as 1:1 messages; online members and the
// sender are not woken; a group still on copies is pushed once, by its
// copies.
func TestGroupOnItsLogWakesOfflineMembers(t *testing.T) {
	// One window for the whole test: bob's second message is coalesced
	// however slow the machine.
	st := startLogStack(t, 3, func(c *Config) { c.Window = time.Minute })
	n, h, svc, g := st.n, st.h, st.svc, st.g
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	presence := kv(t, n.JS, contract.PresenceKV)

	alice := tk.Dial(t, g.URL, "alice", "phone")
	carol := tk.Dial(t, g.URL, "carol", "phone")
	if _, err := alice.CreateGroup(ctx, "big", "Big", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateGroup(ctx, "small", "Small", "erin"); err != nil {
		t.Fatal(err)
	}
	offline(t, g, presence, "bob", "phone")
	offline(t, g, presence, "erin", "phone")
	offline(t, g, presence, "alice", "tablet") // her own messages wake nobody

	m1, err := alice.SendGroup(ctx, "big", "m1", tk.Body("secret one"))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := alice.SendGroup(ctx, "big", "m2", tk.Body("secret two"))
	if err != nil {
		t.Fatal(err)
	}
	s1, err := alice.SendGroup(ctx, "small", "s1", tk.Body("secret three"))
	if err != nil {
		t.Fatal(err)
	}
	// carol is online: she has both, from the log, with no push.
	for _, id := range []string{"m1", "m2"} {
		m := tk.RecvMsg(t, carol, 15*time.Second)
		for m.Event != nil {
			m = tk.RecvMsg(t, carol, 15*time.Second)
		}
		if m.ID != id || m.GSeq == 0 {
			t.Fatalf("carol got %+v, want %s from the log", m, id)
		}
	}

	waitGroupsSettled(t, n.JS, max(m2.Seq, s1.Seq))
	waitDrained(t, n.JS, 10*time.Second)
	calls := h.Calls()
	var bob, erin []call
	for _, c := range calls {
		switch {
		case strings.Contains(c.Raw, "secret"):
			t.Errorf("a message body reached the webhook: %s", c.Raw)
		case c.N.User == "bob" && c.N.Device == "phone":
			bob = append(bob, c)
		case c.N.User == "erin" && c.N.Device == "phone":
			erin = append(erin, c)
		default:
			t.Errorf("nobody else is to be woken: %s", c.Raw)
		}
	}
	// bob: woken once, for whichever of m1 and m2 opened his window.
	if len(bob) != 1 {
		t.Fatalf("bob woken %d times: %+v", len(bob), bob)
	}
	got := bob[0].N
	want := map[string]uint64{"m1": m1.Seq, "m2": m2.Seq}
	if got.From != "alice" || got.Group != "big" || got.Seq != 0 || got.GSeq != want[got.MessageID] ||
		got.Pending < 1 || got.TS <= 0 {
		t.Errorf("bob's notification %s (m1 at %d, m2 at %d)", bob[0].Raw, m1.Seq, m2.Seq)
	}
	wantRaw := fmt.Sprintf(`{"user":"bob","device":"phone","message_id":%q,"from":"alice","pending":%d,"seq":0,"ts":%d,"group":"big","gseq":%d}`,
		got.MessageID, got.Pending, got.TS, got.GSeq)
	if bob[0].Raw != wantRaw {
		t.Errorf("bob's body\n got %s\nwant %s", bob[0].Raw, wantRaw)
	}
	// erin: the small group is on copies: woken by her copy in INBOX,
	// once, not again by the group's message.
	if len(erin) != 1 || erin[0].N.MessageID != "s1" || erin[0].N.Group != "" || erin[0].N.GSeq != 0 || erin[0].N.Seq == 0 {
		t.Errorf("erin's notifications: %+v", erin)
	}
	if st := svc.Stats(); st.Coalesced < 1 {
		t.Errorf("bob's second message was not coalesced: %+v", st)
	}
	// The window's claim names the group and the message's place in it.
	e, err := kv(t, n.JS, contract.PushKV).Get(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if w := fmt.Sprintf(`{"seq":%d,"group":"big","sent":["phone"]}`, got.GSeq); string(e.Value()) != w {
		t.Errorf("bob's claim %s, want %s", e.Value(), w)
	}
}

// Who is woken for a group's message is decided by the group as of that
// message, however late the push function reads it: a member removed
// after it is still woken, one added after it is not; and a device whose
// place in the group's log has passed the message is not woken.
func TestGroupPushFollowsTheLog(t *testing.T) {
	st := startLogStack(t, 2, nil)
	n, h, cfg, svc, g := st.n, st.h, st.cfg, st.svc, st.g
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	presence := kv(t, n.JS, contract.PresenceKV)

	alice := tk.Dial(t, g.URL, "alice", "phone")
	if _, err := alice.CreateGroup(ctx, "crowd", "Crowd", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	offline(t, g, presence, "bob", "phone")
	offline(t, g, presence, "carol", "phone")
	offline(t, g, presence, "carol", "tablet")
	offline(t, g, presence, "dave", "phone")
	// The function is down while the message is sent and the group
	// changes after it; its durable keeps the message.
	svc.Stop()
	m1, err := alice.SendGroup(ctx, "crowd", "m1", tk.Body("one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.RemoveMembers(ctx, "crowd", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddMembers(ctx, "crowd", "dave"); err != nil {
		t.Fatal(err)
	}
	// carol's tablet read the group past m1 (as its session writes it).
	places := fmt.Sprintf(`{"crowd":{"at":%d}}`, m1.Seq)
	if _, err := kv(t, n.JS, contract.CursorsKV).Put(ctx, contract.GroupCursorKey("carol", "tablet"), []byte(places)); err != nil {
		t.Fatal(err)
	}
	startPushAs(t, n, cfg)
	waitGroupsSettled(t, n.JS, m1.Seq)
	waitDrained(t, n.JS, 10*time.Second)

	var woken []string
	for _, c := range h.Calls() {
		if c.N.Group == "crowd" && c.N.GSeq == m1.Seq {
			woken = append(woken, c.N.User+"/"+c.N.Device)
		}
	}
	slices.Sort(woken)
	if want := []string{"bob/phone", "carol/phone"}; !slices.Equal(woken, want) {
		t.Errorf("woken for m1: %v, want %v", woken, want)
	}
}

// A device that goes with a message of a group read from its log handed
// to it and never acked (the message found its user online, so nobody was
// woken) is woken for it when its lease goes, as for an inbox message.
func TestLeaseGoneWakesForAGroupLogMessage(t *testing.T) {
	st := startLogStack(t, 2, nil)
	n, h, svc, g := st.n, st.h, st.svc, st.g
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	if _, err := alice.CreateGroup(ctx, "crowd", "Crowd", "bob"); err != nil {
		t.Fatal(err)
	}
	if m := tk.RecvMsg(t, bob, 15*time.Second); m.Event == nil {
		t.Fatalf("bob got %+v, want the create", m)
	} else {
		bob.Ack(m.Seq)
	}
	m1, err := alice.SendGroup(ctx, "crowd", "m1", tk.Body("one"))
	if err != nil {
		t.Fatal(err)
	}
	if m := tk.RecvMsg(t, bob, 15*time.Second); m.ID != "m1" || m.GSeq != m1.Seq {
		t.Fatalf("bob got %+v, want m1 from the log", m)
	}
	// Decided while bob was online: nobody woken.
	waitGroupsSettled(t, n.JS, m1.Seq)
	if calls := h.Calls(); len(calls) != 0 {
		t.Fatalf("woken while online: %+v", calls)
	}
	leasesBefore := svc.Stats().LeasesGone
	if err := bob.Close(); err != nil { // m1 never acked
		t.Fatal(err)
	}
	calls := waitWoken(t, n.JS, h, svc)
	if len(calls) != 1 {
		t.Fatalf("%d calls: %+v", len(calls), calls)
	}
	if c := calls[0].N; c.User != "bob" || c.Device != "phone" || c.Group != "crowd" || c.GSeq != m1.Seq || c.MessageID != "m1" || c.From != "alice" || c.Seq != 0 {
		t.Fatalf("bob's wake %s, want m1 of crowd at %d", calls[0].Raw, m1.Seq)
	}
	if st := svc.Stats(); st.LeasesGone <= leasesBefore || st.Gone != 1 {
		t.Fatalf("stats %+v", st)
	}
}
