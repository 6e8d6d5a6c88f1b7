package contract

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// CallPrefix starts the reply subjects of role's requests to the worker
// functions (a Caller's), apart from the role's connection inbox, where
// JetStream answers it. A function may publish to the one, to answer,
// and not to the other, so no function can forge a stored message's
// PubAck or a stream read's answer for the asker.
func CallPrefix(role string) string { return "_CALL_" + role }

// Requester asks and waits for one answer: a *nats.Conn (answers on its
// inbox) or a Caller (answers on its call prefix).
type Requester interface {
	RequestWithContext(ctx context.Context, subject string, data []byte) (*nats.Msg, error)
}

// Caller asks worker functions over one connection, with its answers on
// one subscription under a call prefix (CallPrefix), each handed to the
// request waiting for it. Safe for concurrent use.
type Caller struct {
	nc     *nats.Conn
	prefix string
	sub    *nats.Subscription
	next   atomic.Uint64

	mu      sync.Mutex // guards waiting; a leaf
	waiting map[string]chan *nats.Msg
}

// NewCaller subscribes to the answers under prefix on nc.
func NewCaller(nc *nats.Conn, prefix string) (*Caller, error) {
	c := &Caller{nc: nc, prefix: prefix + "." + nats.NewInbox()[len(nats.InboxPrefix):], waiting: map[string]chan *nats.Msg{}}
	sub, err := nc.Subscribe(c.prefix+".*", c.route)
	if err != nil {
		return nil, err
	}
	c.sub = sub
	return c, nil
}

func (c *Caller) route(m *nats.Msg) {
	token := m.Subject[len(c.prefix)+1:]
	c.mu.Lock()
	ch := c.waiting[token]
	delete(c.waiting, token)
	c.mu.Unlock()
	if ch != nil {
		ch <- m // room for one, and taken out: never blocks
	}
}

// RequestWithContext sends data on subject and waits for its answer until
// ctx ends: nats.ErrNoResponders when nobody listens on subject.
func (c *Caller) RequestWithContext(ctx context.Context, subject string, data []byte) (*nats.Msg, error) {
	token := strconv.FormatUint(c.next.Add(1), 36)
	ch := make(chan *nats.Msg, 1)
	c.mu.Lock()
	c.waiting[token] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, token)
		c.mu.Unlock()
	}()
	if err := c.nc.PublishRequest(subject, c.prefix+"."+token, data); err != nil {
		return nil, err
	}
	select {
	case m := <-ch:
		// The server's answer to a request nobody listens for.
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops taking answers.
func (c *Caller) Close() { _ = c.sub.Unsubscribe() }
