package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// What own-message and read-state sync cost, counted from the streams and
// the gateway's delivery counter (not timed): alice and bob each on 1, 2
// and 5 devices; alice sends from one device, every device of both acks
// everything, bob reads the chat once on one device. Stored writes are
// INBOX (messages, copies, ticks, read_sync markers), TICKS and READS;
// frames are every msg, receipt and read_sync handed to a device. A user
// with one device costs no copy.
func TestOwnSyncCostPerDeviceCount(t *testing.T) {
	const msgs = 20
	for _, d := range []int{1, 2, 5} {
		t.Run(fmt.Sprintf("%d devices each", d), func(t *testing.T) {
			n := tk.StartNATS(t)
			s := tk.StartSync(t, n)
			g := tk.StartGateway(t, n, tk.TestConfig())
			alice, bob := make([]*client.Client, d), make([]*client.Client, d)
			for i := range d {
				alice[i] = tk.Dial(t, g.URL, "alice", fmt.Sprintf("d%d", i))
				bob[i] = tk.Dial(t, g.URL, "bob", fmt.Sprintf("d%d", i))
			}
			streamsCounted := []string{contract.Inbox, contract.TicksStream, "KV_" + contract.ReadsKV}
			before := storedWrites(t, n, streamsCounted...)
			framesBefore := metricValue(t, g, "switchboard_gateway_deliveries_total")

			ids := make([]string, msgs)
			for i := range msgs {
				ids[i] = fmt.Sprintf("m%02d", i)
				send(t, alice[0], "bob", ids[i], "hi")
			}
			var last uint64
			for _, c := range bob {
				for _, id := range ids {
					m := tk.NextMsgIs(t, c, "alice", id, wait)
					c.Ack(m.Seq)
					last = m.Seq
				}
			}
			for _, c := range alice[1:] {
				for _, id := range ids {
					m := tk.NextMsgIs(t, c, "alice", id, wait)
					if m.To != "bob" || m.Device != "d0" {
						t.Fatalf("got %+v, want alice's own %s to bob", m, id)
					}
					c.Ack(m.Seq)
				}
			}
			bob[0].Read(last)
			for _, c := range alice {
				waitTicks(t, c, protocol.StatusRead, ids)
			}
			for _, c := range bob[1:] {
				select {
				case rs := <-c.ReadSyncs():
					if rs.Peer != "alice" || rs.Seq != last {
						t.Fatalf("read_sync %+v", rs)
					}
				case <-time.After(wait):
					t.Fatal("no read_sync")
				}
			}
			tk.WaitFor(t, wait, func() error {
				st := s.Service.Stats()
				if st.Copied+st.Single < msgs {
					return tk.Errorf("sync function: %+v of %d messages", st, msgs)
				}
				return nil
			})
			for _, c := range append(alice, bob...) {
				_ = c.Close()
			}
			tk.WaitFor(t, wait, func() error {
				if got := g.Server.Sessions(); got != 0 {
					return tk.Errorf("%d sessions", got)
				}
				return nil
			})
			writes := float64(storedWrites(t, n, streamsCounted...)-before) / msgs
			frames := (metricValue(t, g, "switchboard_gateway_deliveries_total") - framesBefore) / msgs
			copies := tk.CountInbox(t, n.JS, "alice", func(h nats.Header) bool { return h.Get(contract.HdrTo) != "" })
			t.Logf("%d devices per user: %.2f stored writes and %.2f delivered frames per message (%d own copies for %d messages)",
				d, writes, frames, copies, msgs)
			want := msgs
			if d == 1 {
				want = 0
			}
			if copies != want {
				t.Fatalf("%d own copies stored, want %d", copies, want)
			}
			if st := s.Service.Stats(); st.Copied != int64(want) {
				t.Fatalf("sync function stats %+v, want %d copied", st, want)
			}
		})
	}
}

// waitTicks waits until c has had status for every one of ids.
func waitTicks(t *testing.T, c *client.Client, status string, ids []string) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for len(want) > 0 {
		if r := tk.RecvReceipt(t, c, wait); r.Status == status {
			delete(want, r.ID)
		}
	}
}
