package testkit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
)

// SendStream sends total messages (ids m0000, m0001, ...) from c to user
// `to`, with up to window sends in flight, calling before(i) ahead of the
// i-th send (to inject a fault mid-stream). It returns the stored sequence
// of every send that was acked "sent"; a send that fails fails the test.
func SendStream(t testing.TB, c *client.Client, to string, total, window int, before func(i int)) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		acked = make(map[string]uint64, total)
		wg    sync.WaitGroup
	)
	slots := make(chan struct{}, window)
	for i := range total {
		if before != nil {
			before(i)
		}
		slots <- struct{}{}
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			defer func() { <-slots }()
			s, err := c.Send(ctx, to, id, Body(id))
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
	return acked
}

// ExpectOnceInOrder receives on c until every acked message has arrived,
// acking each, and fails on a duplicate, a message out of stored order, or
// one whose sequence differs from what "sent" said. Then nothing more may
// arrive: sender sends c's user, to, a fence (id "fence"), which must be
// the next message. It returns the fence's Sent, for a test that counts
// what the inbox stores.
func ExpectOnceInOrder(t testing.TB, c *client.Client, acked map[string]uint64, sender *client.Client, to string) client.Sent {
	t.Helper()
	seen := make(map[string]bool, len(acked))
	var last uint64
	for len(seen) < len(acked) {
		var m client.Message
		select {
		case m = <-c.Messages():
		case <-time.After(20 * time.Second):
			t.Fatalf("received %d of %d acked messages", len(seen), len(acked))
		}
		switch want, ok := acked[m.ID]; {
		case seen[m.ID]:
			t.Fatalf("%s delivered twice", m.ID)
		case m.Seq <= last:
			t.Fatalf("%s (seq %d) after seq %d: out of order", m.ID, m.Seq, last)
		case !ok || want != m.Seq:
			t.Fatalf("%s arrived with seq %d, sent said %d", m.ID, m.Seq, want)
		}
		seen[m.ID], last = true, m.Seq
		c.Ack(m.Seq)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fence, err := sender.Send(ctx, to, "fence", Body("fence"))
	if err != nil {
		t.Fatalf("send the fence: %v", err)
	}
	select {
	case m := <-c.Messages():
		if m.ID != "fence" || m.Seq != fence.Seq {
			t.Fatalf("%s (seq %d) arrived after all %d acked messages, before the fence (seq %d)", m.ID, m.Seq, len(acked), fence.Seq)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the fence (seq %d) did not arrive", fence.Seq)
	}
	return fence
}
