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

// ReconnectGiveUp bounds ThroughReconnect's wait when its context does
// not.
const ReconnectGiveUp = 10 * time.Second

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

// ThroughReconnect runs op, a write to NATS, again every ReconnectWait
// while it fails because the connection is down (ReconnectOptions hold
// nothing for the next connection, so it was not sent), until ctx is
// done, or ReconnectGiveUp has passed if ctx has no deadline. For a write
// whose loss nothing later repairs, or whose failure would have its work
// done twice.
func ThroughReconnect(ctx context.Context, op func() error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ReconnectGiveUp)
		defer cancel()
	}
	for {
		err := op()
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

// PublishThroughReconnect publishes data on subj through a reconnect
// (ThroughReconnect).
func PublishThroughReconnect(ctx context.Context, nc *nats.Conn, subj string, data []byte) error {
	return ThroughReconnect(ctx, func() error { return nc.Publish(subj, data) })
}
