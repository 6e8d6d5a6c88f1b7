package deploy

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// groupArrivals tells a waiting sender when a member's device has a
// group message: member's channel for the message's id.
type groupArrivals struct {
	mu   sync.Mutex
	wait map[string]chan time.Time // "<member> <id>"
}

func (a *groupArrivals) expect(member, id string) chan time.Time {
	ch := make(chan time.Time, 1)
	a.mu.Lock()
	a.wait[member+" "+id] = ch
	a.mu.Unlock()
	return ch
}

func (a *groupArrivals) arrived(member, id string, at time.Time) {
	a.mu.Lock()
	ch := a.wait[member+" "+id]
	delete(a.wait, member+" "+id)
	a.mu.Unlock()
	if ch != nil {
		ch <- at
	}
}

// drain acks every message member's device c gets, telling a of each
// group message, and drops its receipts, until the benchmark ends.
func (a *groupArrivals) drain(b *testing.B, member string, c *client.Client) {
	go func() {
		for m := range c.Messages() {
			at := time.Now()
			c.Ack(m.Seq)
			if m.Event == nil {
				a.arrived(member, m.ID, at)
			}
		}
	}()
	go func() {
		for range c.Receipts() {
		}
	}()
}

// Latency of group messages across regions, through the gateways and
// the SDK: a group homed in us with alice and carol (us) and bob and
// dave (eu), one send at a time, alice and bob in turn, each until every
// other member's device has it. From the send to each arrival: in one
// region (alice to carol: the log, the fan-out, the inbox), the copy
// crossing (alice to bob: through us's OUTBOX into eu's INBOX), the send
// crossing (bob to carol: through eu's OUTBOX into us's log), and both
// (bob to dave: to us's log and back).
//
//	go test ./deploy -run '^$' -bench RegionsGroupLatency -benchtime 1000x
func BenchmarkRegionsGroupLatency(b *testing.B) {
	rs := tk.StartRegions(b, "us", "eu")
	rs.Apply(b, streams.Options{})
	for user, region := range map[string]string{"alice": "us", "carol": "us", "bob": "eu", "dave": "eu"} {
		rs.SetHome(b, user, region)
	}
	rs.Start(b, tk.TestConfig())
	us, eu := rs.Region("us"), rs.Region("eu")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a := &groupArrivals{wait: map[string]chan time.Time{}}
	cs := map[string]*client.Client{
		"alice": tk.Dial(b, us.Gateway.URL, "alice", "phone"), "carol": tk.Dial(b, us.Gateway.URL, "carol", "phone"),
		"bob": tk.Dial(b, eu.Gateway.URL, "bob", "phone"), "dave": tk.Dial(b, eu.Gateway.URL, "dave", "phone"),
	}
	for u, c := range cs {
		a.drain(b, u, c)
	}
	if _, err := cs["alice"].CreateGroup(ctx, "bench", "Bench", "bob", "carol", "dave"); err != nil {
		b.Fatal(err)
	}
	// eu reads the group's record once GROUP_DIR has it: bob's first
	// send waits for that.
	tk.WaitFor(b, 15*time.Second, func() error {
		_, err := cs["bob"].SendGroup(ctx, "bench", "ready", tk.Body("ready"))
		return err
	})
	paths := map[string][]time.Duration{}
	one := func(from, id string, to map[string]string) {
		waits := map[string]chan time.Time{}
		for member := range to {
			waits[member] = a.expect(member, id)
		}
		start := time.Now()
		if _, err := cs[from].SendGroup(ctx, "bench", id, tk.Body(id)); err != nil {
			b.Fatal(err)
		}
		paths[from+"-sent"] = append(paths[from+"-sent"], time.Since(start))
		for member, path := range to {
			select {
			case at := <-waits[member]:
				paths[path] = append(paths[path], at.Sub(start))
			case <-time.After(30 * time.Second):
				b.Fatalf("%s did not get %s", member, id)
			}
		}
	}
	send := func(i int) {
		one("alice", "a"+strconv.Itoa(i), map[string]string{"carol": "same", "bob": "copy-across", "dave": "copy-across"})
		one("bob", "b"+strconv.Itoa(i), map[string]string{"carol": "send-across", "alice": "send-across", "dave": "both"})
	}
	for i := range 100 { // warm up every path
		send(-1 - i)
	}
	clear(paths)
	b.ResetTimer()
	for i := range b.N {
		send(i)
	}
	b.StopTimer()
	for _, p := range []string{"alice-sent", "bob-sent", "same", "copy-across", "send-across", "both"} {
		b.ReportMetric(percentile(paths[p], 0.5), p+"-p50-ms")
		b.ReportMetric(percentile(paths[p], 0.99), p+"-p99-ms")
	}
}
