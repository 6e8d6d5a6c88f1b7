package gateway

import (
	"fmt"
	"sync"
	"testing"
)

// Runs one after another go to the runner that made the first: a run
// that ends leaves its runner waiting for the next.
func TestRunnersTakeTheNextRun(t *testing.T) {
	p := testRunners(t)
	const runs = 50
	for range runs {
		done := make(chan struct{})
		p.Go(func() { close(done) })
		<-done
		waitFor(t, func() error {
			if w := p.waiting(); w != 1 {
				return fmt.Errorf("%d runners waiting, want 1", w)
			}
			return nil
		})
	}
	// The one that made the first, give or take a run handed over while
	// its runner had counted itself waiting but was not yet receiving.
	if n := p.started.Load(); n > runs/10 {
		t.Fatalf("%d runners started for %d runs one after another", n, runs)
	}
}

// Past maxIdleRunners waiting, a runner whose run ends ends too: a burst
// of runs at once leaves that many behind, not one per run.
func TestRunnersKeptWaitingAreBounded(t *testing.T) {
	p := testRunners(t)
	n := maxIdleRunners + 20
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(n)
	for range n {
		p.Go(func() {
			started.Done()
			<-release
		})
	}
	started.Wait()
	if got := p.started.Load(); got != int64(n) {
		t.Fatalf("%d runners for %d runs at once", got, n)
	}
	close(release)
	waitFor(t, func() error {
		if w := p.waiting(); w != maxIdleRunners {
			return fmt.Errorf("%d runners waiting, want %d", w, maxIdleRunners)
		}
		return nil
	})
}

// testRunners is a pool of the test's own, whose waiting runners end
// with it.
func testRunners(t *testing.T) *runnerPool {
	p := &runnerPool{runs: make(chan func())}
	t.Cleanup(func() { close(p.runs) })
	return p
}
