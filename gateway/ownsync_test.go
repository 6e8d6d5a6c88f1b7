package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
			g := tk.StartGateway(t, n, tk.TestConfig())
			alice, bob := make([]*client.Client, d), make([]*client.Client, d)
			for i := range d {
				alice[i] = tk.Dial(t, g.URL, "alice", fmt.Sprintf("d%d", i))
				bob[i] = tk.Dial(t, g.URL, "bob", fmt.Sprintf("d%d", i))
			}
			streamsCounted := []string{contract.Inbox, contract.TicksStream, "KV_" + contract.ReadsKV}
			before := storedWrites(t, n, streamsCounted...)
			framesBefore := metricValue(t, g, "switchboard_gateway_deliveries_total")
			readsBefore := metricValue(t, g, "switchboard_gateway_device_record_reads_total")

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
			if got := metricValue(t, g, "switchboard_gateway_own_copies_total"); got != float64(want) {
				t.Fatalf("own_copies_total %v, want %d", got, want)
			}
			// Alone, each of alice's sends (one at a time) reads DEVICES
			// once, for records written since: none after the first; with
			// other devices, nothing after the first send.
			reads := metricValue(t, g, "switchboard_gateway_device_record_reads_total") - readsBefore
			t.Logf("%v reads of DEVICES for %d sends", reads, msgs)
			if (d == 1 && reads > msgs+1) || (d > 1 && reads > 2) {
				t.Fatalf("%v reads of DEVICES for %d sends from %d devices", reads, msgs, d)
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

// A device that joins while its user sends from another gets the copy of
// every message stored from where it starts on: its record is in DEVICES
// before it takes its start, so the sending gateway's check after each
// PubAck finds it. The phone sends without pause while the laptop
// connects and for a while after, then a last message; the laptop gets
// each copy from its start on, in order, through the last (a copy of one
// stored just before its start may come too).
func TestDeviceJoiningWhileItsUserSendsGetsEveryLaterCopy(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	phone := tk.Dial(t, g.URL, "alice", "phone")
	var mu sync.Mutex
	var sent []client.Sent
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			s, err := phone.Send(ctx, "bob", fmt.Sprintf("p%05d", i), tk.Body("hi"))
			cancel()
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			mu.Lock()
			sent = append(sent, s)
			mu.Unlock()
		}
	}()
	count := func(at int) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(sent) < at {
				return tk.Errorf("%d sent, waiting for %d", len(sent), at)
			}
			return nil
		}
	}
	tk.WaitFor(t, wait, count(20))
	laptop := tk.Dial(t, g.URL, "alice", "laptop")
	mu.Lock()
	joined := len(sent)
	mu.Unlock()
	tk.WaitFor(t, wait, count(joined+20))
	close(stop)
	<-done
	last := send(t, phone, "bob", "last", "after the laptop joined")

	ds, _ := devicesOf(t, n, "alice")
	if ds.Devices["laptop"] == nil {
		t.Fatalf("alice's devices %+v, want her laptop", ds.Devices)
	}
	start := ds.Devices["laptop"].Start
	var want []string
	for _, s := range append(sent, last) {
		if s.Seq >= start {
			want = append(want, s.ID)
		}
	}
	if len(want) < 21 {
		t.Fatalf("only %d sends stored from the laptop's start %d on", len(want), start)
	}
	for _, id := range want {
		for {
			m := tk.RecvMsg(t, laptop, wait)
			laptop.Ack(m.Seq)
			if m.To != "bob" || m.From != "alice" || m.Device != "phone" {
				t.Fatalf("laptop got %+v, want alice's own messages", m)
			}
			if m.SentSeq >= start || m.ID == id {
				if m.ID != id {
					t.Fatalf("laptop got the copy of %s (seq %d), want %s's next (start %d)", m.ID, m.SentSeq, id, start)
				}
				break
			}
		}
	}
}

// A device whose record is written between a message's store and the
// check of it, with a start past that message (a registration racing the
// send), gets no copy of that message and a copy of every later one: the
// check that found it joined too late does not take the user for alone.
func TestDeviceStartingJustPastASendGetsTheNextOnesCopy(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	phone := tk.Dial(t, g.URL, "alice", "phone")
	send(t, phone, "bob", "m1", "one")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	inbox, err := n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	info, err := inbox.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ds, rev := devicesOf(t, n, "alice")
	// As a laptop registering while m2 is stored would be written: m2
	// goes at the next sequence, the laptop starts just past it.
	start := info.State.LastSeq + 2
	ds.Devices["laptop"] = &contract.Device{Joined: time.Now().UTC(), Start: start, Stream: info.Created}
	b, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := n.JS.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "alice", b, rev); err != nil {
		t.Fatal(err)
	}
	s2 := send(t, phone, "bob", "m2", "two")
	s3 := send(t, phone, "bob", "m3", "three")
	if s2.Seq >= start || s3.Seq < start {
		t.Fatalf("m2 at %d, m3 at %d: want them either side of the laptop's start %d", s2.Seq, s3.Seq, start)
	}
	for id, want := range map[string]int{"m2": 0, "m3": 1} {
		got := tk.CountInbox(t, n.JS, "alice", func(h nats.Header) bool { return h.Get(contract.HdrTo) == "bob" && h.Get(contract.HdrID) == id })
		if got != want {
			t.Errorf("%d copies of %s in alice's inbox, want %d (the laptop starts at %d)", got, id, want, start)
		}
	}
}

// devicesOf reads user's DEVICES record and its revision.
func devicesOf(t *testing.T, n *tk.NATS, user string) (contract.Devices, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := n.JS.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	var ds contract.Devices
	if err := json.Unmarshal(e.Value(), &ds); err != nil {
		t.Fatalf("%s's devices %s: %v", user, e.Value(), err)
	}
	return ds, e.Revision()
}

// The own-copy checker's first look, against the real DEVICES bucket:
// nothing past the newest record is no change; a record past the point
// asked from is one; and where no record at that point comes back (the
// point past the bucket's end here; a record gone, or a load that
// failed, which the bucket answers as it answers "nothing"), the look
// cannot tell, so it reports a change and the round reads the senders'
// records.
func TestOwnCheckFirstLookAgainstDevices(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	_ = tk.Dial(t, g.URL, "bob", "phone")
	send(t, alice, "bob", "m1", "hi")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := n.JS.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, bobRev := devicesOf(t, n, "bob")
	_, aliceRev := devicesOf(t, n, "alice")
	newest := max(bobRev, aliceRev)
	if got := st.(interface{ StreamInfo() *jetstream.StreamInfo }).StreamInfo().State.LastSeq; got != newest {
		t.Fatalf("DEVICES ends at %d, its newest record is at %d", got, newest)
	}
	look := func(since uint64, want bool) {
		t.Helper()
		changed, err := g.Server.DevicesChanged(since)
		if err != nil || changed != want {
			t.Fatalf("look past %d (newest %d): changed %v, %v; want %v", since, newest, changed, err, want)
		}
	}
	look(newest, false)
	look(newest-1, true)
	// Past the end, as where the record there is gone: no record comes
	// back to vouch for the 404, which a failed load also gives.
	look(newest+5, true)
}
