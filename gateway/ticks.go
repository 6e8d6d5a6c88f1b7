package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Delivered ticks.
//
// A device's acks move its position: once it has acked every message up to
// a sequence, the senders of the chat messages in that stretch are told,
// one tick each whatever the number of messages (the receipts function
// stores them, contract.DeliveredRequest), and only then is the stretch
// settled and the cursor free to move past it. So a crash before the tick
// is stored delivers the messages again and the tick is asked for again
// (its dedup id keeps it single); nothing is kept per message.
//
// One request at a time per session: acks that arrive while one is on its
// way are gathered into the next, so a device acking 200 messages after a
// reconnect costs a request or two, and a tick per sender. A busy device
// also gathers over time: after a request, the next waits until
// TickInterval has passed, so a chat delivering a steady stream costs
// one request (and one receipt to its sender, one position write per
// group) per interval, not one per message. The first ack after a quiet
// spell is asked for at once, so a conversation at human pace sees each
// tick without delay; the gathering ends once the acks stop for
// TickQuiet (or twice their usual gap, if longer: cadence), or once the
// device has acked all it was given and its deliveries have paused for
// four times their usual gap (streamPause at least), so a burst's last
// messages are ticked soon after it; a device holding half its
// MaxInflight unsettled does not wait (an ack that brings it there ends
// the wait), so gathering never stalls its delivery; and a session that
// stops asks at once.
//
// Delivery never waits on the receipts function: when it does not answer
// in time, the request is stored in TICKS (a work queue it drains when it
// is back) and the stretch is settled then. That costs a second stored
// write, only while the function is away, and loses nothing.

// ticker settles a session's acked stretches (feed.ackedStretch), asking
// for their ticks first. Its runner is started by an ack (on one of the
// gateway's runners: workers.go) and ends when nothing acked is left, so
// an idle session holds no goroutine.
type ticker struct {
	s *session

	mu       sync.Mutex // guards the fields below
	running  bool       // the runner is running
	closing  bool       // the session stops: one last attempt, no retries
	finished chan struct{}
	wake     chan struct{} // closed by finish: ends the runner's backoff and gathering

	// gathering: the runner waits until gatherUntil (or less); an ack
	// that brings the unsettled to half MaxInflight meanwhile nudges it,
	// as does one that ends the burst sooner (mayEnd). nudge is made on
	// the first wait, so an idle session holds none.
	gathering   bool
	gatherUntil time.Time
	nudge       chan struct{}

	lastAsk time.Time // when the runner last asked for ticks (the runner's own)
}

func (t *ticker) init(s *session) {
	t.s = s
	t.finished = make(chan struct{})
	t.wake = make(chan struct{})
}

// kick has the runner run, unless it is running or the session stops. A
// runner gathering acks is nudged once the device holds half its
// MaxInflight unsettled: it asks then, or delivery would stall at
// MaxInflight until the interval is over. Otherwise the ack may end the
// burst sooner than the runner waits for (mayEnd): above all once the
// device has acked all it was given.
func (t *ticker) kick() {
	t.mu.Lock()
	if t.closing {
		t.mu.Unlock()
		return
	}
	if t.running {
		gathering := t.gathering
		t.mu.Unlock()
		switch {
		case !gathering:
		case t.holdingHalf():
			t.nudgeRunner()
		default:
			t.mayEnd()
		}
		return
	}
	t.running = true
	t.mu.Unlock()
	runners.Go(t.run)
}

// mayEnd nudges a runner gathering acks if the device's burst now ends
// before the runner's wait does (feed.burstEnd), after an ack (kick) or
// once its feed went idle with nothing unacked (feed.run).
func (t *ticker) mayEnd() {
	quiet := t.s.srv.cfg.TickQuiet
	if quiet <= 0 {
		return
	}
	t.mu.Lock()
	gathering, until := t.gathering, t.gatherUntil
	t.mu.Unlock()
	if gathering && t.s.feed.burstEnd(time.Now(), quiet).Before(until) {
		t.nudgeRunner()
	}
}

// nudgeRunner ends a gathering runner's wait: it looks again.
func (t *ticker) nudgeRunner() {
	t.mu.Lock()
	nudge := t.nudge
	t.mu.Unlock()
	if nudge == nil {
		return
	}
	select {
	case nudge <- struct{}{}:
	default: // nudged already
	}
}

// finish settles what the device acked before its cursor is saved for the
// last time, if the receipts function (or TICKS) answers at once, and
// returns once the runner has returned for good. Called once, by stop,
// after delivery has finished (no ack is taken after it).
func (t *ticker) finish() {
	t.mu.Lock()
	t.closing = true
	close(t.wake)
	if t.running {
		t.mu.Unlock()
		<-t.finished
		return
	}
	t.running = true
	t.mu.Unlock()
	t.run()
}

// run settles the acked stretch at the front of the device's unsettled
// messages, asking for its ticks first, until there is none. It closes the
// session with 1012 when the ticks cannot be stored for catchUpGiveUp.
func (t *ticker) run() {
	s := t.s
	var failingSince time.Time
	backoff := 50 * time.Millisecond
	for {
		t.mu.Lock()
		closing := t.closing
		t.mu.Unlock()
		req, through, ok := s.feed.ackedStretch()
		if !ok {
			if t.idle() {
				return
			}
			continue
		}
		groups := s.feed.groupPositions(through)
		if len(req.Senders) == 0 && len(groups) == 0 {
			// Receipts only: they tick nothing.
			s.feed.settleThrough(through)
			continue
		}
		if !closing && t.gatherFor() > 0 {
			t.gather()
			continue // the stretch may have grown meanwhile
		}
		t.lastAsk = time.Now()
		var err error
		if len(req.Senders) > 0 {
			err = t.delivered(req)
		}
		if err == nil {
			// Group copies: one request per group (groupticks.go).
			err = t.groupTicks(groups)
		}
		if err == nil {
			s.feed.settleThrough(through)
			failingSince, backoff = time.Time{}, 50*time.Millisecond
			continue
		}
		if closing {
			// No retries on the way out: the next session asks again.
			t.end()
			return
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		} else if time.Since(failingSince) > catchUpGiveUp {
			s.log.Warn("cannot store delivered ticks; restarting the session", "err", err)
			s.t.Close(protocol.CloseServiceRestart, "receipts unavailable")
			t.end()
			return
		}
		t.sleep(backoff, nil)
		backoff = min(2*backoff, time.Second)
	}
}

// gatherFor is how long the runner waits before asking, gathering the
// acks that follow: until TickInterval has passed since it last asked,
// or sooner once the burst is over: its acks stopped for TickQuiet (or
// twice their usual gap, if longer), or the device acked all it was
// given and its deliveries paused (feed.burstEnd). At once if it has
// not asked yet or the device holds half its MaxInflight unsettled. An
// ack that comes while it waits moves the ends: the runner, woken at
// the old ones (or nudged), looks again.
func (t *ticker) gatherFor() time.Duration {
	cfg := &t.s.srv.cfg
	if cfg.TickInterval <= 0 || t.lastAsk.IsZero() || t.holdingHalf() {
		return 0
	}
	until := t.lastAsk.Add(cfg.TickInterval)
	if cfg.TickQuiet > 0 {
		if end := t.s.feed.burstEnd(time.Now(), cfg.TickQuiet); end.Before(until) {
			until = end
		}
	}
	return time.Until(until)
}

// streamPause is the shortest pause in a device's deliveries, with all
// it was given acked, that ends its stream (feed.burstEnd): well past
// the gaps of a busy stream (4 ms at 250 messages a second), and far
// shorter than waiting TickQuiet past the last of the acks, which the
// Go SDK gathers for 250 ms.
const streamPause = 100 * time.Millisecond

// cadence tells the end of a device's stream from a pause within it, by
// how far apart its events (acks, deliveries) usually come. TickQuiet
// alone could not: a device acking a message every 600 ms (a busy group
// at 1.5 messages a second) paused past it after each ack, so each asked
// for a tick or position of its own, up to 1.5 times what TickInterval
// allows; ten groups of 100 at that rate cost the all-in-one 2.7 s of CPU
// in a 10 s run, against 1.7 s with TickQuiet off. A stream of acks is
// over once they stop for twice their usual gap (ackGaps), if that is
// longer than TickQuiet: a device that acks every 250 ms, as the Go SDK
// gathers acks in a busy stream, ends its burst after about TickQuiet
// (500 ms), and one acking more than TickQuiet/2 apart waits longer, up
// to the interval. The owner guards it.
type cadence struct {
	last  time.Time // the last event
	batch time.Time // the first event of those that came with the last
	// gap is the usual time between events that came apart: a moving
	// average, each new gap a quarter of it. 0 when none has yet, or
	// when the last pause was past within (a new stream).
	gap time.Duration
	// within is the longest pause within a stream: streamGap, or
	// TickInterval if shorter.
	within time.Duration
}

// together is how close events come and count as one: a client writes
// its gathered acks together, and the gateway reads them frame by frame;
// a backlog is delivered at once.
const together = 20 * time.Millisecond

// ackGaps and deliveryGaps are how many usual gaps between acks, and
// between deliveries, a stream must pause for to be over. Deliveries
// are the stream as the senders make it, with no client's gathering to
// even it out, so they need the wider margin: at 5 messages a second
// (gaps of 200 ms at random) one pause in 50 is past 800 ms, against one
// in 7 past 400.
const (
	ackGaps      = 2
	deliveryGaps = 4
)

// streamGap is the longest pause within a stream: past it (or past
// TickInterval, if shorter) the stream is over, and the next event
// starts a new one, whose quiet is the base again. A chat at human pace
// is not a stream, so a long TickInterval does not hold its ticks back.
const streamGap = 2 * time.Second

// note records an event at now; interval is TickInterval.
func (c *cadence) note(now time.Time, interval time.Duration) {
	c.within = min(interval, streamGap)
	d := now.Sub(c.last)
	switch {
	case c.last.IsZero() || d > c.within:
		c.gap, c.batch = 0, now
	case now.Sub(c.batch) < together:
		// Came with the last: no gap. Measured from the first of them,
		// so a run of events each close to the one before still counts.
	case c.gap == 0:
		c.gap, c.batch = d, now
	default:
		c.gap, c.batch = (3*c.gap+d)/4, now
	}
	c.last = now
}

// quiet is how long the events must stop for the stream to be over at
// now: gaps usual gaps, at least base. A pause past the longest within a
// stream ends it anyway, so the quiet is never longer than that (but
// for base), and is base once the last event is that far behind.
func (c *cadence) quiet(now time.Time, base time.Duration, gaps int) time.Duration {
	if now.Sub(c.last) > c.within {
		return base
	}
	return max(base, min(time.Duration(gaps)*c.gap, c.within))
}

// holdingHalf reports whether the device holds half its MaxInflight
// unsettled: past it, gathering would soon stall its delivery.
func (t *ticker) holdingHalf() bool {
	return t.s.feed.unsettledLen() >= t.s.srv.maxInflight/2
}

// gather waits for more acks until gatherFor's end, or less if the burst
// ends sooner (an ack or the feed going idle nudges), the device comes
// to hold half its MaxInflight unsettled (kick nudges) or the session
// stops.
func (t *ticker) gather() {
	t.mu.Lock()
	// Until the look below, any wait ends by the interval: an ack that
	// ends the burst before it nudges.
	t.gathering, t.gatherUntil = true, t.lastAsk.Add(t.s.srv.cfg.TickInterval)
	if t.nudge == nil {
		t.nudge = make(chan struct{}, 1)
	}
	nudge := t.nudge
	t.mu.Unlock()
	// An ack taken before gathering was set did not nudge, and may have
	// ended the burst sooner: look again.
	if d := t.gatherFor(); d > 0 {
		t.mu.Lock()
		t.gatherUntil = time.Now().Add(d)
		t.mu.Unlock()
		t.sleep(d, nudge)
	}
	t.mu.Lock()
	t.gathering = false
	t.mu.Unlock()
	select {
	case <-nudge: // one sent as it stopped: spent
	default:
	}
}

// sleep waits d, or less if the session stops or nudge (nil: none)
// receives.
func (t *ticker) sleep(d time.Duration, nudge <-chan struct{}) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.wake:
	case <-timer.C:
	case <-nudge:
	}
}

// idle ends the runner when nothing acked is left, and reports true; an
// ack taken between the look and the lock finds the runner still running,
// so it looks once more (false).
func (t *ticker) idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, _, ok := t.s.feed.ackedStretch(); ok {
		return false
	}
	t.endLocked()
	return true
}

func (t *ticker) end() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.endLocked()
}

// endLocked marks the runner stopped; on the way out, for good.
//
// Lock should be held.
func (t *ticker) endLocked() {
	t.running = false
	if t.closing {
		close(t.finished)
	}
}

// queue stores req in TICKS for the receipts function to apply when it is
// back.
// delivered asks the receipts function for req's ticks, and leaves them
// in TICKS when it does not answer in time: a slow function, like a
// stopped one, costs a second stored write, not the session.
func (t *ticker) delivered(req contract.DeliveredRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), t.s.srv.cfg.FunctionTimeout)
	err := contract.Call(ctx, t.s.srv.calls, contract.DeliveredSubject, req, nil)
	cancel()
	if errors.Is(err, contract.ErrUnavailable) {
		err = t.queue(req)
	}
	if err == nil {
		t.s.srv.metrics.ticks.Inc()
	}
	return err
}

// queue stores req in TICKS, on a context of its own: the request's may
// have run out waiting for the function.
func (t *ticker) queue(req contract.DeliveredRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), t.s.srv.cfg.FunctionTimeout)
	defer cancel()
	b, _ := json.Marshal(req)
	m := &nats.Msg{Subject: contract.TicksSubject(req.Reader), Data: b, Header: nats.Header{
		contract.HdrMsgID: {contract.QueuedTickDedupID(req.Reader, req.Device, req.From, req.To)},
	}}
	if _, err := t.s.srv.js.PublishMsg(ctx, m); err != nil {
		return err
	}
	t.s.srv.metrics.ticksQueued.Inc()
	return nil
}
