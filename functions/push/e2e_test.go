package push

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// Through a real gateway: bob's phone connected once and left; alice's
// message to bob wakes that phone, naming alice and the message, and the
// body stays out of the webhook.
func TestGatewayMessageWakesOfflineDevice(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	g := tk.StartGateway(t, n, tk.TestConfig())

	bob := tk.Dial(t, g.URL, "bob", "phone")
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Left: the gateway drops the phone's lease once its session has
	// ended, after Close returns; until then the function takes bob for
	// online and wakes nobody.
	presence := kv(t, n.JS, contract.PresenceKV)
	tk.WaitFor(t, 10*time.Second, func() error {
		rec, err := contract.LoadLivePresence(ctx, presence, "bob")
		if err != nil || rec.Online() {
			return tk.Errorf("bob still online (%+v, %v)", rec, err)
		}
		// And the lease itself gone (the record may not have listed the
		// phone yet): m1 then comes after it, and is its own path's.
		return leaseGone(ctx, presence, "bob", "phone")
	})
	// And the function done with that change: a lease that expired
	// (its session's delete lost to a refresh under load) is told by the
	// server's marker, which can be written after the key reads as gone,
	// and so after m1; both paths would then wake the phone for m1 (a
	// limit gone.go names). This test is m1's own path.
	waitLeasesGone(t, n.JS, svc, 1)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	// A context of its own: the waits above may have used up most of
	// ctx's time on a busy machine (a lease that expired rather than
	// being deleted goes only with its TTL).
	sendCtx, cancelSend := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelSend()
	sent, err := alice.Send(sendCtx, "bob", "m1", tk.Body("secret"))
	if err != nil {
		t.Fatal(err)
	}

	tk.WaitFor(t, 20*time.Second, func() error {
		if len(h.Calls()) == 0 {
			return tk.Errorf("no push yet; stats %+v, %d dead letters", svc.Stats(), len(deadLetters(t, n.JS)))
		}
		return nil
	})
	waitDrained(t, n.JS, 10*time.Second)
	calls := h.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls: %+v", len(calls), calls)
	}
	got := calls[0].N
	if got.User != "bob" || got.Device != "phone" || got.From != "alice" || got.MessageID != "m1" ||
		got.Seq != sent.Seq || got.Pending != 1 || got.TS != sent.TS.UnixMilli() {
		t.Errorf("notification %s (sent seq %d)", calls[0].Raw, sent.Seq)
	}
	if strings.Contains(calls[0].Raw, "secret") {
		t.Errorf("the message body reached the webhook: %s", calls[0].Raw)
	}
}
