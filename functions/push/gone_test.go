package push

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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

// waitOnline waits until user is online or not, as the function sees it,
// and online on each of devices.
func waitOnline(t testing.TB, js jetstream.JetStream, user string, want bool, devices ...string) {
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
		for _, d := range devices {
			if _, ok := rec.Devices[d]; !ok {
				return tk.Errorf("%s's %s not online yet", user, d)
			}
		}
		return nil
	})
}

// leaseGone says whether the device's lease is gone from the bucket.
func leaseGone(ctx context.Context, presence jetstream.KeyValue, user, device string) error {
	if _, err := presence.Get(ctx, contract.LeaseKey(user, device)); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		return tk.Errorf("%s's %s lease: %v", user, device, err)
	}
	return nil
}

// waitLeasesGone waits until svc has read n leases gone and the durable
// has settled every lease change: what they were to wake is woken.
func waitLeasesGone(t testing.TB, js jetstream.JetStream, svc *Service, n uint64) {
	t.Helper()
	tk.WaitFor(t, 20*time.Second, func() error {
		if st := svc.Stats(); st.LeasesGone != n {
			return tk.Errorf("stats %+v, want %d leases gone", st, n)
		}
		return nil
	})
	waitGoneDrained(t, js)
}

// waitWoken waits until the webhook has had a call and every lease change
// is settled, and returns the calls.
func waitWoken(t testing.TB, js jetstream.JetStream, h *hook, svc *Service) []call {
	t.Helper()
	tk.WaitFor(t, 20*time.Second, func() error {
		if len(h.Calls()) == 0 {
			return tk.Errorf("no push yet; stats %+v", svc.Stats())
		}
		return nil
	})
	waitGoneDrained(t, js)
	return h.Calls()
}

// phoneGotM1Online is the start of the tests driven without a gateway:
// the push function on a webhook answering with respond (nil: 200), bob's
// phone online, alice's m1 stored for it and skipped by the function for
// bob online. It returns m1's sequence.
func phoneGotM1Online(t testing.TB, respond func(Notification, int) int) (*tk.NATS, *hook, *Service, uint64) {
	t.Helper()
	n := tk.StartNATS(t)
	h := newHook(t, respond)
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone")
	setOnline(t, n.JS, "bob", "phone")
	seq := publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)
	if st := svc.Stats(); st.SkippedOnline != 1 {
		t.Fatalf("stats %+v, want m1 skipped for bob online", st)
	}
	return n, h, svc, seq
}

// bothGotM1 is the start of the tests through a real gateway: bob's phone
// and laptop online, alice's m1 delivered to both and acked by neither,
// and skipped by the function for bob online.
func bothGotM1(t testing.TB) (n *tk.NATS, h *hook, svc *Service, phone, laptop *client.Client, sent client.Sent) {
	t.Helper()
	n = tk.StartNATS(t)
	h = newHook(t, nil)
	svc = startPush(t, n, testConfig(h.URL))
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	phone = tk.Dial(t, g.URL, "bob", "phone")
	laptop = tk.Dial(t, g.URL, "bob", "laptop")
	waitOnline(t, n.JS, "bob", true, "phone", "laptop")
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
	return n, h, svc, phone, laptop, sent
}

// A message delivered to devices that never acked it (a socket nobody
// read) woke nobody while they were online. The phone goes while the
// laptop stays: bob is still online, nobody is woken. The laptop goes:
// it is woken for the message, once; the phone, gone while bob was
// online, is left to the rule that skipped it.
func TestDeviceGoneWithAMessageWaitingIsWoken(t *testing.T) {
	n, h, svc, phone, laptop, sent := bothGotM1(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := phone.Close(); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, n.JS, "bob", true, "laptop")
	tk.WaitFor(t, 10*time.Second, func() error { return leaseGone(ctx, kv(t, n.JS, contract.PresenceKV), "bob", "phone") })
	waitGoneDrained(t, n.JS)
	if st := svc.Stats(); st.LeasesGone != 1 || st.Gone != 0 || len(h.Calls()) != 0 {
		t.Fatalf("stats %+v, calls %+v: want the phone's going read, and bob still online", st, h.Calls())
	}

	if err := laptop.Close(); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, n.JS, "bob", false)
	tk.WaitFor(t, 20*time.Second, func() error {
		if len(h.Calls()) == 0 {
			return tk.Errorf("no push yet; stats %+v", svc.Stats())
		}
		return nil
	})
	waitGoneDrained(t, n.JS)
	waitDrained(t, n.JS, 10*time.Second)
	calls := h.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want the laptop's: %+v", len(calls), calls)
	}
	if got := calls[0].N; got.User != "bob" || got.Device != "laptop" || got.MessageID != "m1" || got.From != "alice" || got.Seq != sent.Seq || got.Pending != 1 {
		t.Errorf("call %s, want m1 (seq %d) for bob's laptop", calls[0].Raw, sent.Seq)
	}
	if st := svc.Stats(); st.LeasesGone != 2 || st.Gone != 1 || st.Pushed != 1 {
		t.Errorf("stats %+v", st)
	}
}

// Both of bob's devices go at once, each with the message unacked: each
// is woken at most once (both, if each lease went with the other gone
// too), and the last to go at least.
func TestDevicesGoingTogetherAreWokenOnceEach(t *testing.T) {
	n, h, svc, phone, laptop, _ := bothGotM1(t)
	done := make(chan error, 2)
	for _, c := range []*client.Client{phone, laptop} {
		go func() { done <- c.Close() }()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	waitOnline(t, n.JS, "bob", false)
	waitLeasesGone(t, n.JS, svc, 2)
	calls := h.Calls()
	seen := map[string]int{}
	for _, c := range calls {
		seen[c.N.Device]++
	}
	if len(calls) == 0 || seen["phone"] > 1 || seen["laptop"] > 1 {
		t.Fatalf("calls %+v, want each device woken at most once and one at least; stats %+v", calls, svc.Stats())
	}
}

// A device behind for good (the laptop, woken once for m1) is not woken
// again each time another device goes: the phone reads m1 and goes, and
// nothing more is posted.
func TestAnotherDeviceGoingDoesNotWakeOneBehind(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	cfg := testConfig(h.URL)
	svc := startPush(t, n, cfg)
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, dev := range []string{"phone", "laptop"} {
		if err := tk.Dial(t, g.URL, "bob", dev).Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitOnline(t, n.JS, "bob", false)
	// Both leases gone and read: m1 comes after, and is its own path's.
	waitLeasesGone(t, n.JS, svc, 2)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("hi")); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 20*time.Second, func() error {
		if len(h.Calls()) != 2 {
			return tk.Errorf("calls %+v", h.Calls())
		}
		return nil
	})
	// Past the window, so no claim holds m1 any more.
	if err := kv(t, n.JS, contract.PushKV).Purge(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	phone := tk.Dial(t, g.URL, "bob", "phone")
	phone.Ack(tk.RecvMsg(t, phone, 10*time.Second).Seq)
	if err := phone.Close(); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, n.JS, "bob", false)
	waitLeasesGone(t, n.JS, svc, 3)
	waitDrained(t, n.JS, 10*time.Second)
	if calls := h.Calls(); len(calls) != 2 {
		t.Fatalf("calls %+v, want only m1's two; stats %+v", calls, svc.Stats())
	}
}

// The newest in the inbox is a receipt: the device is woken for the chat
// message before it, m2, past a batch of the scan of receipts, with all
// counted as pending.
func TestGoneFindsTheMessageBehindAReceipt(t *testing.T) {
	n, h, svc, _ := phoneGotM1Online(t, nil)
	receipt := func(i int) {
		r := receiptMsg("bob", "alice", "m0")
		r.Header.Set(contract.HdrMsgID, fmt.Sprintf("r%d", i))
		if _, err := n.JS.PublishMsg(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 300 {
		receipt(i)
	}
	seq := publish(t, n.JS, "bob", "alice", "m2")
	receipt(300)
	waitDrained(t, n.JS, 10*time.Second)
	if err := kv(t, n.JS, contract.PresenceKV).Delete(context.Background(), contract.LeaseKey("bob", "phone")); err != nil {
		t.Fatal(err)
	}
	calls := waitWoken(t, n.JS, h, svc)
	if len(calls) != 1 || calls[0].N.Seq != seq || calls[0].N.MessageID != "m2" || calls[0].N.Pending != 303 {
		t.Fatalf("calls %+v, want one for m2 (seq %d) with 303 pending", calls, seq)
	}
}

// A webhook that fails the first time: the lease gone is tried again and
// the phone is woken, for the same message, once.
func TestGoneRetriesAFailedPost(t *testing.T) {
	n, h, svc, seq := phoneGotM1Online(t, func(_ Notification, prior int) int {
		if prior == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	if err := kv(t, n.JS, contract.PresenceKV).Delete(context.Background(), contract.LeaseKey("bob", "phone")); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 20*time.Second, func() error {
		if _, ok := h.count("bob", "phone"); ok == 0 {
			return tk.Errorf("not woken yet; stats %+v", svc.Stats())
		}
		return nil
	})
	waitGoneDrained(t, n.JS)
	all, ok := h.count("bob", "phone")
	if all != 2 || ok != 1 {
		t.Fatalf("%d calls, %d answered 2xx: want a 503, then one push", all, ok)
	}
	for _, c := range h.Calls() {
		if c.N.Seq != seq {
			t.Errorf("call for seq %d, want m1's %d", c.N.Seq, seq)
		}
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
	if st := svc.Stats(); st.LeasesGone != 1 || st.Gone != 0 || st.Pushed != 0 || len(h.Calls()) != 0 {
		t.Fatalf("stats %+v, calls %+v: want the phone's going read, and nothing waiting (it had acked m1)", st, h.Calls())
	}
}

// A lease the server expires (its gateway died) is a device gone too.
func TestExpiredLeaseWakesForWhatWaits(t *testing.T) {
	n, h, svc, seq := phoneGotM1Online(t, nil)
	// The lease refreshed with a TTL, as a gateway writes it, and no
	// gateway left to refresh it again.
	lease := &nats.Msg{Subject: contract.KVSubject(contract.PresenceKV, contract.LeaseKey("bob", "phone")), Data: []byte(`{"since":1}`)}
	if _, err := n.JS.PublishMsg(context.Background(), lease, jetstream.WithMsgTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	calls := waitWoken(t, n.JS, h, svc)
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

// A device woken within the user's window (for m1, bob offline) that then
// connects and goes without acking m1 is not woken a second time in that
// window.
func TestDeviceWokenInTheWindowIsNotWokenAgainWhenItGoes(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	cfg := testConfig(h.URL)
	cfg.Window = time.Minute
	svc := startPush(t, n, cfg)
	putDevices(t, n.JS, "bob", "phone")
	seq := publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)
	if calls := h.Calls(); len(calls) != 1 || calls[0].N.Seq != seq {
		t.Fatalf("calls %+v, want the phone woken for m1", calls)
	}
	setOnline(t, n.JS, "bob", "phone")
	if err := kv(t, n.JS, contract.PresenceKV).Delete(context.Background(), contract.LeaseKey("bob", "phone")); err != nil {
		t.Fatal(err)
	}
	waitLeasesGone(t, n.JS, svc, 1)
	if calls := h.Calls(); len(calls) != 1 {
		t.Fatalf("calls %+v, want the first wake only; stats %+v", calls, svc.Stats())
	}
	if st := svc.Stats(); st.Gone != 0 || st.Coalesced != 1 {
		t.Errorf("stats %+v, want the lease gone coalesced", st)
	}
}

// The phone's lease goes twice in a row (a reconnect that failed again):
// the phone is woken once for what waits.
func TestDeviceGoneTwiceIsWokenOnce(t *testing.T) {
	n, h, svc, _ := phoneGotM1Online(t, nil)
	presence := kv(t, n.JS, contract.PresenceKV)
	for i := range uint64(2) {
		if _, err := presence.Put(context.Background(), contract.LeaseKey("bob", "phone"), []byte(`{"since":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := presence.Delete(context.Background(), contract.LeaseKey("bob", "phone")); err != nil {
			t.Fatal(err)
		}
		// Read before the lease is put again: the bucket keeps only a
		// key's latest change.
		waitLeasesGone(t, n.JS, svc, i+1)
	}
	if calls := h.Calls(); len(calls) != 1 {
		t.Fatalf("calls %+v, want one; stats %+v", calls, svc.Stats())
	}
	if st := svc.Stats(); st.Gone != 1 || st.Coalesced != 1 {
		t.Errorf("stats %+v, want the second going coalesced", st)
	}
}

// A wake key another change of the device left unsent (its retry will
// never come: the lease was put again since, and the bucket keeps a
// key's latest change only), or left for an older message, does not keep
// the device from its wake.
func TestStaleWakeKeysAreTakenOver(t *testing.T) {
	for _, mark := range []string{`{"lease":1,"seq":1,"sent":false}`, `{"lease":1,"seq":0,"sent":true}`} {
		t.Run(mark, func(t *testing.T) {
			n, h, svc, seq := phoneGotM1Online(t, nil)
			if _, err := kv(t, n.JS, contract.PushKV).Put(context.Background(), goneKey("bob", "phone"), []byte(mark)); err != nil {
				t.Fatal(err)
			}
			if err := kv(t, n.JS, contract.PresenceKV).Delete(context.Background(), contract.LeaseKey("bob", "phone")); err != nil {
				t.Fatal(err)
			}
			if calls := waitWoken(t, n.JS, h, svc); len(calls) != 1 || calls[0].N.Seq != seq {
				t.Fatalf("calls %+v, want the phone woken for m1 (seq %d)", calls, seq)
			}
		})
	}
}

// A device woken when its lease went is not woken again within the window
// by the next message's own push.
func TestWakeForALeaseGoneCountsInTheWindow(t *testing.T) {
	n, h, svc, _ := phoneGotM1Online(t, nil)
	if err := kv(t, n.JS, contract.PresenceKV).Delete(context.Background(), contract.LeaseKey("bob", "phone")); err != nil {
		t.Fatal(err)
	}
	if calls := waitWoken(t, n.JS, h, svc); len(calls) != 1 {
		t.Fatalf("calls %+v", calls)
	}
	publish(t, n.JS, "bob", "alice", "m2")
	waitDrained(t, n.JS, 10*time.Second)
	if calls := h.Calls(); len(calls) != 1 {
		t.Fatalf("calls %+v, want m2 to wake nobody within the window", calls)
	}
}

// A wake for a lease gone that the webhook refused (dead-lettered) woke
// nobody: the next message's push is not held back by it.
func TestDeadLetteredWakeOpensNoWindow(t *testing.T) {
	n, h, svc, _ := phoneGotM1Online(t, func(nt Notification, _ int) int {
		if nt.MessageID == "m1" {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	if err := kv(t, n.JS, contract.PresenceKV).Delete(context.Background(), contract.LeaseKey("bob", "phone")); err != nil {
		t.Fatal(err)
	}
	waitWoken(t, n.JS, h, svc)
	if dl := deadLetters(t, n.JS); len(dl) != 1 {
		t.Fatalf("%d dead letters, want m1's", len(dl))
	}
	publish(t, n.JS, "bob", "alice", "m2")
	waitDrained(t, n.JS, 10*time.Second)
	if all, ok := h.count("bob", "phone"); all != 2 || ok != 1 {
		t.Fatalf("%d calls, %d answered 2xx: want m1 refused, then m2 pushed; stats %+v", all, ok, svc.Stats())
	}
}

// The durable of lease changes cannot be bound when the function starts
// (here a consumer of that name made otherwise by hand; on an upgrade,
// the push role without its new rights): messages are pushed all the
// same, and once the durable can be bound the function binds it and
// wakes for leases gone.
func TestPushRunsWithoutTheLeaseDurableAndBindsItLater(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	ctx := context.Background()
	stream := "KV_" + contract.PresenceKV
	if _, err := n.JS.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: contract.PushGoneDurable, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy}); err != nil {
		t.Fatal(err)
	}
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone")
	publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)
	if calls := h.Calls(); len(calls) != 1 {
		t.Fatalf("calls %+v, want bob's phone woken for m1", calls)
	}
	if err := n.JS.DeleteConsumer(ctx, stream, contract.PushGoneDurable); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 20*time.Second, func() error {
		c, err := n.JS.Consumer(ctx, stream, contract.PushGoneDurable)
		if err != nil {
			return err
		}
		if c.CachedInfo().Config.DeliverPolicy != jetstream.DeliverNewPolicy {
			return tk.Errorf("the durable is not the function's yet")
		}
		return nil
	})
	putDevices(t, n.JS, "carol", "phone")
	setOnline(t, n.JS, "carol", "phone")
	seq := publish(t, n.JS, "carol", "alice", "m2")
	waitDrained(t, n.JS, 10*time.Second)
	if err := kv(t, n.JS, contract.PresenceKV).Delete(ctx, contract.LeaseKey("carol", "phone")); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 20*time.Second, func() error {
		if len(h.Calls()) < 2 {
			return tk.Errorf("calls %+v, stats %+v", h.Calls(), svc.Stats())
		}
		return nil
	})
	waitGoneDrained(t, n.JS)
	if calls := h.Calls(); len(calls) != 2 || calls[1].N.User != "carol" || calls[1].N.Seq != seq {
		t.Fatalf("calls %+v, want carol's phone woken for m2 (seq %d)", calls, seq)
	}
}
