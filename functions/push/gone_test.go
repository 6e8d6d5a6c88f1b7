package push

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// waitGoneDrained waits until the push-gone durable has settled every
// lease change stored so far.
func waitGoneDrained(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	tk.WaitFor(t, 20*time.Second, func() error {
		s, err := js.Stream(ctx, "KV_"+contract.PresenceKV)
		if err != nil {
			return err
		}
		// The bucket holds other keys than leases, which the durable
		// does not read.
		lm, err := s.GetLastMsgForSubject(ctx, contract.KVSubject(contract.PresenceKV, "lease.>"))
		if err != nil {
			return err
		}
		last := lm.Sequence
		c, err := js.Consumer(ctx, "KV_"+contract.PresenceKV, contract.PushGoneDurable)
		if err != nil {
			return err
		}
		ci := c.CachedInfo()
		if ci.NumPending != 0 || ci.NumAckPending != 0 || ci.AckFloor.Stream < last {
			return tk.Errorf("push-gone: pending %d, ack pending %d, ack floor %d of %d", ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, last)
		}
		return nil
	})
}

// waitOnline waits until user is online or not, as the function sees it.
func waitOnline(t testing.TB, js jetstream.JetStream, user string, want bool) {
	t.Helper()
	presence := kv(t, js, contract.PresenceKV)
	tk.WaitFor(t, 10*time.Second, func() error {
		rec, err := contract.LoadLivePresence(context.Background(), presence, user)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		if rec.Online() != want {
			return tk.Errorf("%s online: %v, want %v", user, rec.Online(), want)
		}
		return nil
	})
}

// A message delivered to devices that never acked it (a socket nobody
// read) woke nobody while they were online; once the last of them has
// gone, each is woken for it, once. While one stays, none is.
func TestDevicesGoneWithAMessageWaitingAreWoken(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	phone := tk.Dial(t, g.URL, "bob", "phone")
	laptop := tk.Dial(t, g.URL, "bob", "laptop")
	waitOnline(t, n.JS, "bob", true)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	sent, err := alice.Send(ctx, "bob", "m1", tk.Body("secret"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{phone, laptop} {
		if got := tk.RecvMsg(t, c, 10*time.Second); got.Seq != sent.Seq {
			t.Fatalf("got seq %d, want %d", got.Seq, sent.Seq)
		}
	}
	waitDrained(t, n.JS, 10*time.Second)
	if st := svc.Stats(); st.SkippedOnline != 1 || st.Pushed != 0 {
		t.Fatalf("stats %+v, want the message skipped for bob online", st)
	}

	// The phone goes; the laptop is still online: nobody is woken.
	if err := phone.Close(); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		if _, err := kv(t, n.JS, contract.PresenceKV).Get(ctx, contract.LeaseKey("bob", "phone")); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			return tk.Errorf("the phone's lease: %v", err)
		}
		return nil
	})
	waitGoneDrained(t, n.JS)
	if st := svc.Stats(); st.Gone != 1 || st.SkippedOnline != 2 || len(h.Calls()) != 0 {
		t.Fatalf("stats %+v, calls %+v: want the phone's going to find m1 and bob still online", st, h.Calls())
	}

	// The laptop goes too: both are woken for m1.
	if err := laptop.Close(); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, n.JS, "bob", false)
	tk.WaitFor(t, 20*time.Second, func() error {
		if len(h.Calls()) < 2 {
			return tk.Errorf("calls %+v, stats %+v", h.Calls(), svc.Stats())
		}
		return nil
	})
	waitGoneDrained(t, n.JS)
	waitDrained(t, n.JS, 10*time.Second)
	calls := h.Calls()
	if len(calls) != 2 {
		t.Fatalf("%d calls, want one per device: %+v", len(calls), calls)
	}
	for i, dev := range []string{"laptop", "phone"} {
		got := calls[i].N
		if got.User != "bob" || got.Device != dev || got.MessageID != "m1" || got.From != "alice" || got.Seq != sent.Seq || got.Pending != 1 {
			t.Errorf("call %d: %s, want m1 (seq %d) for bob's %s", i, calls[i].Raw, sent.Seq, dev)
		}
	}
	if st := svc.Stats(); st.Gone != 2 || st.Pushed != 2 {
		t.Errorf("stats %+v", st)
	}
}

// A device that acked everything before going wakes nobody: its going is
// read (the durable settles it) and finds nothing waiting.
func TestDeviceGoneHavingAckedEverythingWakesNobody(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	phone := tk.Dial(t, g.URL, "bob", "phone")
	waitOnline(t, n.JS, "bob", true)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("hi")); err != nil {
		t.Fatal(err)
	}
	phone.Ack(tk.RecvMsg(t, phone, 10*time.Second).Seq)
	if err := phone.Close(); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, n.JS, "bob", false)
	waitGoneDrained(t, n.JS)
	waitDrained(t, n.JS, 10*time.Second)
	if st := svc.Stats(); st.Gone != 0 || st.Pushed != 0 || len(h.Calls()) != 0 {
		t.Fatalf("stats %+v, calls %+v: the phone had acked m1", st, h.Calls())
	}
}

// A lease the server expires (its gateway died) is a device gone too.
func TestExpiredLeaseWakesForWhatWaits(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone")
	setOnline(t, n.JS, "bob", "phone")
	seq := publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)
	if st := svc.Stats(); st.SkippedOnline != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The lease refreshed with a TTL, as a gateway writes it, and no
	// gateway left to refresh it again.
	lease := &nats.Msg{Subject: contract.KVSubject(contract.PresenceKV, contract.LeaseKey("bob", "phone")), Data: []byte(`{"since":1}`)}
	if _, err := n.JS.PublishMsg(context.Background(), lease, jetstream.WithMsgTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 20*time.Second, func() error {
		if len(h.Calls()) == 0 {
			return tk.Errorf("no push yet; stats %+v", svc.Stats())
		}
		return nil
	})
	waitGoneDrained(t, n.JS)
	calls := h.Calls()
	if len(calls) != 1 || calls[0].N.Seq != seq || calls[0].N.Device != "phone" {
		t.Fatalf("calls %+v, want one for m1 (seq %d)", calls, seq)
	}
}

// A device that goes while the function is down, and a message that
// lands after it went: on restart the message's own delivery and the
// device's going both come to the message; the phone is woken once.
func TestGoneAndMessageTogetherWakeOnce(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	phone := tk.Dial(t, g.URL, "bob", "phone")
	waitOnline(t, n.JS, "bob", true)
	svc.Stop()
	if err := phone.Close(); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, n.JS, "bob", false)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	sent, err := alice.Send(ctx, "bob", "m1", tk.Body("hi"))
	if err != nil {
		t.Fatal(err)
	}
	svc = startPush(t, n, testConfig(h.URL))
	waitDrained(t, n.JS, 10*time.Second)
	waitGoneDrained(t, n.JS)
	calls := h.Calls()
	if len(calls) != 1 || calls[0].N.Seq != sent.Seq {
		t.Fatalf("calls %+v, want one for m1 (seq %d); stats %+v", calls, sent.Seq, svc.Stats())
	}
}
