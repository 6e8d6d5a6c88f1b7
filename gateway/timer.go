package gateway

import (
	"sync"
	"time"
)

// timerOp is one of the things a session's timer is set for.
type timerOp uint8

const (
	opExpire     timerOp = iota // the token expires: close with 1008
	opSecondLook                // read the inbox once more after connecting, on a cluster
	opCursor                    // save the cursor, CursorDelay after the floor moved
	opPubs                      // a PubAck is overdue or a write is to be retried (pubQueue)
	timerOps
)

// sessionTimer is the one timer of a session. Each op has a deadline of
// its own; the timer is set for the earliest and, when it fires, runs
// every op that is due and sets itself for the next. An idle session so
// holds one timer (its token's expiry) however many deadlines it may have.
type sessionTimer struct {
	owner interface{ onTimer(timerOp) } // runs a due op, on the timer's goroutine, with no lock held

	mu      sync.Mutex // guards the fields below; taken last, never held while an op runs
	t       *time.Timer
	at      [timerOps]int64 // unix ns; 0: not set
	stopped bool
}

// set sets op's deadline to at, replacing any earlier one.
func (st *sessionTimer) set(op timerOp, at time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopped {
		return
	}
	st.at[op] = at.UnixNano()
	st.armLocked()
}

// clear unsets op's deadline.
func (st *sessionTimer) clear(op timerOp) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.at[op] = 0
}

// stop unsets every deadline for good.
func (st *sessionTimer) stop() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stopped = true
	st.at = [timerOps]int64{}
	if st.t != nil {
		st.t.Stop()
	}
}

// armLocked sets the timer for the earliest deadline. A deadline that was
// cleared leaves the timer set: it fires, finds nothing due, and sets
// itself again or not at all.
//
// Lock should be held.
func (st *sessionTimer) armLocked() {
	next := st.nextLocked()
	if next == 0 {
		return
	}
	d := time.Duration(next - time.Now().UnixNano())
	if st.t == nil {
		st.t = time.AfterFunc(d, st.onFire)
		return
	}
	st.t.Reset(d)
}

// nextLocked is the earliest deadline set, 0 when none is.
//
// Lock should be held.
func (st *sessionTimer) nextLocked() int64 {
	var next int64
	for _, at := range st.at {
		if at != 0 && (next == 0 || at < next) {
			next = at
		}
	}
	return next
}

func (st *sessionTimer) onFire() {
	st.mu.Lock()
	if st.stopped {
		st.mu.Unlock()
		return
	}
	now := time.Now().UnixNano()
	var due [timerOps]bool
	for op, at := range st.at {
		if at != 0 && at <= now {
			due[op] = true
			st.at[op] = 0
		}
	}
	st.armLocked()
	st.mu.Unlock()
	for op, d := range due {
		if d {
			st.owner.onTimer(timerOp(op))
		}
	}
}
