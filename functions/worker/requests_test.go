package worker_test

import (
	"sync"
	"testing"

	"github.com/switchboard-im/switchboard/functions/worker"
)

// Close waits for the requests in hand, ends those waiting for room, and
// lets no request in after it: none runs once it has returned, whatever
// the order the handlers come in.
func TestRequestsCloseWaitsAndRefusesLater(t *testing.T) {
	r := worker.NewRequests(2)
	if !r.Enter() || !r.Enter() {
		t.Fatal("two requests of two refused")
	}
	waiting := make(chan bool)
	go func() { waiting <- r.Enter() }() // no room: waits
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	if <-waiting {
		t.Fatal("a request waiting for room was let in by Close")
	}
	select {
	case <-closed:
		t.Fatal("Close returned with two requests in hand")
	default:
	}
	r.Leave()
	r.Leave()
	<-closed
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.Enter() {
				t.Error("a request let in after Close")
			}
		}()
	}
	wg.Wait()
	r.Close() // again: no effect
}
