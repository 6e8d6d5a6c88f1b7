package contract

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
)

// Each answer of a batch, and its end, names the answer before it; one
// lost on the way breaks the chain. The server appends its header after
// the stored ones: the last value is the one that counts.
func TestDirectBatchChain(t *testing.T) {
	answer := func(status string, named ...string) *nats.Msg {
		h := nats.Header{}
		if status != "" {
			h.Set("Status", status)
		}
		for _, n := range named {
			h.Add(HdrLastSeq, n)
		}
		return &nats.Msg{Header: h}
	}
	for _, c := range []struct {
		name string
		m    *nats.Msg
		prev uint64
		gap  bool
	}{
		{"the first", answer("", "0"), 0, false},
		{"the next", answer("", "7"), 7, false},
		{"one lost before it", answer("", "9"), 7, true},
		{"the end after the last", answer("204", "9"), 9, false},
		{"the end after one lost", answer("204", "9"), 7, true},
		{"nothing found", answer("404"), 0, false},
		{"no header", answer(""), 0, true},
		{"a stored header first", answer("", "41", "7"), 7, false},
		{"not a number", answer("", "x"), 0, true},
	} {
		err := DirectBatchChain(c.m, c.prev)
		if gap := errors.Is(err, ErrBatchGap); gap != c.gap || (err != nil && !gap) {
			t.Errorf("%s: %v, want gap %v", c.name, err, c.gap)
		}
	}
}
