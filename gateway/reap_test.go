package gateway_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// legacyQueue makes the durable consumer an earlier version kept per
// device, as it made it, and acks the first of its messages through it:
// the device was away with m1 acked and m2 not. The earlier version kept
// no cursor, so the one this version wrote on registering is removed.
func legacyQueue(t *testing.T, n *tk.NATS, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cursors, err := n.JS.KeyValue(ctx, streams.CursorsKV)
	if err != nil {
		t.Fatal(err)
	}
	if err := cursors.Purge(ctx, streams.CursorKey(user, "phone")); err != nil {
		t.Fatal(err)
	}
	inbox, err := n.JS.Stream(ctx, streams.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	c, err := inbox.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: user + "~phone", FilterSubject: streams.InboxSubject(user), AckPolicy: jetstream.AckExplicitPolicy,
		Metadata: map[string]string{"user": user, "device": "phone"},
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got != 1 {
		t.Fatalf("fetched %d from %s's legacy queue, want 1: %v", got, user, batch.Error())
	}
}

// A device queue left by an earlier version (a durable consumer per
// device) is carried over to the device's cursor, by the reaper or by the
// device's next session, and removed. The device then gets exactly what it
// had not acked: m2 and the m3 sent while it was away, not m1.
func TestLegacyDeviceQueueCarriedOverWithNothingLostOrRepeated(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	alice := tk.Dial(t, g.URL, "alice", "phone")
	for _, user := range []string{"bob", "carol"} {
		// Registered as the earlier version registered devices.
		_ = tk.Dial(t, g.URL, user, "phone").Close()
		tk.WaitFor(t, wait, func() error {
			if s := g.Server.Sessions(); s != 1 {
				return tk.Errorf("%d sessions, want alice's alone", s)
			}
			return nil
		})
		send(t, alice, user, user+"-m1", "one")
		send(t, alice, user, user+"-m2", "two")
		legacyQueue(t, n, user)
		send(t, alice, user, user+"-m3", "three")
	}

	// carol's queue is carried over by the reaper, bob's by his session.
	res, err := gateway.Reap(ctx, n.JS, 0)
	if err != nil || res.Reaped != 2 {
		t.Fatalf("reap: %+v, %v", res, err)
	}
	for _, user := range []string{"bob", "carol"} {
		if _, err := n.JS.Consumer(ctx, streams.Inbox, user+"~phone"); err == nil {
			t.Fatalf("%s's legacy consumer is still there", user)
		}
	}
	send(t, alice, "bob", "bob-m4", "four")
	bobDev := tk.Dial(t, g.URL, "bob", "phone")
	for _, want := range []string{"bob-m2", "bob-m3", "bob-m4"} {
		m := tk.RecvMsg(t, bobDev, wait)
		if m.ID != want {
			t.Fatalf("bob got %s, want %s", m.ID, want)
		}
		bobDev.Ack(m.Seq)
	}
	tk.NoMsg(t, bobDev, 300*time.Millisecond)
	_ = bobDev.Close()

	dave := "dave"
	_ = tk.Dial(t, g.URL, dave, "phone").Close()
	send(t, alice, dave, "dave-m1", "one")
	send(t, alice, dave, "dave-m2", "two")
	legacyQueue(t, n, dave)
	daveDev := tk.Dial(t, g.URL, dave, "phone") // carries the queue over itself
	if m := tk.RecvMsg(t, daveDev, wait); m.ID != "dave-m2" {
		t.Fatalf("dave got %s, want m2", m.ID)
	}
	tk.NoMsg(t, daveDev, 300*time.Millisecond)
	if _, err := n.JS.Consumer(ctx, streams.Inbox, dave+"~phone"); err == nil {
		t.Fatal("dave's legacy consumer is still there after his session carried it over")
	}

	carol := tk.Dial(t, g.URL, "carol", "phone")
	for _, want := range []string{"carol-m2", "carol-m3"} {
		if m := tk.RecvMsg(t, carol, wait); m.ID != want {
			t.Fatalf("carol got %s, want %s", m.ID, want)
		}
	}
	tk.NoMsg(t, carol, 300*time.Millisecond)
}

// BenchmarkOfflineDeviceMemory measures the server heap held per offline
// device with a pending message: its DEVICES record, its cursor and the
// message, as the gateway leaves them. Heap figures are after a forced GC,
// from the embedded server's process: straight after the writes, and once
// the file store has let its caches of them go.
func BenchmarkOfflineDeviceMemory(b *testing.B) {
	const devices = 5000
	n := tk.StartNATS(b)
	ctx := context.Background()
	inbox, err := n.JS.Stream(ctx, streams.Inbox)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := n.JS.KeyValue(ctx, streams.DevicesKV)
	if err != nil {
		b.Fatal(err)
	}
	cursors, err := n.JS.KeyValue(ctx, streams.CursorsKV)
	if err != nil {
		b.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	base := heap()
	created := inbox.CachedInfo().Created
	b.ResetTimer()
	for i := range devices {
		user := fmt.Sprintf("u%d", i)
		stamp := created.UTC().Format(time.RFC3339Nano)
		rec := fmt.Sprintf(`{"devices":{"phone":{"joined":%q,"start":0,"stream":%q}}}`, stamp, stamp)
		if _, err := kv.Put(ctx, user, []byte(rec)); err != nil {
			b.Fatal(err)
		}
		ack, err := n.JS.Publish(ctx, streams.InboxSubject(user), []byte(`"hi"`))
		if err != nil {
			b.Fatal(err)
		}
		cur := fmt.Sprintf("%d %d", ack.Sequence-1, created.UnixNano())
		if _, err := cursors.Put(ctx, streams.CursorKey(user, "phone"), []byte(cur)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	fresh := heap()
	// The settled figure waits for the file store to drop its caches of
	// the writes: the heap has fallen 5 % below fresh and then held for
	// three readings (at most 60 s). Once per process, however many times
	// the framework runs the benchmark.
	if offlineSettled == 0 {
		settled, steady := fresh, 0
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		deadline := time.After(60 * time.Second)
	wait:
		for steady < 3 {
			select {
			case <-deadline:
				break wait
			case <-tick.C:
			}
			h := heap()
			if h+h/100 >= settled && settled < fresh-fresh/20 {
				steady++
			} else {
				steady = 0
			}
			settled = min(settled, h)
		}
		offlineSettled = float64(int64(settled)-int64(base)) / devices
	}
	b.ReportMetric(float64(int64(fresh)-int64(base))/devices, "B/device-fresh")
	b.ReportMetric(offlineSettled, "B/device-settled")
}

// offlineSettled is BenchmarkOfflineDeviceMemory's settled figure.
var offlineSettled float64
