package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

func recvTyping(t *testing.T, c *client.Client) client.Typing {
	t.Helper()
	select {
	case ev := <-c.TypingEvents():
		return ev
	case <-time.After(wait):
		t.Fatal("no typing event")
	}
	return client.Typing{}
}

// Typing reaches every online device of the recipient and is never stored.
func TestTypingReachesOnlineDevicesAndIsNeverStored(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	phone := tk.Dial(t, g.URL, "bob", "phone")
	laptop := tk.Dial(t, g.URL, "bob", "laptop")

	if err := alice.SendTyping("bob"); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []*client.Client{phone, laptop} {
		if ev := recvTyping(t, dev); ev.From != "alice" || ev.Device != "phone" {
			t.Fatalf("typing event %+v, want alice/phone", ev)
		}
	}
	// A message sent after the typing signal is the first thing stored:
	// the signal took no sequence and sits in no queue.
	s := send(t, alice, "bob", "m1", "hi")
	if s.Seq != 1 {
		t.Fatalf("first stored message has seq %d, want 1: typing was stored", s.Seq)
	}
	// bob's tablet joins later and never sees the old signal.
	tablet := tk.Dial(t, g.URL, "bob", "tablet")
	send(t, alice, "bob", "m2", "there?")
	if m := tk.RecvMsg(t, tablet, wait); m.ID != "m2" {
		t.Fatalf("tablet got %s", m.ID)
	}
	// Fence: carol types after the tablet joined, on the same path
	// (sb.ev.bob); alice's old signal, were it kept for the tablet,
	// would come first.
	carol := tk.Dial(t, g.URL, "carol", "phone")
	if err := carol.SendTyping("bob"); err != nil {
		t.Fatal(err)
	}
	if ev := recvTyping(t, tablet); ev.From != "carol" {
		t.Fatalf("a device that connected later got typing %+v before the fence (carol's)", ev)
	}
	if err := alice.SendTyping("bob.*"); err == nil {
		t.Fatal("SDK accepted a bad recipient")
	}
}

func TestTypingIsRateLimited(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.TypingRate, cfg.TypingBurst = 0.001, 2
	g := tk.StartGateway(t, n, cfg)
	limited := make(chan protocol.ErrorCode, 16)
	alice := tk.Dial(t, g.URL, "alice", "phone", func(o *client.Options) {
		o.OnError = func(code protocol.ErrorCode, _ string, _ uint64) { limited <- code }
	})
	bob := tk.Dial(t, g.URL, "bob", "phone")
	for range 3 {
		_ = alice.SendTyping("bob")
	}
	select {
	case code := <-limited:
		if code != protocol.ErrRateLimited {
			t.Fatalf("error %s, want rate_limited", code)
		}
	case <-time.After(wait):
		t.Fatal("third typing frame was not rate limited")
	}
	recvTyping(t, bob)
	recvTyping(t, bob)
	// The connection is still fine for messages.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("still here")); err != nil {
		t.Fatal(err)
	}
}
