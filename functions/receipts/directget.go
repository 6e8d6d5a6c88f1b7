package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// directGet is a direct get request (nats-server's JSApiMsgGetRequest).
type directGet struct {
	Seq       uint64   `json:"seq,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MaxBytes  int      `json:"max_bytes,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
}

// directGet sends req to stream's direct get and passes each message
// answered to each, until the end of the batch. It returns the status
// that ended it when not the end of a batch: "404" (nothing matched) or
// "413" (too many to answer at once).
func (s *Service) directGet(ctx context.Context, stream string, req directGet, each func(*nats.Msg)) (string, error) {
	g, reply := s.gets.open()
	defer s.gets.close(reply)
	body, _ := json.Marshal(req)
	if err := s.nc.PublishRequest(contract.DirectGetSubject(stream), reply, body); err != nil {
		return "", err
	}
	for {
		select {
		case <-g.wake:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		for _, m := range g.take() {
			switch st := m.Header.Get("Status"); st {
			case "":
				each(m)
			case "204":
				return "", nil
			case "404", "413":
				return st, nil
			case "503":
				return "", nats.ErrNoResponders
			default:
				return "", errors.New("receipts: direct get on " + stream + ": " + st + " " + m.Header.Get("Description"))
			}
		}
	}
}

// getReplies carries the answers to an instance's direct gets over one
// subscription, each get's under a reply subject of its own below the
// subscription's prefix. A subscription per get, as nats.go's
// SubscribeSync makes one, costs a SUB and an UNSUB and a 65,536-slot
// channel (512 KB, zeroed): at P7 those channels were a sixth of every
// byte the all-in-one allocated, for the few dozen answers a get has.
type getReplies struct {
	prefix string // a get's reply subject is prefix and its number
	sub    *nats.Subscription

	mu    sync.Mutex // guards next and open; a leaf
	next  uint64
	calls map[string]*pendingGet
}

// pendingGet is one get's answers, taken in the order they came.
type pendingGet struct {
	wake chan struct{} // signalled when msgs grew; capacity 1

	mu   sync.Mutex // guards msgs; a leaf
	msgs []*nats.Msg
}

// subscribe starts taking answers on nc.
func (r *getReplies) subscribe(nc *nats.Conn) error {
	r.prefix = nc.NewInbox() + "."
	r.calls = map[string]*pendingGet{}
	sub, err := nc.Subscribe(r.prefix+"*", r.deliver)
	if err != nil {
		return err
	}
	// One subscription answers every get of the instance at once: its
	// queue must not be what drops an answer.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	r.sub = sub
	return nil
}

// unsubscribe ends the subscription; gets still open run into their
// deadline.
func (r *getReplies) unsubscribe() {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
}

// open registers a get and returns it with its reply subject.
func (r *getReplies) open() (*pendingGet, string) {
	g := &pendingGet{wake: make(chan struct{}, 1)}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	reply := r.prefix + strconv.FormatUint(r.next, 10)
	r.calls[reply] = g
	return g, reply
}

// close forgets the get under reply: answers still coming are dropped.
func (r *getReplies) close(reply string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.calls, reply)
}

// deliver hands an answer to its get.
func (r *getReplies) deliver(m *nats.Msg) {
	r.mu.Lock()
	g := r.calls[m.Subject]
	r.mu.Unlock()
	if g == nil {
		return // the get is over
	}
	g.mu.Lock()
	g.msgs = append(g.msgs, m)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// take returns the answers come since the last take.
func (g *pendingGet) take() []*nats.Msg {
	g.mu.Lock()
	defer g.mu.Unlock()
	msgs := g.msgs
	g.msgs = nil
	return msgs
}

// tickEntry is a GROUP_TICKS record as its stream's leader holds it.
type tickEntry struct {
	value []byte
	rev   uint64
}

// leaderTick reads key of GROUP_TICKS through the stream's leader:
// jetstream.ErrKeyNotFound if it holds none (or a delete). The settle
// decides from what it reads that no sender is owed (the aggregate, a
// witness's position) and then writes nothing a later request would
// fail on; a direct get, which a replica may answer from a step behind
// the leader, could show it the aggregate or a witness as they were
// before a write it must see, and leave the aggregate stuck below
// members past it. Reads the settle only bounds with (lowest.go) may
// lag: a lower position only delays a tick.
func (s *Service) leaderTick(ctx context.Context, key string) (tickEntry, error) {
	m, err := contract.GetMsg(ctx, s.nc, "KV_"+contract.GroupTicksKV, 0, contract.KVSubject(contract.GroupTicksKV, key))
	switch {
	case errors.Is(err, contract.ErrNoMsg):
		return tickEntry{}, jetstream.ErrKeyNotFound
	case err != nil:
		return tickEntry{}, fmt.Errorf("receipts: %w", err)
	case kvDeleted(m.Header):
		return tickEntry{}, jetstream.ErrKeyNotFound
	}
	return tickEntry{value: m.Data, rev: m.Sequence}, nil
}

// leaderRecord reads group gid's record in GROUP_INFO through the
// stream's leader: contract.ErrUnknownGroup if it has none (or a delete).
func (s *Service) leaderRecord(ctx context.Context, gid string) ([]byte, uint64, error) {
	m, err := contract.GetMsg(ctx, s.nc, "KV_"+contract.GroupInfoKV, 0, contract.KVSubject(contract.GroupInfoKV, gid))
	switch {
	case errors.Is(err, contract.ErrNoMsg):
		return nil, 0, contract.ErrUnknownGroup
	case err != nil:
		return nil, 0, fmt.Errorf("receipts: %w", err)
	case kvDeleted(m.Header):
		return nil, 0, contract.ErrUnknownGroup
	}
	return m.Data, m.Sequence, nil
}

// kvDeleted reports whether a stored KV entry's headers mark a delete or
// a purge.
func kvDeleted(hdrs []byte) bool {
	if len(hdrs) == 0 {
		return false
	}
	h, err := nats.DecodeHeadersMsg(hdrs)
	if err != nil {
		return false
	}
	op := h.Get("KV-Operation")
	return op == "DEL" || op == "PURGE"
}
