package gateway

import "sync/atomic"

// Short runs on kept goroutines.
//
// A session starts a goroutine for each burst of work and lets it end
// when the burst is over (its feed's runner, its writer, its ticker), so
// an idle session holds none. Under load a burst is often one message,
// and each new goroutine started on a small stack that then grew, copied
// deep in the call that needed it: in P1 the feed runner's stack growth
// alone was 3% of the all-in-one's CPU, and starting and ending the
// goroutines 2% more. So these runs go to runners: goroutines that, once
// a run ends, wait for the next, up to maxIdleRunners of them at a time;
// a run that finds none waiting starts one. A waiting runner holds its
// grown stack, a few KiB, and nothing of the runs it made.
var runners runnerPool

// maxIdleRunners bounds the runners waiting for a run: past it one that
// finishes ends, so a burst of many sessions at once leaves no more than
// this many behind, about 2 MiB of stacks. In P1 (200 devices) 64 were
// too few: runs still started goroutines and grew their stacks, and the
// end-to-end rate was 3% lower than with 256. What the 256 cost shows in
// the idle figure (P3) as about 1 KB a device at 2,000 devices, as a
// fixed cost spread over them.
const maxIdleRunners = 256

type runnerPool struct {
	runs    chan func() // unbuffered: a run is handed to a runner waiting on it
	idle    atomic.Int32
	started atomic.Int64 // runners started, ever
}

func init() { runners.runs = make(chan func()) }

// Go runs f on a waiting runner, or on a new one.
func (p *runnerPool) Go(f func()) {
	select {
	case p.runs <- f:
	default:
		p.started.Add(1)
		go p.run(f)
	}
}

// run runs f, then the runs handed to it while it waits, until there are
// maxIdleRunners waiting besides it.
func (p *runnerPool) run(f func()) {
	for {
		f()
		f = nil // hold nothing of it while waiting
		if p.idle.Add(1) > maxIdleRunners {
			p.idle.Add(-1)
			return
		}
		var ok bool
		f, ok = <-p.runs
		p.idle.Add(-1)
		if !ok {
			return // a pool of a test's, closed
		}
	}
}

// waiting is how many runners wait for a run.
func (p *runnerPool) waiting() int { return int(p.idle.Load()) }
