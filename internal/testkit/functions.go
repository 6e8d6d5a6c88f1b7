package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/functions/receipts"
)

// FunctionAckWait is the durable ack wait the test functions run with:
// how long a killed instance holds its events before another gets them.
const FunctionAckWait = 2 * time.Second

// Functions are a receipts and a presence function on their own NATS
// connection, as a separate process would run them.
type Functions struct {
	Conn     *nats.Conn
	Receipts *receipts.Service
	Presence *presence.Service
	stopped  bool
}

// StartFunctions starts the receipts and presence functions against n and
// stops them at the end of the test.
func StartFunctions(t testing.TB, n *NATS) *Functions {
	t.Helper()
	nc, err := nats.Connect(n.Server.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &Functions{Conn: nc}
	rc := receipts.DefaultConfig()
	rc.AckWait = FunctionAckWait
	if f.Receipts, err = receipts.Start(ctx, nc, js, rc, Logger(t)); err != nil {
		t.Fatal(err)
	}
	pc := presence.DefaultConfig()
	pc.AckWait = FunctionAckWait
	if f.Presence, err = presence.Start(ctx, nc, js, pc, Logger(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

// Stop stops both functions gracefully (idempotent).
func (f *Functions) Stop() {
	if f.stopped {
		return
	}
	f.stopped = true
	f.Receipts.Stop()
	f.Presence.Stop()
	f.Conn.Close()
}

// Kill cuts the functions' NATS connection as a crash would: whatever
// they hold unacked comes again to another instance after FunctionAckWait.
func (f *Functions) Kill() {
	f.stopped = true
	f.Conn.Close()
	f.Receipts.Stop()
	f.Presence.Stop()
}
