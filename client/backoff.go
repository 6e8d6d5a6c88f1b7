package client

import (
	"context"
	"math/rand/v2"
	"time"
)

// jitter returns a random wait from 1ms up to bound: "full jitter", so clients
// that lost the same gateway at the same instant do not come back together.
func jitter(bound time.Duration) time.Duration {
	if bound <= time.Millisecond {
		return time.Millisecond
	}
	return time.Millisecond + time.Duration(rand.Int64N(int64(bound-time.Millisecond)))
}

// backoff is the reconnect delay: the bound starts at MinBackoff and
// doubles after each failed attempt up to MaxBackoff; each wait is a
// random time up to the bound. A successful connect resets it.
type backoff struct {
	min, max, bound time.Duration
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, bound: min}
}

// next returns the wait before the next attempt and raises the bound.
func (b *backoff) next() time.Duration {
	d := jitter(b.bound)
	b.bound = min(b.bound*2, b.max)
	return d
}

func (b *backoff) reset() { b.bound = b.min }

// retryWait is the wait before resending a send answered with a retryable
// error for the n-th time (n ≥ 1), unless the server gave retry_ms.
func retryWait(n int, minB, maxB time.Duration) time.Duration {
	bound := minB
	for i := 1; i < n && bound < maxB; i++ {
		bound *= 2
	}
	return jitter(min(bound, maxB))
}

// sleep waits d, or until ctx ends (then it reports false). It is the
// default of hooks.wait.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// hooks are seams for the package's own tests; the zero value is the real
// behaviour.
type hooks struct {
	// wait waits d before a reconnect attempt, a resend or a frame
	// written again after a refusal for now, and reports false if ctx
	// ended first.
	wait func(ctx context.Context, d time.Duration) bool
	// wrote, when set, sees each write of frames the client framed
	// itself (gathered acks).
	wrote func(b []byte)
	// afterFunc, when set, stands in for time.AfterFunc for the acks'
	// waits.
	afterFunc func(d time.Duration, f func()) stopper
	// waiting, when set, is told each Pending.Wait once it is counted
	// among the send's waiters.
	waiting func(id string)
	// dropping, when set, is told of a withdrawn send just before the
	// store marks it dropped.
	dropping func(id string)
}
