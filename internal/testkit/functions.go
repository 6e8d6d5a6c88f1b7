package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/functions/groups"
	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/functions/receipts"
	"github.com/switchboard-im/switchboard/internal/natsauth"
)

// FunctionAckWait is the durable ack wait the test functions run with:
// how long a killed instance holds its events before another gets them.
const FunctionAckWait = 2 * time.Second

// Functions are a receipts and a presence function, each on its own NATS
// connection in its own role, as separate processes would run them.
type Functions struct {
	Conn         *nats.Conn // the receipts function's
	PresenceConn *nats.Conn
	Receipts     *receipts.Service
	Presence     *presence.Service
	stopped      bool
}

// StartFunctions starts the receipts and presence functions against n and
// stops them at the end of the test.
func StartFunctions(t testing.TB, n *NATS) *Functions {
	t.Helper()
	return StartFunctionsURL(t, n.Server.ClientURL())
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
	f.PresenceConn.Close()
}

// Kill cuts the functions' NATS connection as a crash would: whatever
// they hold unacked comes again to another instance after FunctionAckWait.
func (f *Functions) Kill() {
	f.stopped = true
	f.Conn.Close()
	f.PresenceConn.Close()
	f.Receipts.Stop()
	f.Presence.Stop()
}

// StartGroupsOnLog starts the groups function against n on a connection
// in its own role, with groups read from their log from logMembers
// members (0: never), and stops it at the end of the test.
func StartGroupsOnLog(t testing.TB, n *NATS, logMembers int) *groups.Service {
	t.Helper()
	nc := n.Connect(t, natsauth.Groups)
	js, _ := jetstream.New(nc)
	cfg := groups.DefaultConfig()
	cfg.LogMembers = logMembers
	s, err := groups.Start(context.Background(), nc, js, cfg, Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}
