package receipts

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// groupNews settles the groups whose record changed, once each, on a
// goroutine of its own: a membership change counts at once, whether or
// not anyone's position in the group moves after it. Without it a
// removal would count only from the group's next position, and in a
// group gone quiet the removed member would hold the senders' ticks back
// for good.
//
// The changes come from one durable consumer of GROUP_INFO shared by
// every instance (consumers/receipts-news.json), so each is settled by
// one instance, and one made while no instance ran is settled when one
// starts. A change is acked once a settle of its group that began after
// it came has finished (or given up); an instance that dies first leaves
// it to be delivered again.
type groupNews struct {
	settle func(ctx context.Context, gid string) error
	wake   chan struct{} // one pending signal

	mu      sync.Mutex // guards the fields below; a leaf
	pending map[string]int
	// held are the changes of each group waiting for a settle to begin,
	// acked when it ends.
	held  map[string][]jetstream.Msg
	busy  bool // a batch taken from pending is being settled
	later int  // retries waiting for their time
}

// groupNewsAttempts bounds the settles tried for one change; past them
// the group's next position recomputes it (its aggregate was computed
// with another record).
const groupNewsAttempts = 6

func newGroupNews(settle func(ctx context.Context, gid string) error) *groupNews {
	return &groupNews{settle: settle, wake: make(chan struct{}, 1), pending: map[string]int{}, held: map[string][]jetstream.Msg{}}
}

// take asks for the group of a change delivered by the durable to be
// settled, and acks the change once it is. It never blocks.
func (n *groupNews) take(m jetstream.Msg) {
	gid, ok := strings.CutPrefix(m.Subject(), "$KV."+contract.GroupInfoKV+".")
	if !ok || !protocol.ValidID(gid) {
		_ = m.Ack() // not a record's change (a user's groups): nothing to settle
		return
	}
	n.retry(gid, 0, []jetstream.Msg{m})
}

func (n *groupNews) retry(gid string, attempt int, msgs []jetstream.Msg) {
	n.mu.Lock()
	if a, ok := n.pending[gid]; !ok || attempt < a {
		n.pending[gid] = attempt
	}
	if len(msgs) > 0 {
		n.held[gid] = append(n.held[gid], msgs...)
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run settles pending groups until stop closes; a settle in hand when
// it does is cut short, and the changes not settled are handed back for
// another instance.
func (n *groupNews) run(stop <-chan struct{}, timeout time.Duration, log func(gid string, attempt int, err error)) {
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	defer n.handBack()
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
		batch, held := n.pending, n.held
		n.pending, n.held, n.busy = map[string]int{}, map[string][]jetstream.Msg{}, true
		n.mu.Unlock()
		for gid, attempt := range batch {
			msgs := held[gid]
			delete(held, gid)
			if base.Err() != nil {
				n.retry(gid, attempt, msgs) // handed back below
				continue
			}
			ctx, cancel := context.WithTimeout(base, timeout)
			err := n.settle(ctx, gid)
			cancel()
			if err != nil && base.Err() != nil {
				n.retry(gid, attempt, msgs) // cut short by the stop: handed back below
				continue
			}
			if err == nil || attempt+1 >= groupNewsAttempts {
				if err != nil {
					log(gid, attempt, err)
				}
				for _, m := range msgs {
					_ = m.Ack()
				}
				continue
			}
			// Again after a wait growing from 100 ms; a newer change
			// meanwhile settles at once.
			for _, m := range msgs {
				_ = m.InProgress()
			}
			wait := 100 * time.Millisecond << attempt
			n.mu.Lock()
			n.later++
			n.mu.Unlock()
			time.AfterFunc(wait, func() {
				n.retry(gid, attempt+1, msgs)
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

// handBack naks the changes not settled, so another instance takes them
// without waiting out the ack wait. A retry still waiting for its time
// holds its changes until the ack wait gives them back.
func (n *groupNews) handBack() {
	n.mu.Lock()
	held := n.held
	n.held = map[string][]jetstream.Msg{}
	n.mu.Unlock()
	for _, msgs := range held {
		for _, m := range msgs {
			_ = m.Nak()
		}
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
// and the senders told what that makes due. The record is read through
// the leader: the durable may bring the change before this instance's
// watch says the record it keeps is behind.
func (s *Service) settleNews(ctx context.Context, gid string) error {
	g, err := s.records.fresh(ctx, gid)
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
