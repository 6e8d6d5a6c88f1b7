package gateway

import (
	"fmt"
	"runtime"
	"testing"
)

// An idle session holds no goroutine of its own (its read loop is its
// transport's): its feed's run ends once there is nothing to deliver,
// its PubAck queue and lease wait on the gateway's replies, and its
// deadlines are one timer.
func TestIdleSessionsHoldNoGoroutine(t *testing.T) {
	fs := &fakeStream{}
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	// The runners waiting for runs (workers.go) are the gateway's, and
	// as many as there are.
	before := runtime.NumGoroutine() - runners.waiting()
	for i := range 100 {
		user := fmt.Sprintf("u%d", i)
		fs.store(user, "alice", "a1")
		s, ft := startedSession(t, srv, user, 0)
		expectSeqs(t, ft, uint64(i+1))
		s.feed.settle(uint64(i + 1))
	}
	waitFor(t, func() error {
		if n := runtime.NumGoroutine() - runners.waiting(); n > before {
			return fmt.Errorf("%d goroutines with 100 idle sessions, %d before", n, before)
		}
		return nil
	})
}
