package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	answers chan contract.GroupPositionsReply    // the answer to the request held (Failed "boom": refused)
}

func newGatherRig(flights int) *gatherRig {
	r := &gatherRig{calls: make(chan []contract.GroupPositionRequest, 16), answers: make(chan contract.GroupPositionsReply)}
	r.p = newPositions(func(ctx context.Context, req contract.GroupPositionsRequest) (contract.GroupPositionsReply, error) {
		r.calls <- req.Positions
		a := <-r.answers
		if slices.Contains(a.Failed, "boom") {
			return contract.GroupPositionsReply{}, errBoom
		}
		return a, nil
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

var errBoom = errors.New("refused")

// A position asked while no request is on its way goes at once, alone;
// those asked while one is on its way go together in the next, and each
// asker gets the answer of the request that carried its positions.
func TestPositionsGatherWhileARequestIsOnItsWay(t *testing.T) {
	r := newGatherRig(1)
	type answer struct {
		failed []string
		err    error
	}
	errs := make(chan answer, 11)
	ask := func(member string) {
		failed, err := r.p.ask(posOf(member, 1))
		errs <- answer{failed, err}
	}
	go ask("m0")
	if got := <-r.calls; len(got) != 1 || got[0].Member != "m0" {
		t.Fatalf("first request %+v, want m0's position alone", got)
	}
	for i := 1; i <= 10; i++ {
		go ask(fmt.Sprintf("m%d", i))
	}
	r.waitQueued(t, 10)
	r.answers <- contract.GroupPositionsReply{Failed: []string{"g0"}}
	if a := <-errs; a.err != nil || fmt.Sprint(a.failed) != "[g0]" {
		t.Fatalf("m0's answer %+v, want g0 named as failed", a)
	}
	got := <-r.calls
	if len(got) != 10 {
		t.Fatalf("second request carried %d positions, want the 10 asked meanwhile", len(got))
	}
	r.answers <- contract.GroupPositionsReply{Failed: []string{"boom"}}
	for range 10 {
		if a := <-errs; !errors.Is(a.err, errBoom) {
			t.Fatalf("an asker of the second request got %+v, want its refusal", a)
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
			if _, err := r.p.ask(posOf(member, n)); err != nil {
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
	r.answers <- contract.GroupPositionsReply{}
	r.answers <- contract.GroupPositionsReply{}
	sizes := map[int]int{}
	for range 2 {
		got := <-r.calls
		sizes[len(got)]++
		r.answers <- contract.GroupPositionsReply{}
	}
	if sizes[500] != 1 || sizes[100] != 1 {
		t.Fatalf("request sizes %v, want one of 500 (five askers' within %d) and one of 100", sizes, contract.GroupPositionsMax)
	}
	wg.Wait()
}

// An ask still queued when its timeout passes (every flight held by a
// slow function) leaves the queue unavailable, as a request of its own
// would have; one already on its way waits for that request's answer.
func TestPositionsQueuedPastTheTimeoutAreUnavailable(t *testing.T) {
	r := newGatherRig(1)
	r.p.timeout = 100 * time.Millisecond // the wait under test
	first := make(chan error, 1)
	go func() { _, err := r.p.ask(posOf("m0", 1)); first <- err }()
	<-r.calls // on its way, held
	if _, err := r.p.ask(posOf("m1", 1)); !errors.Is(err, contract.ErrUnavailable) {
		t.Fatalf("queued past the timeout: %v, want ErrUnavailable", err)
	}
	if n := r.queued(); n != 0 {
		t.Fatalf("%d positions still queued", n)
	}
	r.answers <- contract.GroupPositionsReply{}
	if err := <-first; err != nil {
		t.Fatalf("the ask on its way got %v, want its request's answer", err)
	}
}
