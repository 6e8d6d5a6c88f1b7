package gateway

import (
	"testing"
	"time"
)

// A stream's quiet follows how far apart its events come: a burst acked
// at the Go SDK's cadence ends after TickQuiet, a stream acked every
// 600 ms waits out the interval rather than ask after each ack, acks
// written together do not shorten it, a run of acks each close to the
// last still counts, and a pause past the interval (or streamGap)
// starts a new stream at TickQuiet again.
func TestCadenceTellsAStreamsEndFromItsPauses(t *testing.T) {
	const (
		base     = 500 * time.Millisecond // TickQuiet
		interval = time.Second            // TickInterval
	)
	at := time.Unix(1_700_000_000, 0)
	var c cadence
	event := func(after time.Duration) {
		at = at.Add(after)
		c.note(at, interval)
	}
	quiet := func() time.Duration { return c.quiet(at, base, ackGaps) }

	event(0)
	if got := quiet(); got != base {
		t.Fatalf("first ack: quiet %v, want %v", got, base)
	}

	// Acks every 250 ms, as the Go SDK gathers them in a busy stream: a
	// burst still ends after TickQuiet.
	for range 8 {
		event(250 * time.Millisecond)
	}
	if got := quiet(); got != base {
		t.Fatalf("acks 250 ms apart: quiet %v, want %v", got, base)
	}

	// Acks every 600 ms: each pause is past half TickQuiet, so the quiet
	// grows past the pause, and to the interval once it has settled (a
	// pause past it ends the stream anyway).
	event(600 * time.Millisecond)
	if got := quiet(); got <= 600*time.Millisecond {
		t.Fatalf("after a 600 ms gap: quiet %v, want past the gap", got)
	}
	for range 10 {
		event(600 * time.Millisecond)
	}
	settled := quiet()
	if settled != interval {
		t.Fatalf("acks 600 ms apart: quiet %v, want the interval %v", settled, interval)
	}

	// A client's gathered acks, read frame by frame, are one: they leave
	// the stream's quiet as it was.
	for range 64 {
		event(10 * time.Microsecond)
	}
	if got := quiet(); got != settled {
		t.Fatalf("acks written together: quiet %v, want %v", got, settled)
	}

	// Acks each 15 ms after the last, for a second (a client that writes
	// one per message, 66 a second): they come apart, and the quiet falls
	// back to TickQuiet.
	for range 66 {
		event(15 * time.Millisecond)
	}
	if got := quiet(); got != base {
		t.Fatalf("acks 15 ms apart: quiet %v, want %v", got, base)
	}

	// Back to 600 ms, then a pause past the interval: what was learnt
	// counts for nothing, whether asked before the next ack or after it.
	for range 10 {
		event(600 * time.Millisecond)
	}
	at = at.Add(interval + time.Millisecond)
	if got := quiet(); got != base {
		t.Fatalf("a pause past the interval, before the next ack: quiet %v, want %v", got, base)
	}
	event(0)
	if got := quiet(); got != base {
		t.Fatalf("a pause past the interval: quiet %v, want %v", got, base)
	}

	// Deliveries take twice the margin of acks.
	event(200 * time.Millisecond)
	if got, want := c.quiet(at, base, deliveryGaps), 4*200*time.Millisecond; got != want {
		t.Fatalf("deliveries 200 ms apart: quiet %v, want %v", got, want)
	}

	// With a long interval, a pause past streamGap ends a stream, and
	// no quiet is longer.
	var long cadence
	at = time.Unix(1_700_000_000, 0)
	for range 10 {
		at = at.Add(1500 * time.Millisecond)
		long.note(at, time.Minute)
	}
	if got := long.quiet(at, base, ackGaps); got != streamGap {
		t.Fatalf("acks 1.5 s apart, a minute's interval: quiet %v, want %v", got, streamGap)
	}
	at = at.Add(streamGap + time.Millisecond)
	long.note(at, time.Minute)
	if got := long.quiet(at, base, ackGaps); got != base {
		t.Fatalf("a pause past streamGap: quiet %v, want %v", got, base)
	}
}
