package push

import (
	"context"
	"errors"
	"fmt"
	"github.com/switchboard-im/switchboard/contract"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// An offline user with two devices gets one webhook call per device, with
// the exact JSON and the secret, and never the message body.
func TestOfflineUserGetsOnePushPerDevice(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone", "tablet")

	seq := publish(t, n.JS, "bob", "alice", "m-1")
	waitDrained(t, n.JS, 10*time.Second)

	calls := h.Calls()
	if len(calls) != 2 {
		t.Fatalf("want 2 webhook calls, got %d: %+v", len(calls), calls)
	}
	for i, dev := range []string{"phone", "tablet"} {
		c := calls[i]
		want := fmt.Sprintf(`{"user":"bob","device":%q,"message_id":"m-1","from":"alice","pending":1,"seq":%d,"ts":%d}`, dev, seq, testTS)
		if c.Raw != want {
			t.Errorf("call %d body\n got %s\nwant %s", i, c.Raw, want)
		}
		if strings.Contains(c.Raw, "secret") {
			t.Errorf("the message body reached the webhook: %s", c.Raw)
		}
		if c.Method != "POST" || c.CT != "application/json" || c.Auth != "Bearer hook-secret" {
			t.Errorf("call %d: method %s, content type %q, authorization %q", i, c.Method, c.CT, c.Auth)
		}
	}
	if st := svc.Stats(); st.Pushed != 2 || st.Coalesced != 0 {
		t.Errorf("stats %+v", st)
	}
	// The claim records the message and both devices.
	e, err := kv(t, n.JS, contract.PushKV).Get(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`{"seq":%d,"sent":["phone","tablet"]}`, seq); string(e.Value()) != want {
		t.Errorf("claim %s, want %s", e.Value(), want)
	}
}

// The pending count comes from the device's own consumer on INBOX; a
// device with no consumer counts the one message. A device that already
// Devices connected through a real gateway, so positions are what a
// gateway saves: each device's pending count is what waits past its
// cursor, and a device that has already settled the message (it read it
// before the function came to it) is not woken.
func TestPendingCountsFromCursors(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	online := func(want bool) {
		t.Helper()
		tk.WaitFor(t, 10*time.Second, func() error {
			rec, err := contract.LoadLivePresence(ctx, kv(t, n.JS, contract.PresenceKV), "bob")
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return err
			}
			if rec.Online() != want {
				return tk.Errorf("bob online: %v, want %v", rec.Online(), want)
			}
			return nil
		})
	}
	// The tablet and the watch join, then leave; the phone stays.
	for _, dev := range []string{"tablet", "watch"} {
		if err := tk.Dial(t, g.URL, "bob", dev).Close(); err != nil {
			t.Fatal(err)
		}
	}
	phone := tk.Dial(t, g.URL, "bob", "phone")
	online(true)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	send := func(id string) uint64 {
		t.Helper()
		sent, err := alice.Send(ctx, "bob", id, tk.Body(id))
		if err != nil {
			t.Fatal(err)
		}
		return sent.Seq
	}
	// Two messages while bob is online: no push. The phone gets them and
	// does not ack.
	send("m1")
	send("m2")
	tk.RecvMsg(t, phone, 10*time.Second)
	tk.RecvMsg(t, phone, 10*time.Second)
	tk.WaitFor(t, 10*time.Second, func() error {
		if st := svc.Stats(); st.SkippedOnline != 2 {
			return tk.Errorf("stats %+v", st)
		}
		return nil
	})
	// Bob goes offline and m3 arrives while the function is down; the
	// watch reads and acks all three before the function sees m3.
	svc.Stop()
	if err := phone.Close(); err != nil {
		t.Fatal(err)
	}
	online(false)
	seq := send("m3")
	watch := tk.Dial(t, g.URL, "bob", "watch")
	for range 3 {
		watch.Ack(tk.RecvMsg(t, watch, 10*time.Second).Seq)
	}
	if err := watch.Close(); err != nil { // the session saves its cursor as it ends
		t.Fatal(err)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		e, err := kv(t, n.JS, contract.CursorsKV).Get(ctx, contract.CursorKey("bob", "watch"))
		if err != nil {
			return err
		}
		if c, _ := contract.ParseCursor(e.Value()); c.Floor < seq {
			return tk.Errorf("watch's cursor %d, want %d", c.Floor, seq)
		}
		return nil
	})
	startPush(t, n, testConfig(h.URL))
	waitDrained(t, n.JS, 10*time.Second)

	got := map[string]Notification{}
	for _, c := range h.Calls() {
		got[c.N.Device] = c.N
	}
	if len(got) != 2 || got["phone"].Pending != 3 || got["tablet"].Pending != 3 || got["phone"].Seq != seq {
		t.Fatalf("pushed %+v; want phone and tablet with 3 pending each (the watch settled m3 and must not be woken)", got)
	}
}

// No push for a user who is online, a user who never connected, or a
// receipt; an offline user with a device in the same batch is pushed.
func TestNoPushWhenNotNeeded(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone")
	setOnline(t, n.JS, "bob", "phone")
	putDevices(t, n.JS, "alice", "phone")
	putDevices(t, n.JS, "dave", "phone")

	publish(t, n.JS, "bob", "alice", "m1")   // online
	publish(t, n.JS, "carol", "alice", "m2") // no device record
	if _, err := n.JS.PublishMsg(context.Background(), receiptMsg("alice", "bob", "m0")); err != nil {
		t.Fatal(err)
	}
	publish(t, n.JS, "dave", "alice", "m3") // offline with a device
	waitDrained(t, n.JS, 10*time.Second)

	calls := h.Calls()
	if len(calls) != 1 || calls[0].N.User != "dave" || calls[0].N.MessageID != "m3" {
		t.Fatalf("calls %+v", calls)
	}
	st := svc.Stats()
	if st.SkippedOnline != 1 || st.SkippedNoDevice != 1 || st.Ignored != 1 || st.Pushed != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A burst within the window pushes each device once. (The window is long
// beside the burst: a burst slowed past it by a busy machine would open a
// second window, which is right, and push again.)
func TestBurstCoalescesWithinWindow(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	cfg := testConfig(h.URL)
	cfg.Window = 30 * time.Second
	svc := startPush(t, n, cfg)
	putDevices(t, n.JS, "bob", "phone", "tablet")

	for i := range 20 {
		publish(t, n.JS, "bob", "alice", fmt.Sprintf("m%d", i))
	}
	waitDrained(t, n.JS, 10*time.Second)
	for _, dev := range []string{"phone", "tablet"} {
		if all, _ := h.count("bob", dev); all != 1 {
			t.Errorf("%s got %d pushes for a burst, want 1", dev, all)
		}
	}
	if st := svc.Stats(); st.Coalesced != 19 || st.Pushed != 2 {
		t.Errorf("stats %+v", st)
	}
}

// The claim on a user's window expires with the window (it is rewritten
// after each device; each rewrite must carry a TTL, or it would live
// forever), and the next message pushes again.
func TestPushAgainAfterTheWindow(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	startPush(t, n, testConfig(h.URL)) // a 2 s window
	putDevices(t, n.JS, "bob", "phone", "tablet")

	publish(t, n.JS, "bob", "alice", "first")
	waitDrained(t, n.JS, 10*time.Second)
	push := kv(t, n.JS, contract.PushKV)
	tk.WaitFor(t, 10*time.Second, func() error {
		if _, err := push.Get(context.Background(), "bob"); err == nil {
			return tk.Errorf("claim still there")
		}
		return nil
	})
	for _, dev := range []string{"phone", "tablet"} {
		if all, _ := h.count("bob", dev); all != 1 {
			t.Fatalf("%s got %d pushes for one message, want 1", dev, all)
		}
	}
	seq := publish(t, n.JS, "bob", "alice", "later")
	tk.WaitFor(t, 10*time.Second, func() error {
		for _, dev := range []string{"phone", "tablet"} {
			if all, _ := h.count("bob", dev); all != 2 {
				return tk.Errorf("%s has %d pushes", dev, all)
			}
		}
		return nil
	})
	if last := h.Calls()[3].N; last.MessageID != "later" || last.Seq != seq {
		t.Errorf("the second window pushed %+v", last)
	}
}

// Two instances on the same durable still push each device once per burst.
func TestTwoInstancesShareOneWindow(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	cfg := testConfig(h.URL)
	cfg.Window = 30 * time.Second
	a := startPush(t, n, cfg)
	b := startPush(t, n, cfg)
	putDevices(t, n.JS, "bob", "phone", "tablet")
	putDevices(t, n.JS, "carol", "phone", "tablet")

	for i := range 20 {
		publish(t, n.JS, "bob", "alice", fmt.Sprintf("b%d", i))
		publish(t, n.JS, "carol", "alice", fmt.Sprintf("c%d", i))
	}
	waitDrained(t, n.JS, 10*time.Second)
	for _, user := range []string{"bob", "carol"} {
		for _, dev := range []string{"phone", "tablet"} {
			if all, _ := h.count(user, dev); all != 1 {
				t.Errorf("%s/%s got %d pushes, want 1", user, dev, all)
			}
		}
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.Pushed+sb.Pushed != 4 || sa.Coalesced+sb.Coalesced != 38 {
		t.Errorf("stats %+v and %+v", sa, sb)
	}
}

// An instance stopped while a webhook call is blocked finishes that call,
// records it, and hands the rest back; a second instance pushes only the
// devices not yet done.
func TestStoppedInstanceHandsOver(t *testing.T) {
	n := tk.StartNATS(t)
	release := make(chan struct{})
	h := newHook(t, func(Notification, int) int {
		<-release
		return 200
	})
	h.arrived = make(chan Notification, 64)
	cfg := testConfig(h.URL)
	cfg.Window = 30 * time.Second
	a := startPush(t, n, cfg)
	users := []string{"bob", "carol"}
	for _, u := range users {
		putDevices(t, n.JS, u, "phone", "tablet")
	}
	for i := range 5 {
		for _, u := range users {
			publish(t, n.JS, u, "alice", fmt.Sprintf("%s-%d", u, i))
		}
	}
	// Both users' first device calls are in the webhook, blocked.
	for range users {
		select {
		case got := <-h.arrived:
			if got.Device != "phone" {
				t.Fatalf("first call was for %s", got.Device)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no webhook call")
		}
	}

	stopped := make(chan struct{})
	go func() { a.Stop(); close(stopped) }()
	tk.WaitFor(t, 5*time.Second, func() error {
		if !a.stopping.Load() {
			return tk.Errorf("not stopping yet")
		}
		return nil
	})
	select {
	case <-stopped:
		t.Fatal("Stop returned while webhook calls were in flight")
	default:
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return after the calls finished")
	}
	if st := a.Stats(); st.Pushed != 2 {
		t.Fatalf("the stopped instance pushed %d, want the 2 calls in flight", st.Pushed)
	}

	b := startPush(t, n, cfg)
	waitDrained(t, n.JS, 10*time.Second)
	for _, u := range users {
		for _, dev := range []string{"phone", "tablet"} {
			if all, ok := h.count(u, dev); all != 1 || ok != 1 {
				t.Errorf("%s/%s: %d calls, %d ok; want exactly one", u, dev, all, ok)
			}
		}
	}
	if st := b.Stats(); st.Pushed != 2 {
		t.Errorf("the second instance pushed %d, want the 2 devices left", st.Pushed)
	}
}

// Start refuses to run without a webhook, and says so.
func TestStartWithoutWebhookIsNotConfigured(t *testing.T) {
	n := tk.StartNATS(t)
	_, err := Start(context.Background(), n.Conn, n.JS, DefaultConfig(), nil)
	if err == nil || !errors.Is(err, ErrNotConfigured) || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("err = %v", err)
	}
}

func receiptMsg(to, by, id string) *nats.Msg {
	return &nats.Msg{
		Subject: contract.InboxSubject(to),
		Header: nats.Header{
			contract.HdrMsgID:   {contract.TickDedupID("delivered", by, to, 1, 1)},
			contract.HdrKind:    {contract.KindReceipt},
			contract.HdrStatus:  {"delivered"},
			contract.HdrFrom:    {by},
			contract.HdrDevice:  {"phone"},
			contract.HdrSeqFrom: {"1"},
			contract.HdrSeqTo:   {"1"},
			contract.HdrTS:      {"1"},
		},
	}
}

// A claim nobody can read (written by hand, with no TTL) does not silence
// the user for ever: it is taken over, and the rewrite carries a TTL.
func TestUnreadableClaimIsTakenOver(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone")
	push := kv(t, n.JS, contract.PushKV)
	if _, err := push.Put(context.Background(), "bob", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	seq := publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)
	if all, _ := h.count("bob", "phone"); all != 1 {
		t.Fatalf("phone got %d pushes, want 1", all)
	}
	e, err := push.Get(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`{"seq":%d,"sent":["phone"]}`, seq); string(e.Value()) != want {
		t.Errorf("claim %s, want %s", e.Value(), want)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		if _, err := push.Get(context.Background(), "bob"); err == nil {
			return tk.Errorf("claim still there")
		}
		return nil
	})
}
