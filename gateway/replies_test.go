package gateway

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Which failed writes are worth publishing again: those the stream could
// not take now, including a republish that met its first publish still in
// the stream's log (seen on a cluster's step-down); not those refused for
// what they are.
func TestTransientFailures(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nats.ErrNoResponders, true},
		{nats.ErrTimeout, true},
		{nats.ErrReconnectBufExceeded, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077}, true},
		{&jetstream.APIError{Code: 409, ErrorCode: errDupInProcess}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10054}, false},
		{nats.ErrMaxPayload, false},
		{nats.ErrConnectionClosed, false},
		{errBadPubAck, false},
		{errors.New("something else"), true},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
