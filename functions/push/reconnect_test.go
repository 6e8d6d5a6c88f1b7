package push

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// The function's NATS connection drops just as the webhook accepts a push
// (the components hold nothing for the next connection): the device must
// still be recorded as pushed and the message acked once it is back, or
// the message comes again after the ack wait and the device is pushed a
// second time.
func TestPushIsRecordedAndAckedThroughAConnectionBlip(t *testing.T) {
	n := tk.StartNATS(t)
	addr := strings.TrimPrefix(n.Server.ClientURL(), "nats://")
	proxy := tk.StartProxy(t, addr)
	nc, js := tk.ConnectAs(t, "nats://"+proxy.Addr, natsauth.Push) // as the function connects
	defer nc.Close()
	var cut sync.Once
	h := newHook(t, func(Notification, int) int {
		cut.Do(func() {
			restore := proxy.CutNATS(nc)
			time.AfterFunc(300*time.Millisecond, restore)
		})
		return 200
	})
	putDevices(t, n.JS, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Start(ctx, nc, js, testConfig(h.URL), tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	publish(t, n.JS, "bob", "alice", "m1")

	cons, err := n.JS.Consumer(ctx, contract.Inbox, "push")
	if err != nil {
		t.Fatal(err)
	}
	if aw := cons.CachedInfo().Config.AckWait; aw <= 10*time.Second {
		t.Fatalf("the push durable's ack wait %v must outlast this test's wait", aw)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("%d pending, %d waiting for their ack", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	e, err := kv(t, n.JS, contract.PushKV).Get(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(e.Value()), `"phone"`) {
		t.Fatalf("bob's claim %s does not record the phone as pushed", e.Value())
	}
	if all, _ := h.count("bob", "phone"); all != 1 {
		t.Fatalf("the phone was pushed %d times", all)
	}
}
