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
	mu       sync.Mutex // guards the fields below
	subjects map[string]*route
	bySub    map[*nats.Subscription]*route
	// slow holds the live subscriptions NATS reported dropping copies of,
	// with their counts when their sessions were last woken. NATS reports
	// a subscription once per streak of drops, which ends when one of its
	// copies gets into the buffer; later drops of the streak are found by
	// the count, looked at when the router has caught up and when a copy
	// of the subscription comes out of the buffer.
	slow map[*nats.Subscription]slowCounts
	// wake has sessions that may have lost live copies read their inbox.
	wake func([]*session)
}

// slowCounts are a subscription's drops and copies let into the buffer.
type slowCounts struct {
	dropped   int
	delivered int64
}

// countsOf reads sub's counts.
func countsOf(sub *nats.Subscription) (slowCounts, error) {
	n, err := sub.Dropped()
	if err != nil {
		return slowCounts{}, err
	}
	// After the drops: a copy let in after this read ended the streak,
	// and a drop after that is NATS's to report.
	d, err := sub.Delivered()
	return slowCounts{dropped: n, delivered: d}, err
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
		delete(r.slow, rt.sub)
	}
}

// setWake sets what wakes sessions that may have lost live copies.
func (r *router) setWake(wake func([]*session)) {
	r.mu.Lock()
	r.wake = wake
	r.mu.Unlock()
}

// dropped takes NATS's report that sub dropped a message: if sub carries
// live copies, its sessions are woken now, and again whenever the count
// of drops has grown by the time the router has caught up or a message
// of sub gets through.
func (r *router) dropped(sub *nats.Subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.bySub[sub]
	if rt == nil || rt.kind != routeLive {
		return
	}
	c, err := countsOf(sub)
	if err != nil {
		return
	}
	if r.slow == nil {
		r.slow = map[*nats.Subscription]slowCounts{}
	}
	r.slow[sub] = c
	r.wakeLocked(rt)
}

// wakeLocked wakes rt's sessions.
//
// Lock should be held.
func (r *router) wakeLocked(rt *route) {
	if r.wake != nil && len(rt.owners) > 0 {
		r.wake(append([]*session(nil), rt.owners...))
	}
}

// recheckLocked wakes the sessions of sub again if NATS has dropped more
// of its copies since they were last woken, and stops watching sub once
// a copy got into the buffer after the last drop it knows of: the streak
// is over, and NATS reports the next drop itself. A copy coming out of
// the buffer says nothing: it may have gone in before the drops.
//
// Lock should be held.
func (r *router) recheckLocked(sub *nats.Subscription) {
	last, ok := r.slow[sub]
	if !ok {
		return
	}
	c, err := countsOf(sub)
	rt := r.bySub[sub]
	switch {
	case err != nil || rt == nil:
		delete(r.slow, sub)
	case c.dropped > last.dropped:
		r.slow[sub] = c
		r.wakeLocked(rt)
	case c.delivered > last.delivered:
		delete(r.slow, sub)
	}
}

func (r *router) run() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case m := <-r.ch:
			r.take(m)
		}
	}
}

// take is one turn of the loop: m dispatched, and the slow subscriptions
// looked at again if nothing else waits.
func (r *router) take(m *nats.Msg) {
	r.dispatch(m)
	if len(r.ch) == 0 {
		r.caughtUp()
	}
}

// caughtUp looks again at the subscriptions that dropped copies, once
// the router has nothing waiting: a drop of the streak after their
// sessions were woken is found there.
func (r *router) caughtUp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for sub := range r.slow {
		r.recheckLocked(sub)
	}
}

func (r *router) dispatch(m *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.slow) > 0 && m.Sub != nil {
		r.recheckLocked(m.Sub)
	}
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
