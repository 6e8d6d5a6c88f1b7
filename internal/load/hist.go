package load

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// hist is a latency histogram safe for many goroutines. It records
// microseconds with three significant digits (0.1% error), from 1µs to 10
// minutes; longer values are clamped to the top so a stuck message still
// shows as the max rather than vanishing.
type hist struct {
	mu sync.Mutex // guards h
	h  *hdrhistogram.Histogram
}

const histMax = int64(10 * time.Minute / time.Microsecond)

func newHist() *hist { return &hist{h: hdrhistogram.New(1, histMax, 3)} }

func (h *hist) record(d time.Duration) {
	us := int64(d / time.Microsecond)
	us = max(us, 1)
	us = min(us, histMax)
	h.mu.Lock()
	_ = h.h.RecordValue(us) // in range by construction
	h.mu.Unlock()
}

// Latency is a histogram's summary, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func (h *hist) summary() Latency {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.h.TotalCount(),
		Mean:  h.h.Mean() / 1000,
		P50:   ms(h.h.ValueAtQuantile(50)),
		P90:   ms(h.h.ValueAtQuantile(90)),
		P99:   ms(h.h.ValueAtQuantile(99)),
		P999:  ms(h.h.ValueAtQuantile(99.9)),
		Max:   ms(h.h.Max()),
	}
}
