package testkit

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/functions/receipts"
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
