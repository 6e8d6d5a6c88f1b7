package push

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A message that lands while another holds the window, before that one
// has woken anyone, is decided once it has: here the holder wakes nobody
// and takes its claim away, so the later message is pushed. bob is
// offline with a phone and a tablet; the phone settled m1 already, so m1
// only tries the tablet, whose token the receiver no longer knows (404,
// dead-lettered). m2 lands while that call is in flight, and the phone
// lacks it.
func TestMessageBehindAHolderThatWokeNobodyIsPushed(t *testing.T) {
	n := tk.StartNATS(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	h := newHook(t, func(nt Notification, _ int) int {
		if nt.Device == "tablet" {
			if nt.MessageID == "m1" {
				<-release
			}
			return 404
		}
		return 200
	})
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the hook's server closes
	h.arrived = make(chan Notification, 16)
	cfg := testConfig(h.URL)
	cfg.Window = 30 * time.Second
	cfg.MaxAttempts = 1000 // m2 waits as long as the test holds m1's call
	putDevices(t, n.JS, "bob", "phone", "tablet")
	st, err := n.JS.Stream(context.Background(), contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	// The phone's position is past m1 (the next message stored).
	cur := contract.Cursor{Floor: st.CachedInfo().State.LastSeq + 1, Stream: st.CachedInfo().Created.UnixNano()}
	if _, err := kv(t, n.JS, contract.CursorsKV).Put(context.Background(), contract.CursorKey("bob", "phone"), cur.Encode()); err != nil {
		t.Fatal(err)
	}
	svc := startPush(t, n, cfg)
	if seq1 := publish(t, n.JS, "bob", "alice", "m1"); seq1 != cur.Floor {
		t.Fatalf("m1 at %d, want %d", seq1, cur.Floor)
	}
	select {
	case got := <-h.arrived:
		if got.Device != "tablet" || got.MessageID != "m1" {
			t.Fatalf("first call %+v, want m1 to the tablet", got)
		}
	case <-time.After(wait):
		t.Fatal("no webhook call for m1")
	}
	publish(t, n.JS, "bob", "alice", "m2")
	// m2 is decided while m1's call is in flight: put off, or (as it was)
	// coalesced behind a claim that goes on to wake nobody.
	tk.WaitFor(t, wait, func() error {
		if s := svc.Stats(); s.Waited == 0 && s.Coalesced == 0 {
			return errors.New("m2 not decided yet")
		}
		return nil
	})
	releaseOnce.Do(func() { close(release) })
	waitDrained(t, n.JS, wait)
	var phone []string
	for _, c := range h.Calls() {
		if c.N.Device == "phone" {
			phone = append(phone, c.N.MessageID)
		}
	}
	if len(phone) != 1 || phone[0] != "m2" {
		t.Fatalf("the phone lacks m2 and was pushed %v; stats %+v", phone, svc.Stats())
	}
}

// wait bounds each wait in these tests.
const wait = 15 * time.Second

// crashAtAck is a delivery whose instance dies as it acks: everything
// before happened, the ack and anything after did not (the handling
// goroutine ends there, as the process would).
type crashAtAck struct{ jetstream.Msg }

func (crashAtAck) Ack() error                      { runtime.Goexit(); return nil }
func (crashAtAck) DoubleAck(context.Context) error { runtime.Goexit(); return nil }
func (crashAtAck) Term() error                     { runtime.Goexit(); return nil }

// An instance that dies after pushing, just as it acks, leaves the claim
// held until the message can come again (the ack wait, longer than this
// window): that delivery must find the device done, not a claim expired
// after one window, which would push it a second time.
func TestCrashAtTheAckLeavesTheClaimHeldForTheRedelivery(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	cfg := testConfig(h.URL) // a 2 s window
	putDevices(t, n.JS, "bob", "phone")
	startPush(t, n, cfg).Stop() // the durable exists
	publish(t, n.JS, "bob", "alice", "m1")

	// An instance as Start makes one, driven by hand so it can die at the ack.
	ctx := context.Background()
	c := cfg.withDefaults()
	a := &Service{nc: n.Conn, js: n.JS, cfg: c, log: slog.New(slog.DiscardHandler), hook: newWebhook(c),
		stop: make(chan struct{})}
	var err error
	if a.inbox, err = n.JS.Stream(ctx, contract.Inbox); err != nil {
		t.Fatal(err)
	}
	a.devicesKV = kv(t, n.JS, contract.DevicesKV)
	a.cursorsKV = kv(t, n.JS, contract.CursorsKV)
	a.presenceKV = kv(t, n.JS, contract.PresenceKV)
	a.pushKV = kv(t, n.JS, contract.PushKV)
	cons, err := n.JS.Consumer(ctx, contract.Inbox, "push")
	if err != nil {
		t.Fatal(err)
	}
	a.ackWait = cons.CachedInfo().Config.AckWait
	if a.ackWait <= c.Window {
		t.Fatalf("the ack wait %v must be longer than the window %v for this test", a.ackWait, c.Window)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	m := <-batch.Messages()
	if m == nil {
		t.Fatal("no message")
	}
	died := make(chan struct{})
	go func() {
		defer close(died)
		a.handle(crashAtAck{m})
	}()
	<-died
	if all, _ := h.count("bob", "phone"); all != 1 {
		t.Fatalf("the instance made %d calls before dying, want 1", all)
	}
	// The claim as stored: its TTL must outlast the ack wait.
	raw, err := n.JS.Stream(ctx, "KV_"+contract.PushKV)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := raw.GetLastMsgForSubject(ctx, "$KV."+contract.PushKV+".bob")
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := time.ParseDuration(sm.Header.Get(jetstream.MsgTTLHeader))
	if err != nil || ttl < a.ackWait {
		t.Fatalf("after a death at the ack the claim lives %q (%v), shorter than the ack wait %v: the redelivery would push again", sm.Header.Get(jetstream.MsgTTLHeader), err, a.ackWait)
	}
}

// A webhook URL that is refused is not quoted: it may carry credentials.
func TestRefusedWebhookURLIsNotQuoted(t *testing.T) {
	for _, u := range []string{
		"ftp://relay:s3cr3t@push.example.com/hook",
		"https://relay:s3cr3t@push.example.com:notaport/hook",
	} {
		err := Config{WebhookURL: u}.Validate()
		if err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("refusal %v", err)
		}
	}
}
