package contract

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrContended is returned when a compare-and-set write keeps losing.
var ErrContended = errors.New("contract: record too contended")

// swapAttempts bounds how many times Swap reads again after losing.
const swapAttempts = 50

// IsConflict reports a compare-and-set write that lost: a Create of a key
// that exists, an Update from a stale revision, or a raw publish whose
// expected last sequence did not match.
func IsConflict(err error) bool {
	c := APICode(err)
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		c == jetstream.JSErrCodeStreamWrongLastSequence || c == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// APICode is the JetStream error code err carries (0: none), wrapped or
// not.
func APICode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	return 0
}

// IsBusy reports a store conditional on a subject's last sequence that
// a replicated stream refused because another such store of the subject
// was in flight: no condition failed, and the same store goes again
// after BusyWait.
func IsBusy(err error) bool {
	return APICode(err) == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// BusyRetryMin and BusyRetryMax bound BusyWait: the store in flight is
// done within a round of the stream's replicas.
const (
	BusyRetryMin = time.Millisecond
	BusyRetryMax = 50 * time.Millisecond
)

// BusyWait is the wait after the n-th busy refusal in a row (n from 1):
// BusyRetryMin doubling to BusyRetryMax, spread half either way, so that
// stores refused by the one in flight do not all meet again at the same
// moment.
func BusyWait(n int) time.Duration {
	wait := min(BusyRetryMin<<min(max(n, 1)-1, 10), BusyRetryMax)
	return wait/2 + time.Duration(mrand.Int64N(int64(wait)))
}

// Swap changes the record under key with compare-and-set: it reads the
// value and its revision (nil and 0 when there is none), asks change what
// to write, and writes only if nobody wrote in between; when someone did,
// it reads and asks again. change returns nil to write nothing (the record
// already says what it should), and is called again after a lost race, so
// it must decide from cur alone. Swap returns the revision written, or the
// one read when nothing was.
//
// Every record that more than one writer changes (a user's devices, their
// settings, a presence record, a media grant) is written this way, so no
// change is lost to a concurrent one.
func Swap(ctx context.Context, kv jetstream.KeyValue, key string, change func(cur []byte, rev uint64) ([]byte, error)) (uint64, error) {
	for range swapAttempts {
		var cur []byte
		var rev uint64
		e, err := kv.Get(ctx, key)
		switch {
		case err == nil:
			cur, rev = e.Value(), e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return 0, fmt.Errorf("contract: read %s: %w", key, err)
		}
		next, err := change(cur, rev)
		if err != nil || next == nil {
			return rev, err
		}
		if rev == 0 {
			rev, err = kv.Create(ctx, key, next)
		} else {
			rev, err = kv.Update(ctx, key, next, rev)
		}
		if err == nil {
			return rev, nil
		}
		if !IsConflict(err) {
			return 0, fmt.Errorf("contract: write %s: %w", key, err)
		}
	}
	return 0, fmt.Errorf("%w: %s", ErrContended, key)
}
