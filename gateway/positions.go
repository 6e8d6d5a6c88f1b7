package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/switchboard-im/switchboard/contract"
)

// positions gathers the group delivered positions the gateway's sessions
// ask for into shared requests (contract.GroupPositionsRequest): a few
// requests are on their way at a time, and what sessions ask for
// meanwhile goes in the next one, up to contract.GroupPositionsMax. A
// group message to 1,024 members on this gateway makes each member's
// device ack it at about the same moment; asked one by one, that was
// 1,024 requests to the receipts function, each reading the group's
// aggregate and settling it. Nothing waits for a timer: a position asked
// while no request is on its way goes at once, alone.
//
// Each asker waits for the request that carried its positions and gets
// its answer, so a session settles its stretch only once its positions
// are taken, and handles a refusal itself (ErrUnavailable: it stores
// them in TICKS), as when it asked alone; so are the positions of a
// group the function names as failed, and only those.
type positions struct {
	// call asks the receipts function (contract.Call in a gateway; a
	// stand-in in the gatherer's own test).
	call    func(ctx context.Context, req contract.GroupPositionsRequest) (contract.GroupPositionsReply, error)
	timeout time.Duration
	flights int // requests on their way at most

	mu     sync.Mutex // guards the fields below; a leaf
	queue  []positionAsk
	flying int
}

// positionAsk is one asker's positions and where its answer goes.
type positionAsk struct {
	reqs []contract.GroupPositionRequest
	done chan positionAnswer
}

// positionAnswer is a gathered request's answer: the groups whose
// positions were not taken, or the request's error.
type positionAnswer struct {
	failed []string
	err    error
}

// positionFlights is how many gathered requests a gateway has on their
// way at once: more than one, so a request held by a slow group does not
// hold every other group's positions behind it.
const positionFlights = 4

func newPositions(call func(context.Context, contract.GroupPositionsRequest) (contract.GroupPositionsReply, error), timeout time.Duration) *positions {
	return &positions{call: call, timeout: timeout, flights: positionFlights}
}

// ask has reqs taken and returns the answer of the request that carried
// them (their number must not pass contract.GroupPositionsMax): the
// groups among them whose positions were not taken, or its error. An ask
// still queued after the timeout (the function answering slowly, every
// flight taken) leaves the queue with contract.ErrUnavailable, as a
// request of its own would have, so no session waits longer than that.
func (p *positions) ask(reqs []contract.GroupPositionRequest) (failed []string, err error) {
	done := make(chan positionAnswer, 1)
	p.mu.Lock()
	p.queue = append(p.queue, positionAsk{reqs: reqs, done: done})
	if p.flying < p.flights {
		p.flying++
		go p.fly()
	}
	p.mu.Unlock()
	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	select {
	case a := <-done:
		return a.failed, a.err
	case <-timer.C:
	}
	p.mu.Lock()
	for i, a := range p.queue {
		if a.done == done {
			p.queue = slices.Delete(p.queue, i, i+1)
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: group positions waited %s for a request", contract.ErrUnavailable, p.timeout)
		}
	}
	p.mu.Unlock()
	a := <-done // on its way: its answer comes within the request's timeout
	return a.failed, a.err
}

// fly sends what is queued, one request at a time, until nothing is.
func (p *positions) fly() {
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.flying--
			p.mu.Unlock()
			return
		}
		n, count := 0, 0
		for n < len(p.queue) && (n == 0 || count+len(p.queue[n].reqs) <= contract.GroupPositionsMax) {
			count += len(p.queue[n].reqs)
			n++
		}
		asks := p.queue[:n:n]
		p.queue = p.queue[n:]
		p.mu.Unlock()

		// The function answers in time with what it took by then.
		req := contract.GroupPositionsRequest{Positions: make([]contract.GroupPositionRequest, 0, count),
			WithinMS: (p.timeout * 3 / 4).Milliseconds()}
		for _, a := range asks {
			req.Positions = append(req.Positions, a.reqs...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
		reply, err := p.call(ctx, req)
		cancel()
		for _, a := range asks {
			a.done <- positionAnswer{failed: reply.Failed, err: err}
		}
	}
}
