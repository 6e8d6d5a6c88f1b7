package gateway

import (
	"testing"
	"time"
)

// A stream's quiet follows how far apart its acks come: a burst acked at
// the SDKs' cadence ends after TickQuiet, a stream acked every 600 ms
// waits out the interval rather than ask after each ack, and a pause
// past the interval starts a new stream at TickQuiet again.
func TestAckCadenceTellsAStreamsEndFromItsPauses(t *testing.T) {
	const (
		base     = 500 * time.Millisecond // TickQuiet
		interval = time.Second            // TickInterval
	)
	at := time.Unix(1_700_000_000, 0)
	var c ackCadence
	ack := func(after time.Duration) {
		at = at.Add(after)
		c.note(at, interval)
	}

	ack(0)
	if got := c.quiet(base); got != base {
		t.Fatalf("first ack: quiet %v, want %v", got, base)
	}

	// A client's gathered acks, read frame by frame, are one.
	for range 64 {
		ack(10 * time.Microsecond)
	}
	if got := c.quiet(base); got != base {
		t.Fatalf("acks written together: quiet %v, want %v", got, base)
	}

	// Acks every 250 ms, as the SDKs gather them in a busy stream: a
	// burst still ends after TickQuiet.
	for range 8 {
		ack(250 * time.Millisecond)
	}
	if got := c.quiet(base); got != base {
		t.Fatalf("acks 250 ms apart: quiet %v, want %v", got, base)
	}

	// Acks every 600 ms: each pause is past TickQuiet, so the quiet grows
	// past the pause, and past the interval once it has settled.
	ack(600 * time.Millisecond)
	if got := c.quiet(base); got <= 600*time.Millisecond {
		t.Fatalf("after a 600 ms gap: quiet %v, want past the gap", got)
	}
	for range 10 {
		ack(600 * time.Millisecond)
	}
	if got := c.quiet(base); got <= interval {
		t.Fatalf("acks 600 ms apart: quiet %v, want past the interval %v", got, interval)
	}
	if c.last != at {
		t.Fatalf("last ack %v, want %v", c.last, at)
	}

	// A pause past the interval: a new stream, whose first burst ends
	// after TickQuiet again.
	ack(interval + time.Millisecond)
	if got := c.quiet(base); got != base {
		t.Fatalf("after a pause past the interval: quiet %v, want %v", got, base)
	}
}
