package load

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progress redraws one line on a terminal: the phase, a bar and a note. It
// writes nothing when w is nil, so callers never check.
type progress struct {
	w     io.Writer
	start time.Time

	mu    sync.Mutex // guards phase, note, total
	phase string
	note  func() string
	total int64
	done  atomic.Int64

	stop chan struct{}
	wg   sync.WaitGroup
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now(), stop: make(chan struct{})}
	if w == nil {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

// set starts a phase of total steps (0: no bar); note, if set, is shown
// after the bar.
func (p *progress) set(phase string, total int64, note func() string) {
	p.mu.Lock()
	p.phase, p.total, p.note = phase, total, note
	p.done.Store(0)
	p.mu.Unlock()
}

func (p *progress) add(n int64) { p.done.Add(n) }

func (p *progress) draw() {
	p.mu.Lock()
	phase, total, note := p.phase, p.total, p.note
	p.mu.Unlock()
	done := p.done.Load()
	var b strings.Builder
	fmt.Fprintf(&b, "\r\033[K%6.1fs %-22s", time.Since(p.start).Seconds(), phase)
	if total > 0 {
		const width = 30
		frac := min(float64(done)/float64(total), 1)
		n := int(frac * width)
		fmt.Fprintf(&b, " [%s%s] %3.0f%%", strings.Repeat("=", n), strings.Repeat(" ", width-n), 100*frac)
	}
	if note != nil {
		b.WriteString("  ")
		b.WriteString(note())
	}
	_, _ = io.WriteString(p.w, b.String())
}

// close stops redrawing and clears the line.
func (p *progress) close() {
	if p.w == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	_, _ = io.WriteString(p.w, "\r\033[K")
}
