package worker

import "sync"

// Requests bounds and counts a function's requests in hand, so that its
// Stop returns only once the last one has ended. A micro service's Stop
// drains its subscriptions: requests already received are still handed
// to the handler after it returns, and a WaitGroup added to after its
// Wait began is a race. Once Close is called, Enter refuses.
type Requests struct {
	sem chan struct{}

	mu     sync.Mutex // guards closed, and wg's Add against Close's Wait
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

// NewRequests allows n requests in hand at once.
func NewRequests(n int) *Requests {
	return &Requests{sem: make(chan struct{}, n), done: make(chan struct{})}
}

// Enter waits for room for one more request and reports true, or false
// once Close was called. A request entered must Leave.
func (r *Requests) Enter() bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	r.wg.Add(1)
	r.mu.Unlock()
	select {
	case r.sem <- struct{}{}:
		return true
	case <-r.done:
		r.wg.Done()
		return false
	}
}

// Leave ends a request Enter let in.
func (r *Requests) Leave() {
	<-r.sem
	r.wg.Done()
}

// Close refuses every later Enter, ends those waiting for room, and
// returns once every request let in has left. Safe to call more than
// once.
func (r *Requests) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.done)
	}
	r.mu.Unlock()
	r.wg.Wait()
}
