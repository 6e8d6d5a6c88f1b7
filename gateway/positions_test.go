package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// gatherRig is the gatherer with a stand-in for the receipts function
// that holds each request until the test answers it.
type gatherRig struct {
	p       *positions
	calls   chan []contract.GroupPositionRequest // each request as it arrives
	answers chan error                           // the answer to the request held
}

func newGatherRig(flights int) *gatherRig {
	r := &gatherRig{calls: make(chan []contract.GroupPositionRequest, 16), answers: make(chan error)}
	r.p = newPositions(func(ctx context.Context, req contract.GroupPositionsRequest) error {
		r.calls <- req.Positions
		return <-r.answers
	}, time.Minute)
	r.p.flights = flights
	return r
}

func (r *gatherRig) queued() int {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	n := 0
	for _, a := range r.p.queue {
		n += len(a.reqs)
	}
	return n
}

func (r *gatherRig) waitQueued(t *testing.T, n int) {
	t.Helper()
	waitFor(t, func() error {
		if got := r.queued(); got != n {
			return fmt.Errorf("%d positions queued, want %d", got, n)
		}
		return nil
	})
}

func posOf(member string, n int) []contract.GroupPositionRequest {
	out := make([]contract.GroupPositionRequest, n)
	for i := range out {
		out[i] = contract.GroupPositionRequest{Group: fmt.Sprintf("g%d", i), Member: member, Device: "phone", Status: protocol.StatusDelivered, Seq: 1}
	}
	return out
}

// A position asked while no request is on its way goes at once, alone;
// those asked while one is on its way go together in the next, and each
// asker gets the answer of the request that carried its positions.
func TestPositionsGatherWhileARequestIsOnItsWay(t *testing.T) {
	r := newGatherRig(1)
	errs := make(chan error, 11)
	go func() { errs <- r.p.ask(posOf("m0", 1)) }()
	if got := <-r.calls; len(got) != 1 || got[0].Member != "m0" {
		t.Fatalf("first request %+v, want m0's position alone", got)
	}
	for i := 1; i <= 10; i++ {
		go func() { errs <- r.p.ask(posOf(fmt.Sprintf("m%d", i), 1)) }()
	}
	r.waitQueued(t, 10)
	r.answers <- nil
	if err := <-errs; err != nil {
		t.Fatalf("m0's answer %v", err)
	}
	got := <-r.calls
	if len(got) != 10 {
		t.Fatalf("second request carried %d positions, want the 10 asked meanwhile", len(got))
	}
	boom := errors.New("refused")
	r.answers <- boom
	for range 10 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("an asker of the second request got %v, want its refusal", err)
		}
	}
	if n := r.queued(); n != 0 {
		t.Fatalf("%d positions left queued", n)
	}
}

// A request carries at most contract.GroupPositionsMax positions and
// never splits one asker's; several go at once, up to the flights.
func TestPositionsRequestsStayWithinTheirBounds(t *testing.T) {
	r := newGatherRig(2)
	var wg sync.WaitGroup
	ask := func(member string, n int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.p.ask(posOf(member, n)); err != nil {
				t.Error(err)
			}
		}()
	}
	ask("first", 1)
	a := <-r.calls
	ask("second", 1)
	b := <-r.calls // two on their way at once
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("requests of %d and %d, want one position each", len(a), len(b))
	}
	for i := range 6 {
		ask(fmt.Sprintf("m%d", i), 100)
	}
	r.waitQueued(t, 600)
	r.answers <- nil
	r.answers <- nil
	sizes := map[int]int{}
	for range 2 {
		got := <-r.calls
		sizes[len(got)]++
		r.answers <- nil
	}
	if sizes[500] != 1 || sizes[100] != 1 {
		t.Fatalf("request sizes %v, want one of 500 (five askers' within %d) and one of 100", sizes, contract.GroupPositionsMax)
	}
	wg.Wait()
}
