package gateway_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// A device away for longer than the idle time loses its consumer (saved
// floor first) and, when it comes back, gets exactly what it had not
// acked: the message it left unacked and the one sent while away, not
// the one it acked.
func TestReapedDeviceComesBackWithNothingLostOrRepeated(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	send(t, alice, "bob", "m1", "one")
	send(t, alice, "bob", "m2", "two")
	m1 := tk.RecvMsg(t, bob, wait)
	bob.Ack(m1.Seq)
	tk.RecvMsg(t, bob, wait) // m2: never acked
	// The ack is applied before bob leaves: his floor covers m1.
	tk.WaitFor(t, wait, func() error {
		c, err := n.JS.Consumer(ctx, streams.Inbox, "bob~phone")
		if err != nil {
			return err
		}
		if info, _ := c.Info(ctx); info == nil || info.AckFloor.Stream < m1.Seq {
			return fmt.Errorf("ack floor not at m1 yet")
		}
		return nil
	})
	_ = bob.Close()
	send(t, alice, "bob", "m3", "three") // while bob is away

	tk.WaitFor(t, wait, func() error {
		res, err := gateway.Reap(ctx, n.JS, 0)
		if err != nil {
			return err
		}
		if _, err := n.JS.Consumer(ctx, streams.Inbox, "bob~phone"); err == nil {
			return fmt.Errorf("bob's consumer still there (%+v)", res)
		}
		return nil
	})
	if _, err := n.JS.Consumer(ctx, streams.Inbox, "alice~phone"); err != nil {
		t.Fatalf("alice, online, lost her consumer: %v", err)
	}
	if res, err := gateway.Reap(ctx, n.JS, time.Hour); err != nil || res.Reaped != 0 {
		t.Fatalf("a pass with a long idle time reaped %+v, %v", res, err)
	}

	bob = tk.Dial(t, g.URL, "bob", "phone")
	for _, want := range []string{"m2", "m3"} {
		m := tk.RecvMsg(t, bob, wait)
		if m.ID != want {
			t.Fatalf("bob got %s, want %s", m.ID, want)
		}
		bob.Ack(m.Seq)
	}
	tk.NoMsg(t, bob, 300*time.Millisecond)
}
