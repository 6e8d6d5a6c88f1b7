package gateway_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// storedWrites sums the last sequences of the streams named: what a run
// stored there, counted from the streams themselves.
func storedWrites(t *testing.T, n *tk.NATS, names ...string) uint64 {
	t.Helper()
	var total uint64
	for _, name := range names {
		s, err := n.JS.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		total += info.State.LastSeq
	}
	return total
}

// A chat message with all three ticks costs one stored write for the
// message and, at most, one for each tick and one for the read position;
// ticks that coincide share their writes. Device cursors are counted
// apart: they are written at most once per --cursor-delay (1 s) and at a
// session's end, whatever the traffic.
func TestStoredWritesPerMessage(t *testing.T) {
	for _, c := range []struct {
		name      string
		readEach  bool
		maxPerMsg float64
	}{
		{"acked and read one by one", true, 4},
		{"acked as they come, the chat read once", false, 2.1},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := tk.StartNATS(t)
			cfg := tk.TestConfig()
			g := tk.StartGateway(t, n, cfg)
			alice := tk.Dial(t, g.URL, "alice", "phone")
			bob := tk.Dial(t, g.URL, "bob", "phone")
			ticks := []string{contract.Inbox, contract.TicksStream, "KV_" + contract.ReadsKV}
			cursors := "KV_" + contract.CursorsKV
			before, cursorsBefore := storedWrites(t, n, ticks...), storedWrites(t, n, cursors)
			const msgs = 50
			var last uint64
			for i := range msgs {
				send(t, alice, "bob", fmt.Sprintf("m%02d", i), "hi")
				m := tk.RecvMsg(t, bob, wait)
				bob.Ack(m.Seq)
				if r := tk.RecvReceipt(t, alice, wait); r.Status != protocol.StatusDelivered {
					t.Fatalf("receipt %+v", r)
				}
				if c.readEach {
					bob.Read(m.Seq)
					if r := tk.RecvReceipt(t, alice, wait); r.Status != protocol.StatusRead {
						t.Fatalf("receipt %+v", r)
					}
				}
				last = m.Seq
			}
			if !c.readEach {
				bob.Read(last)
				for range msgs {
					if r := tk.RecvReceipt(t, alice, wait); r.Status != protocol.StatusRead {
						t.Fatalf("receipt %+v", r)
					}
				}
			}
			per := float64(storedWrites(t, n, ticks...)-before) / msgs
			t.Logf("%s: %.2f stored writes per message with every tick; %d cursor writes in all (%d messages, 2 devices, %s)",
				c.name, per, storedWrites(t, n, cursors)-cursorsBefore, msgs, cfg.CursorDelay)
			if per > c.maxPerMsg {
				t.Fatalf("%.2f stored writes per message, want at most %.1f", per, c.maxPerMsg)
			}
		})
	}
}
