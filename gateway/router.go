package gateway

import (
	"encoding/json"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// routerBuffer is how many messages wait for the router's goroutine. Past
// it NATS drops them and reports the subscription as slow (see watchLive).
const routerBuffer = 16384

// routeKind is what the messages on a route are, and so which part of its
// sessions takes them.
type routeKind uint8

const (
	routeLive     routeKind = iota // a user's live copies: to each session's feed
	routeEvents                    // a user's events (typing): to each session's device
	routeKick                      // a device's kicks: to its session, off the router's goroutine
	routePresence                  // a user's presence changes: decoded once, to each follower
)

// router shares NATS subscriptions among this gateway's sessions: one per
// subject however many sessions listen there (a user's live copies, events
// and presence changes reach all of the user's devices, or followers, on
// this gateway), all feeding one channel read by one goroutine. A session
// that listens on three subjects so costs three slice entries, not three
// subscription goroutines.
//
// The router holds mu while it hands a message to a route's sessions, so a
// session removed from a route gets nothing after remove returns. The parts
// it hands messages to (feed.onLive, session.onEvent, follows.onPresence)
// take only their own locks and must not block, and no lock of theirs is
// held while calling add or remove.
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
	sub    *nats.Subscription
	kind   routeKind
	owners []*session
}

func newRouter(nc *nats.Conn) *router {
	r := &router{nc: nc, ch: make(chan *nats.Msg, routerBuffer), stop: make(chan struct{}), done: make(chan struct{}),
		subjects: map[string]*route{}, bySub: map[*nats.Subscription]*route{}}
	go r.run()
	return r
}

// add routes subject's messages to s, as kind. The server has the
// subscription once the connection is next flushed.
func (r *router) add(kind routeKind, subject string, s *session) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.subjects[subject]
	if rt == nil {
		sub, err := r.nc.ChanSubscribe(subject, r.ch)
		if err != nil {
			return err
		}
		rt = &route{sub: sub, kind: kind}
		r.subjects[subject] = rt
		r.bySub[sub] = rt
	}
	rt.owners = append(rt.owners, s)
	return nil
}

// remove ends s's route on subject, and the subscription with the last
// session.
func (r *router) remove(subject string, s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.subjects[subject]
	if rt == nil {
		return
	}
	for i, o := range rt.owners {
		if o == s {
			rt.owners = append(rt.owners[:i], rt.owners[i+1:]...)
			break
		}
	}
	if len(rt.owners) == 0 {
		_ = rt.sub.Unsubscribe()
		delete(r.subjects, subject)
		delete(r.bySub, rt.sub)
	}
}

// liveOwners returns the sessions whose live copies come through sub
// (none if sub carries anything else).
func (r *router) liveOwners(sub *nats.Subscription) []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.bySub[sub]
	if rt == nil || rt.kind != routeLive {
		return nil
	}
	return append([]*session(nil), rt.owners...)
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
	if rt == nil || len(rt.owners) == 0 {
		// Its listener left while the message waited here. A request
		// (a kick) is answered empty, as a stopped session answers it,
		// so the asker need not wait out its timeout.
		if m.Reply != "" {
			_ = m.Respond(nil)
		}
		return
	}
	switch rt.kind {
	case routeLive:
		for _, s := range rt.owners {
			s.feed.onLive(m)
		}
	case routeEvents:
		for _, s := range rt.owners {
			s.onEvent(m)
		}
	case routeKick:
		for _, s := range rt.owners {
			go s.onKick(m) // it waits for the session to stop delivering
		}
	case routePresence:
		var u contract.PresenceUpdate
		if json.Unmarshal(m.Data, &u) != nil || !protocol.ValidID(u.User) {
			return
		}
		for _, s := range rt.owners {
			s.follows.onPresence(&u)
		}
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
