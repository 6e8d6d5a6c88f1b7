package main_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A gateway process is killed with kill -9 while a sender is mid-stream. A
// new gateway takes over on the same NATS: every message acked as "sent"
// reaches the recipient once, in stored order.
func TestGatewayKilledUnderLoadLosesNothing(t *testing.T) {
	data := t.TempDir()
	core := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	gwArgs := []string{"gateway", "--nats", core.NATSURL, "--data", data, "--send-rate", "10000", "--send-burst", "10000"}
	gw1 := start(t, gwArgs...)
	proxy := tk.StartProxy(t, strings.TrimPrefix(strings.TrimSuffix(gw1.WSURL, "/v1/ws"), "ws://"))
	url := "ws://" + proxy.Addr + "/v1/ws"

	alice := dial(t, url, token(t, data, "alice", "phone"))
	bob := dial(t, url, token(t, data, "bob", "phone"))

	const total = 400
	var (
		mu    sync.Mutex
		acked = map[string]uint64{} // id -> stored seq
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	window := make(chan struct{}, 32) // 32 sends in flight
	killed := make(chan struct{})
	var once sync.Once
	for i := range total {
		if i == total/3 {
			// Kill mid-stream and bring up a replacement behind the proxy.
			once.Do(func() {
				gw1.kill()
				proxy.DropAll()
				gw2 := start(t, gwArgs...)
				proxy.SetTarget(strings.TrimPrefix(strings.TrimSuffix(gw2.WSURL, "/v1/ws"), "ws://"))
				close(killed)
			})
		}
		window <- struct{}{}
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			defer func() { <-window }()
			s, err := alice.Send(ctx, "bob", id, tk.Body("load "+id))
			if err != nil {
				t.Errorf("send %s: %v", id, err)
				return
			}
			mu.Lock()
			acked[id] = s.Seq
			mu.Unlock()
		}(fmt.Sprintf("m%04d", i))
	}
	wg.Wait()
	<-killed
	if t.Failed() {
		return
	}

	got := map[string]int{}
	var lastSeq uint64
	for len(got) < len(acked) {
		var m client.Message
		select {
		case m = <-bob.Messages():
		case <-time.After(20 * time.Second):
			t.Fatalf("bob has %d of %d acked messages", len(got), len(acked))
		}
		got[m.ID]++
		if got[m.ID] > 1 {
			t.Fatalf("%s delivered twice", m.ID)
		}
		if m.Seq <= lastSeq {
			t.Fatalf("%s (seq %d) after seq %d: out of order", m.ID, m.Seq, lastSeq)
		}
		lastSeq = m.Seq
		if want, ok := acked[m.ID]; !ok || want != m.Seq {
			t.Fatalf("%s arrived with seq %d, sent said %d", m.ID, m.Seq, want)
		}
		bob.Ack(m.Seq)
	}
	tk.NoMsg(t, bob, 300*time.Millisecond)
}
