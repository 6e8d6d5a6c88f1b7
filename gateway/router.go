package gateway

import (
	"sync"

	"github.com/nats-io/nats.go"
)

// routerBuffer is how many messages wait for the router's goroutine. Past
// it NATS drops them and reports the subscription as slow (see watchLive).
const routerBuffer = 16384

// router shares NATS subscriptions among this gateway's sessions: one per
// subject however many sessions listen there (a user's live copies and
// events reach all of the user's devices on this gateway), all feeding
// one channel read by one goroutine. A session that listens on three
// subjects so costs three map entries, not three subscription goroutines.
//
// Handlers run on the router's goroutine and must not block.
type router struct {
	nc       *nats.Conn
	ch       chan *nats.Msg
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex // guards subjects and bySub
	subjects map[string]*route
	bySub    map[*nats.Subscription]*route
}

type route struct {
	sub      *nats.Subscription
	handlers []routeHandler
}

type routeHandler struct {
	owner *session
	fn    func(*nats.Msg)
}

func newRouter(nc *nats.Conn) *router {
	r := &router{nc: nc, ch: make(chan *nats.Msg, routerBuffer), stop: make(chan struct{}), done: make(chan struct{}),
		subjects: map[string]*route{}, bySub: map[*nats.Subscription]*route{}}
	go r.run()
	return r
}

// add has fn called for each message on subject, for owner. The server
// has the subscription once the connection is next flushed.
func (r *router) add(subject string, owner *session, fn func(*nats.Msg)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.subjects[subject]
	if rt == nil {
		sub, err := r.nc.ChanSubscribe(subject, r.ch)
		if err != nil {
			return err
		}
		rt = &route{sub: sub}
		r.subjects[subject] = rt
		r.bySub[sub] = rt
	}
	rt.handlers = append(rt.handlers, routeHandler{owner: owner, fn: fn})
	return nil
}

// remove ends owner's handler on subject, and the subscription with the
// last one.
func (r *router) remove(subject string, owner *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.subjects[subject]
	if rt == nil {
		return
	}
	for i, h := range rt.handlers {
		if h.owner == owner {
			rt.handlers = append(rt.handlers[:i], rt.handlers[i+1:]...)
			break
		}
	}
	if len(rt.handlers) == 0 {
		_ = rt.sub.Unsubscribe()
		delete(r.subjects, subject)
		delete(r.bySub, rt.sub)
	}
}

// owners returns the sessions listening through sub.
func (r *router) owners(sub *nats.Subscription) []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.bySub[sub]
	if rt == nil {
		return nil
	}
	out := make([]*session, len(rt.handlers))
	for i, h := range rt.handlers {
		out[i] = h.owner
	}
	return out
}

func (r *router) run() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case m := <-r.ch:
			r.dispatch(m)
		}
	}
}

func (r *router) dispatch(m *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.subjects[m.Subject]
	if rt == nil || len(rt.handlers) == 0 {
		// Its listener left while the message waited here. A request
		// (a kick) is answered empty, as a stopped session answers it,
		// so the asker need not wait out its timeout.
		if m.Reply != "" {
			_ = m.Respond(nil)
		}
		return
	}
	for _, h := range rt.handlers {
		h.fn(m)
	}
}

// close stops the router's goroutine. Subscriptions go with the
// connection.
func (r *router) close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}
