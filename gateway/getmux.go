package gateway

import (
	"sync"

	"github.com/nats-io/nats.go"
)

// getMux carries the answers to this gateway's batched direct gets on one
// subscription (a wildcard under its own inbox prefix), each request's to
// a channel of its own: a subscription per request would cost a 64k-slot
// channel each in nats.go.
type getMux struct {
	nc      *nats.Conn
	prefix  string
	sub     *nats.Subscription
	mu      sync.Mutex
	waiting map[string]chan *nats.Msg
}

func newGetMux(nc *nats.Conn) (*getMux, error) {
	g := &getMux{nc: nc, prefix: nc.NewInbox(), waiting: map[string]chan *nats.Msg{}}
	sub, err := nc.Subscribe(g.prefix+".*", g.route)
	if err != nil {
		return nil, err
	}
	g.sub = sub
	return g, nil
}

func (g *getMux) route(m *nats.Msg) {
	token := m.Subject[len(g.prefix)+1:]
	g.mu.Lock()
	ch := g.waiting[token]
	g.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default: // more than asked for: the reader fails on its timeout
		}
	}
}

// open registers a request expecting up to n answers and returns its
// reply subject, the channel they arrive on, and the function that ends
// it.
func (g *getMux) open(n int) (reply string, answers <-chan *nats.Msg, done func()) {
	token := nats.NewInbox()[len(nats.InboxPrefix):]
	ch := make(chan *nats.Msg, n)
	g.mu.Lock()
	g.waiting[token] = ch
	g.mu.Unlock()
	return g.prefix + "." + token, ch, func() {
		g.mu.Lock()
		delete(g.waiting, token)
		g.mu.Unlock()
	}
}

func (g *getMux) close() { _ = g.sub.Unsubscribe() }
