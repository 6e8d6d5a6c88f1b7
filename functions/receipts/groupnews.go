package receipts

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/switchboard-im/switchboard/contract"
)

// groupNews settles the groups whose record the watch saw change, once
// each, on a goroutine of its own: a membership change counts at once,
// whether or not anyone's position in the group moves after it. Without
// it a removal would count only from the group's next position, and in a
// group gone quiet the removed member would hold the senders' ticks back
// for good.
//
// Every instance watches, so every instance settles each change; the
// aggregate's compare-and-set makes them agree, at a recompute each per
// change (changes are few: `group` frames are rate limited).
type groupNews struct {
	settle func(ctx context.Context, gid string) error
	wake   chan struct{} // one pending signal

	mu      sync.Mutex // guards the fields below; a leaf
	pending map[string]int
	busy    bool // a batch taken from pending is being settled
	later   int  // retries waiting for their time
}

// groupNewsAttempts bounds the settles tried for one change; past them
// the group's next position recomputes it (its aggregate was computed
// with another record).
const groupNewsAttempts = 6

func newGroupNews(settle func(ctx context.Context, gid string) error) *groupNews {
	return &groupNews{settle: settle, wake: make(chan struct{}, 1), pending: map[string]int{}}
}

// add asks for group gid to be settled. It never blocks.
func (n *groupNews) add(gid string) { n.retry(gid, 0) }

func (n *groupNews) retry(gid string, attempt int) {
	n.mu.Lock()
	if a, ok := n.pending[gid]; !ok || attempt < a {
		n.pending[gid] = attempt
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run settles pending groups until stop closes; a settle in hand when
// it does is cut short.
func (n *groupNews) run(stop <-chan struct{}, timeout time.Duration, log func(gid string, attempt int, err error)) {
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	go func() {
		select {
		case <-stop:
			cancelAll()
		case <-base.Done():
		}
	}()
	for {
		select {
		case <-stop:
			return
		case <-n.wake:
		}
		n.mu.Lock()
		batch := n.pending
		n.pending, n.busy = map[string]int{}, true
		n.mu.Unlock()
		for gid, attempt := range batch {
			if base.Err() != nil {
				break
			}
			ctx, cancel := context.WithTimeout(base, timeout)
			err := n.settle(ctx, gid)
			cancel()
			if err == nil || attempt+1 >= groupNewsAttempts {
				if err != nil {
					log(gid, attempt, err)
				}
				continue
			}
			// Again after a wait growing from 100 ms; a newer change
			// meanwhile settles at once.
			wait := 100 * time.Millisecond << attempt
			n.mu.Lock()
			n.later++
			n.mu.Unlock()
			time.AfterFunc(wait, func() {
				n.retry(gid, attempt+1)
				n.mu.Lock()
				n.later--
				n.mu.Unlock()
			})
		}
		n.mu.Lock()
		n.busy = false
		n.mu.Unlock()
	}
}

// idle reports whether no settle is pending or running.
func (n *groupNews) idle() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.pending) == 0 && !n.busy && n.later == 0
}

// settleNews settles group gid after a change of its record: the
// aggregate was computed with another membership, so it is recomputed
// and the senders told what that makes due.
func (s *Service) settleNews(ctx context.Context, gid string) error {
	g, err := s.records.get(ctx, gid)
	switch {
	case errors.Is(err, contract.ErrUnknownGroup), errors.Is(err, contract.ErrBadRecord):
		s.newsSettled.Add(1)
		return nil
	case err != nil:
		return err
	}
	if err := s.settleGroup(ctx, g, &settling{read: true}); err != nil {
		return err
	}
	s.newsSettled.Add(1)
	return nil
}
