package contract

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// ReconnectWait is how long a component waits between attempts to reach
// NATS again.
const ReconnectWait = 250 * time.Millisecond

// ReconnectOptions are every component's reconnect policy: try again for
// ever, and hold nothing for the next connection. nats.go would keep what
// is published while the connection is down (up to 8 MiB) and send it
// whenever a connection comes back, however late; a gateway's send
// abandoned meanwhile, and resent by its device through another gateway,
// would then be stored a second time, behind the device's later sends,
// once the duplicate window (2 min) had passed; a presence change or a
// cursor would overwrite newer ones. Without the buffer such a publish
// fails at once, and each caller already retries, or settles for a later
// write, on a failed publish.
func ReconnectOptions() []nats.Option {
	return []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(ReconnectWait), nats.ReconnectBufSize(-1)}
}

// PublishThroughReconnect publishes data on subj, waiting out a reconnect
// (ReconnectOptions hold nothing for the next connection): while the
// connection is down it tries again every ReconnectWait until ctx is
// done. For an announcement whose loss nothing later repairs.
func PublishThroughReconnect(ctx context.Context, nc *nats.Conn, subj string, data []byte) error {
	for {
		err := nc.Publish(subj, data)
		if !errors.Is(err, nats.ErrReconnectBufExceeded) {
			return err
		}
		t := time.NewTimer(ReconnectWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
