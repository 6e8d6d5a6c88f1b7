package devsync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/devsync"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

const wait = 20 * time.Second

// register writes user's DEVICES record with devices that joined at
// start (0: the first device, everything).
func register(t testing.TB, n *tk.NATS, user string, devices map[string]uint64) {
	t.Helper()
	ctx := context.Background()
	kv, err := n.JS.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	rec := contract.Devices{Devices: map[string]*contract.Device{}}
	for d, start := range devices {
		rec.Devices[d] = &contract.Device{Joined: time.Now(), Start: start, Stream: inbox.CachedInfo().Created}
	}
	b, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, user, b); err != nil {
		t.Fatal(err)
	}
}

// store stores a chat message as a gateway does: from on device to `to`.
func store(t testing.TB, n *tk.NATS, from, device, to, id string) uint64 {
	t.Helper()
	m := &nats.Msg{Subject: contract.InboxSubject(to), Data: []byte(`"hi"`), Header: nats.Header{
		contract.HdrMsgID:  {contract.MsgDedupID(from, id)},
		contract.HdrKind:   {contract.KindMsg},
		contract.HdrFrom:   {from},
		contract.HdrDevice: {device},
		contract.HdrID:     {id},
		contract.HdrTS:     {strconv.FormatInt(time.Now().UnixMilli(), 10)},
	}}
	ack, err := n.JS.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// copies returns the own copies in user's inbox, by client id, in stored
// order.
func copies(t *testing.T, n *tk.NATS, user string) (ids []string, sent map[string]uint64) {
	t.Helper()
	sent = map[string]uint64{}
	tk.CountInbox(t, n.JS, user, func(h nats.Header) bool {
		if h.Get(contract.HdrTo) != "" {
			ids = append(ids, h.Get(contract.HdrID))
			sent[h.Get(contract.HdrID)], _ = strconv.ParseUint(h.Get(contract.HdrSentSeq), 10, 64)
		}
		return false
	})
	return ids, sent
}

// An instance stopped as a crash would (its connection cut) mid-stream,
// and another started: every copy is stored once, nothing is lost, and
// a sender with one device, or messages from before a device joined, cost
// none.
func TestKilledMidStreamEachCopyOnce(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	a := tk.StartSync(t, n)
	// alice: a phone, and a laptop that joined at seq 1 (before anything);
	// bob: one device; carol: a second device that joins later.
	register(t, n, "alice", map[string]uint64{"phone": 0, "laptop": 1})
	register(t, n, "bob", map[string]uint64{"phone": 0})
	register(t, n, "carol", map[string]uint64{"phone": 0, "tablet": 1 << 40})

	const total = 400
	want := map[string]uint64{}
	for i := range total {
		id := fmt.Sprintf("m%03d", i)
		want[id] = store(t, n, "alice", "phone", "bob", id)
		store(t, n, "bob", "phone", "alice", id)   // one device: no copy
		store(t, n, "carol", "phone", "alice", id) // the tablet joins later: no copy
		if i == total/4 {
			// Kill the first instance once it has copied some.
			tk.WaitFor(t, wait, func() error {
				if c := a.Service.Stats().Copied; c == 0 {
					return tk.Errorf("nothing copied yet")
				}
				return nil
			})
			a.Kill()
			tk.StartSync(t, n)
		}
	}
	tk.WaitFor(t, wait, func() error {
		if ids, _ := copies(t, n, "alice"); len(ids) < total {
			return tk.Errorf("%d copies of %d", len(ids), total)
		}
		return nil
	})
	// Nothing left to copy: the durable has handed out and had acked
	// every message, so a copy still to come cannot be.
	waitDrained(t, n)
	if ids, _ := copies(t, n, "bob"); len(ids) != 0 {
		t.Fatalf("bob's copies %v, want none: he has one device", ids)
	}
	ids, sent := copies(t, n, "alice")
	if len(ids) != total {
		t.Fatalf("%d copies in alice's inbox, want %d", len(ids), total)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("copy %s stored twice", id)
		}
		seen[id] = true
		if sent[id] != want[id] {
			t.Fatalf("copy %s names seq %d, the original is at %d", id, sent[id], want[id])
		}
	}
	inOrder := true
	for i := 1; i < len(ids); i++ {
		if want[ids[i]] < want[ids[i-1]] {
			inOrder = false
			t.Logf("copy %s stored after %s", ids[i], ids[i-1])
		}
	}
	t.Logf("copies in the originals' order across the kill: %v", inOrder)
	if ids, _ := copies(t, n, "carol"); len(ids) != 0 {
		t.Fatalf("carol's copies %v, want none: her tablet joined after them", ids)
	}
}

// Two instances running at once: the durable is pinned to one, so one
// sender's copies are never made by both at once and keep the originals'
// order.
func TestTwoInstancesKeepASendersOrder(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	a, b := tk.StartSync(t, n), tk.StartSync(t, n)
	register(t, n, "alice", map[string]uint64{"phone": 0, "laptop": 1})
	const total = 300
	want := map[string]uint64{}
	for i := range total {
		id := fmt.Sprintf("m%03d", i)
		want[id] = store(t, n, "alice", "phone", fmt.Sprintf("u%d", i%7), id)
	}
	tk.WaitFor(t, wait, func() error {
		if ids, _ := copies(t, n, "alice"); len(ids) < total {
			return tk.Errorf("%d copies of %d", len(ids), total)
		}
		return nil
	})
	ids, _ := copies(t, n, "alice")
	for i := 1; i < len(ids); i++ {
		if want[ids[i]] < want[ids[i-1]] {
			t.Fatalf("copy %s stored after %s", ids[i], ids[i-1])
		}
	}
	// An instance counts a copy once its PubAck is back, after the copy
	// is in the stream: wait for the counts to catch up.
	var ca, cb int64
	tk.WaitFor(t, wait, func() error {
		if ca, cb = a.Service.Stats().Copied, b.Service.Stats().Copied; ca+cb < total {
			return tk.Errorf("%d and %d copies counted of %d", ca, cb, total)
		}
		return nil
	})
	if ca+cb != total || (ca != 0 && cb != 0) {
		t.Fatalf("copies made: %d and %d, want all %d by one pinned instance", ca, cb, total)
	}
}

// An instance stopped cleanly hands the durable over at once: with the
// pin's full timeout (40 s), the standby copies the next message well
// within the test's wait, which it could not if it waited the pin out.
func TestCleanStopHandsOverAtOnce(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	start := func() *devsync.Service {
		nc, js := tk.ConnectAs(t, n.Server.ClientURL(), natsauth.Sync)
		t.Cleanup(nc.Close)
		s, err := devsync.Start(context.Background(), nc, js, devsync.DefaultConfig(), tk.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := start(), start()
	stopped := map[*devsync.Service]bool{}
	t.Cleanup(func() {
		for _, s := range []*devsync.Service{a, b} {
			if !stopped[s] {
				s.Stop()
			}
		}
	})
	register(t, n, "alice", map[string]uint64{"phone": 0, "laptop": 1})
	store(t, n, "alice", "phone", "bob", "m1")
	tk.WaitFor(t, wait, func() error {
		if a.Stats().Copied+b.Stats().Copied < 1 {
			return tk.Errorf("m1 not copied yet")
		}
		return nil
	})
	pinned, standby := a, b
	if b.Stats().Copied == 1 {
		pinned, standby = b, a
	}
	pinned.Stop()
	stopped[pinned] = true
	store(t, n, "alice", "phone", "bob", "m2")
	tk.WaitFor(t, wait, func() error {
		if standby.Stats().Copied < 1 {
			return tk.Errorf("m2 not copied by the standby yet")
		}
		return nil
	})
	if ids, _ := copies(t, n, "alice"); len(ids) != 2 || ids[0] != "m1" || ids[1] != "m2" {
		t.Fatalf("copies %v, want m1 then m2", ids)
	}
}

// waitDrained waits until the sync durable has handed out, and had acked,
// every message stored so far.
func waitDrained(t *testing.T, n *tk.NATS) {
	t.Helper()
	tk.WaitFor(t, wait, func() error {
		cons, err := n.JS.Consumer(context.Background(), contract.Inbox, "sync")
		if err != nil {
			return err
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return tk.Errorf("sync durable: %d pending, %d unacked", info.NumPending, info.NumAckPending)
		}
		return nil
	})
}

// A device that joins right before its user's next message gets that
// message's copy, though the instance answers senders from its own copy
// of DEVICES: each message waits for a read of DEVICES begun after it was
// stored. Each of 40 users sends once with one device (no copy), gains a
// second device, and at once sends again (a copy), while other users
// register devices and send all along, so reads of DEVICES are under way
// when the messages come; the instance never has to read a sender's
// record instead.
func TestDeviceJoinedJustBeforeAMessageGetsItsCopy(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	a := tk.StartSync(t, n)
	inbox, err := n.JS.Stream(context.Background(), contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var load sync.WaitGroup
	for g := range 4 {
		load.Add(1)
		go func() {
			defer load.Done()
			kv, err := n.JS.KeyValue(context.Background(), contract.DevicesKV)
			if err != nil {
				t.Error(err)
				return
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := fmt.Sprintf("bg%d-%d", g, i)
				rec, _ := json.Marshal(contract.Devices{Devices: map[string]*contract.Device{
					"phone": {Joined: time.Now(), Stream: inbox.CachedInfo().Created},
					"pad":   {Joined: time.Now(), Start: 1, Stream: inbox.CachedInfo().Created}}})
				if _, err := kv.Put(context.Background(), u, rec); err != nil {
					t.Error(err)
					return
				}
				m := &nats.Msg{Subject: contract.InboxSubject("bob"), Data: []byte(`"hi"`), Header: nats.Header{
					contract.HdrMsgID: {contract.MsgDedupID(u, "x")}, contract.HdrKind: {contract.KindMsg},
					contract.HdrFrom: {u}, contract.HdrDevice: {"phone"}, contract.HdrID: {"x"}}}
				if _, err := n.JS.PublishMsg(context.Background(), m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	const users = 40
	for i := range users {
		u := fmt.Sprintf("u%02d", i)
		register(t, n, u, map[string]uint64{"phone": 0})
		store(t, n, u, "phone", "bob", u+"-before")
		info, err := inbox.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		register(t, n, u, map[string]uint64{"phone": 0, "laptop": info.State.LastSeq + 1})
		store(t, n, u, "phone", "bob", u+"-after")
	}
	close(stop)
	load.Wait()
	waitDrained(t, n)
	got := map[string][]string{} // user: the ids of the copies in their inbox
	cons, err := n.JS.OrderedConsumer(context.Background(), contract.Inbox, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range info.NumPending {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if h := m.Headers(); h.Get(contract.HdrTo) != "" {
			u := strings.TrimPrefix(m.Subject(), contract.InboxPrefix)
			got[u] = append(got[u], h.Get(contract.HdrID))
		}
	}
	for i := range users {
		u := fmt.Sprintf("u%02d", i)
		if ids := got[u]; len(ids) != 1 || ids[0] != u+"-after" {
			t.Fatalf("%s: copies %v, want only %s-after (the laptop joined after %s-before)", u, ids, u, u)
		}
	}
	st := a.Service.Stats()
	if st.Fallbacks != 0 || st.MultiDevice < users {
		t.Fatalf("stats %+v: want every sender answered from the roster, at least %d users with two devices", st, users)
	}
	t.Logf("%d messages, %d reads of DEVICES", 2*users, st.DeviceReads)
}

// A DEVICES bucket deleted and created again under a running instance
// numbers its records from 1 again: the instance notices (here at once,
// DevicesCheck being tiny) and reads it again from the start, so a user
// registered in the new bucket with two devices gets their copies.
func TestDevicesBucketRecreatedUnderARunningInstance(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	nc, js := tk.ConnectAs(t, n.Server.ClientURL(), natsauth.Sync)
	t.Cleanup(nc.Close)
	cfg := devsync.DefaultConfig()
	cfg.DevicesCheck = time.Nanosecond
	s, err := devsync.Start(context.Background(), nc, js, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	for i := range 20 {
		register(t, n, fmt.Sprintf("u%02d", i), map[string]uint64{"phone": 0})
	}
	store(t, n, "u00", "phone", "bob", "m0")
	waitDrained(t, n)
	ctx := context.Background()
	if err := n.JS.DeleteKeyValue(ctx, contract.DevicesKV); err != nil {
		t.Fatal(err)
	}
	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	register(t, n, "alice", map[string]uint64{"phone": 0, "laptop": 1})
	store(t, n, "alice", "phone", "bob", "m1")
	waitDrained(t, n)
	if ids, _ := copies(t, n, "alice"); len(ids) != 1 || ids[0] != "m1" {
		t.Fatalf("alice's copies %v, want m1: her laptop is in the new bucket (stats %+v)", ids, s.Stats())
	}
}
