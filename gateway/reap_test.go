package gateway_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
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

// BenchmarkOfflineDeviceMemory measures the server heap held per offline
// device with a pending message, before and after reaping: N device
// consumers are made as the gateway makes them, one message each waits,
// then a reap pass deletes them. Heap figures are after a forced GC, from
// the embedded server's process.
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
	tmpl, err := streams.DeviceConsumerTemplate()
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
	created := inbox.CachedInfo().Created.UTC().Format(time.RFC3339Nano)
	for i := range devices {
		user := fmt.Sprintf("u%d", i)
		rec := fmt.Sprintf(`{"devices":{"phone":{"joined":%q,"start":0,"stream":%q}}}`, created, created)
		if _, err := kv.Put(ctx, user, []byte(rec)); err != nil {
			b.Fatal(err)
		}
		cfg := tmpl
		cfg.Durable = user + "~phone"
		cfg.FilterSubject = streams.InboxSubject(user)
		cfg.Metadata = map[string]string{"user": user, "device": "phone"}
		if _, err := inbox.CreateConsumer(ctx, cfg); err != nil {
			b.Fatal(err)
		}
		if _, err := n.JS.Publish(ctx, streams.InboxSubject(user), []byte(`"hi"`)); err != nil {
			b.Fatal(err)
		}
	}
	before := heap()
	b.ResetTimer()
	res, err := gateway.Reap(ctx, n.JS, 0)
	if err != nil || res.Reaped != devices {
		b.Fatalf("reap: %+v, %v", res, err)
	}
	b.StopTimer()
	// Straight after the pass: what the file store still caches of the
	// recent writes counts against the reaped devices (waiting 30 s for
	// the caches to expire took about 0.6 KB per device off).
	after := heap()
	b.ReportMetric(float64(before-base)/devices, "B/device-before")
	b.ReportMetric(float64(int64(after)-int64(base))/devices, "B/device-after")
	b.ReportMetric(float64(devices)/b.Elapsed().Seconds(), "reaped/s")
}
