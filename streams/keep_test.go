package streams_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// What an operator set on purpose survives the next setup (an upgrade,
// or the all-in-one's restart) run without those flags, as replicas do.
func TestApplyAgainKeepsOperatorsLimits(t *testing.T) {
	n := tk.StartBareNATS(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, n.JS, streams.Options{MaxAge: 7 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	s, err := n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	// nats stream edit INBOX --max-bytes 1GB (small: JetStream reserves
	// it against the test machine's free disk)
	cfg.MaxBytes = 1 << 30
	if _, err := n.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil { // setup, on an upgrade
		t.Fatal(err)
	}
	s, _ = n.JS.Stream(ctx, contract.Inbox)
	got := s.CachedInfo().Config
	if got.MaxAge != 7*24*time.Hour || got.MaxBytes != 1<<30 {
		t.Fatalf("after setup again INBOX has max age %s, max bytes %d (operator set 168h, %d)", got.MaxAge, got.MaxBytes, int64(1<<30))
	}
}

// flakyLookup is a JetStream whose stream info requests fail as they do
// while a cluster elects a meta leader or its API queue is full, and
// which records the configs applied.
type flakyLookup struct {
	jetstream.JetStream
	applied map[string]int
}

func (f *flakyLookup) Stream(context.Context, string) (jetstream.Stream, error) {
	return nil, errors.New("nats: timeout")
}

func (f *flakyLookup) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	f.applied[cfg.Name] = cfg.Replicas
	return f.JetStream.CreateOrUpdateStream(ctx, cfg)
}

// Without --replicas, setup keeps the replicas the streams have: when it
// cannot read them it must not fall back to the file's one replica (an
// R3 stream would be scaled down to R1).
func TestApplyDoesNotGuessReplicasWhenLookupFails(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := &flakyLookup{JetStream: n.JS, applied: map[string]int{}}
	err := streams.Apply(ctx, f, streams.Options{})
	if r, ok := f.applied[contract.Inbox]; err == nil && ok {
		t.Fatalf("Apply could not read INBOX's replicas, applied Replicas=%d from the file and returned nil", r)
	}
}

// A setup run over an INBOX that still has the durable its senders' own
// copies were once made through deletes it once it holds nothing (left,
// it would count every message as pending for good), and leaves it while
// it does, for the function still running to finish.
func TestApplyDeletesTheRetiredCopiesDurable(t *testing.T) {
	n := tk.StartBareNATS(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.JS.CreateOrUpdateConsumer(ctx, contract.Inbox, jetstream.ConsumerConfig{
		Durable: "sync", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: contract.InboxPrefix + "*"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.JS.Publish(ctx, contract.InboxSubject("bob"), []byte(`"hi"`)); err != nil {
		t.Fatal(err)
	}
	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	c, err := n.JS.Consumer(ctx, contract.Inbox, "sync")
	if err != nil {
		t.Fatalf("the retired durable holding a message after setup: %v, want it kept", err)
	}
	msgs, err := c.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range msgs.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.JS.Consumer(ctx, contract.Inbox, "sync"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the retired durable after setup: %v, want it gone", err)
	}
}
