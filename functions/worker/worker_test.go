package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/worker"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// A lease the presence function cannot apply is dead-lettered. Gateways
// write leases with a per-message TTL (Nats-TTL) and, on a refresh, an
// expected last subject sequence: both are stored with the lease and both
// must not stop its dead letter from being stored in DLQ.
func TestPermanentFailureOfALeaseIsDeadLettered(t *testing.T) {
	t.Parallel()
	n := testkit.StartStreams(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ccfg, err := streams.ConsumerConfig("presence")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := n.JS.CreateOrUpdateConsumer(ctx, "KV_"+contract.PresenceKV, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	// A lease as a gateway writes it (gateway/lease.go putLocked).
	if _, err := n.JS.PublishMsg(ctx, &nats.Msg{Subject: contract.LeaseSubject("alice", "phone"),
		Header: nats.Header{jetstream.MsgTTLHeader: {"60s"}}, Data: []byte(`{"since":1}`)}); err != nil {
		t.Fatal(err)
	}
	nc := n.Connect(t, natsauth.Presence)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	pool, err := worker.Start(js, cons, worker.Options{Function: "presence", Workers: 1, MaxAttempts: 3, Timeout: 2 * time.Second},
		testkit.Logger(t), func(context.Context, jetstream.Msg) error {
			calls.Add(1)
			return worker.Permanent(errors.New("malformed"))
		})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Stop()
	testkit.WaitFor(t, 5*time.Second, func() error {
		s, err := n.JS.Stream(ctx, contract.DLQ)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs == 0 {
			return fmt.Errorf("DLQ holds nothing; handler called %d times for one message, %d dead-lettered",
				calls.Load(), pool.DeadLettered.Load())
		}
		return nil
	})
}

// Stop applies or hands back every message fetched, those still in the
// pull's buffer too, so another instance gets the rest at once rather
// than after the ack wait (30 s). The key function holds the pull's
// delivery goroutine until Stop has stopped the pulls: the interleaving a
// busy machine gives.
func TestStopHandsBackEveryFetchedMessage(t *testing.T) {
	t.Parallel()
	n := testkit.StartStreams(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ccfg, err := streams.ConsumerConfig("receipts")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.JS.CreateOrUpdateConsumer(ctx, contract.TicksStream, ccfg); err != nil {
		t.Fatal(err)
	}
	const workers, total = 2, 10
	for i := range total {
		if _, err := n.JS.Publish(ctx, contract.TicksSubject("bob"), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	nc := n.Connect(t, natsauth.Receipts)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, contract.TicksStream, ccfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	release, gate := make(chan struct{}), make(chan struct{})
	var started, keyed atomic.Int64
	pool, err := worker.Start(js, cons, worker.Options{Function: "receipts", Workers: workers, MaxAttempts: 10, Timeout: 10 * time.Second,
		Key: func(jetstream.Msg) string {
			if keyed.Add(1) > 1 {
				<-gate
			}
			return "bob"
		}},
		testkit.Logger(t), func(context.Context, jetstream.Msg) error {
			started.Add(1)
			<-release
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	// One message applied, one in dispatch, the rest of the pull (2 per
	// worker) buffered in the client.
	testkit.WaitFor(t, 5*time.Second, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if started.Load() != 1 || keyed.Load() != 2 || info.NumAckPending != 2*workers {
			return fmt.Errorf("%d started, %d keyed, %d ack pending", started.Load(), keyed.Load(), info.NumAckPending)
		}
		return nil
	})
	stopped := make(chan struct{})
	go func() { pool.Stop(); close(stopped) }()
	<-pool.Draining() // the pulls stopped with messages in the buffer
	close(gate)
	close(release)
	<-stopped
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Another instance takes over: it must get every message not applied
	// well within the ack wait.
	want := total - int(pool.Applied.Load())
	got := map[uint64]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		b, err := cons.Fetch(total, jetstream.FetchMaxWait(time.Until(deadline)))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			meta, _ := m.Metadata()
			got[meta.Sequence.Stream] = true
			_ = m.Ack()
		}
	}
	if len(got) < want {
		t.Fatalf("after Stop, another instance got %d of the %d messages not applied within 5s; the rest wait out the %v ack wait",
			len(got), want, ccfg.AckWait)
	}
}
