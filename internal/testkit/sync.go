package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/functions/devsync"
	"github.com/switchboard-im/switchboard/internal/natsauth"
)

// Sync is a sync function on its own NATS connection in its own role.
type Sync struct {
	Conn    *nats.Conn
	Service *devsync.Service
	stopped bool
}

// StartSync starts a sync function against n, with the durable's ack
// wait at FunctionAckWait, and stops it at the end of the test.
func StartSync(t testing.TB, n *NATS) *Sync {
	t.Helper()
	nc, js := ConnectAs(t, n.Server.ClientURL(), natsauth.Sync)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := devsync.DefaultConfig()
	cfg.AckWait = FunctionAckWait
	cfg.PinnedTTL = FunctionAckWait + time.Second
	s := &Sync{Conn: nc}
	var err error
	if s.Service, err = devsync.Start(ctx, nc, js, cfg, Logger(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the function gracefully (idempotent).
func (s *Sync) Stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	s.Service.Stop()
	s.Conn.Close()
}

// Kill cuts the function's NATS connection as a crash would: what it
// holds unacked comes again to another instance after FunctionAckWait.
func (s *Sync) Kill() {
	s.stopped = true
	s.Conn.Close()
	s.Service.Stop()
}

// CountInbox counts the messages stored in user's inbox whose headers
// match, read through an ordered consumer of js (the operator's).
func CountInbox(t testing.TB, js jetstream.JetStream, user string, match func(nats.Header) bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "INBOX", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"inbox." + user}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for left := int(info.NumPending); left > 0; left-- {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if match(m.Headers()) {
			n++
		}
	}
	return n
}
