package presence_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// cutSettings cuts the instance's NATS connection on its first read of
// bob's settings, which presence.publish makes after the record's write
// and before the update's publish, and restores it 300 ms later.
type cutSettings struct {
	jetstream.KeyValue
	armed atomic.Bool
	cut   func()
}

func (c *cutSettings) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if key == "bob" && c.armed.CompareAndSwap(true, false) {
		c.cut()
	}
	return c.KeyValue.Get(ctx, key)
}

// A device coming online while the presence function's connection drops
// between the record's write and the update's publish (the components
// hold nothing for the next connection): followers must still be told
// bob is online. Nothing else would tell them: the lease refresh that
// follows changes nothing, and the change, redelivered, is stale by then.
func TestOnlineChangeIsAnnouncedThroughAConnectionBlip(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.n.Server.ClientURL(), "nats://")
	proxy := tk.StartProxy(t, addr)
	nc, js := tk.ConnectAs(t, "nats://"+proxy.Addr, natsauth.Presence) // as the function connects
	defer nc.Close()
	cfg := presence.DefaultConfig()
	cfg.AckWait = 2 * time.Second
	s, err := presence.Start(context.Background(), nc, js, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	s.WaitSweep()
	cs := &cutSettings{cut: func() {
		restore := proxy.CutNATS(nc)
		time.AfterFunc(300*time.Millisecond, restore)
	}}
	s.WrapSettings(func(kv jetstream.KeyValue) jetstream.KeyValue { cs.KeyValue = kv; return cs })
	ch := e.updates(t, "bob")
	cs.armed.Store(true)
	e.lease(t, "bob", "phone", time.Minute) // bob comes online
	tk.WaitFor(t, 10*time.Second, func() error {
		if nc.Status() != nats.CONNECTED || cs.armed.Load() {
			return context.DeadlineExceeded
		}
		return nil
	})
	// The gateway's lease loop refreshes the lease (every
	// 15 to 20 s, under the durable's 30 s ack wait).
	e.lease(t, "bob", "phone", time.Minute)
	deadline := time.After(3 * cfg.AckWait)
	for {
		select {
		case u := <-ch:
			if u.Online {
				return
			}
		case <-deadline:
			rec, _ := contract.LoadLivePresence(context.Background(), e.kv, "bob")
			t.Fatalf("no online update for bob reached followers; his record says online=%v", rec.Online())
		}
	}
}
