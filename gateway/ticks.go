package gateway

import (
	"context"
	"encoding/json"
	"errors"
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
// reconnect costs a request or two, and a tick per sender.
//
// Delivery never waits on the receipts function: when it does not answer
// in time, the request is stored in TICKS (a work queue it drains when it
// is back) and the stretch is settled then. That costs a second stored
// write, only while the function is away, and loses nothing.

// flushTicks has the ticker run, unless it is running.
func (s *session) flushTicks() {
	s.mu.Lock()
	if s.ticking {
		s.mu.Unlock()
		return
	}
	s.ticking = true
	s.loops.Add(1)
	s.mu.Unlock()
	go s.ticker()
}

// ticker settles the acked stretch at the front of the device's unsettled
// messages, asking for its ticks first, until there is none; it gives up
// and restarts the session (1012) when the receipts function cannot be
// reached for catchUpGiveUp.
func (s *session) ticker() {
	defer s.loops.Done()
	var failingSince time.Time
	backoff := 50 * time.Millisecond
	for {
		s.mu.Lock()
		// Also while the session stops: what the device acked is settled
		// before its cursor is saved, if the function answers.
		req, through, ok := s.ackedStretchLocked()
		stopping := s.stopping
		if !ok {
			s.ticking = false
			s.mu.Unlock()
			return
		}
		if len(req.Senders) == 0 {
			// Receipts only: they tick nothing.
			s.settleThroughLocked(through)
			s.mu.Unlock()
			s.scheduleCursor()
			continue
		}
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		err := contract.Call(ctx, s.srv.nc, contract.DeliveredSubject, req, nil)
		if errors.Is(err, contract.ErrUnavailable) {
			err = s.queueTicks(ctx, req)
		}
		cancel()
		if err == nil {
			s.srv.metrics.ticks.Inc()
			s.mu.Lock()
			s.settleThroughLocked(through)
			s.mu.Unlock()
			s.scheduleCursor()
			failingSince, backoff = time.Time{}, 50*time.Millisecond
			continue
		}
		if stopping {
			// No retries on the way out: the next session asks again.
			s.mu.Lock()
			s.ticking = false
			s.mu.Unlock()
			return
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		} else if time.Since(failingSince) > catchUpGiveUp {
			s.log.Warn("cannot store delivered ticks; restarting the session", "err", err)
			s.t.Close(protocol.CloseServiceRestart, "receipts unavailable")
			s.mu.Lock()
			s.ticking = false
			s.mu.Unlock()
			return
		}
		select {
		case <-s.quit:
			s.mu.Lock()
			s.ticking = false
			s.mu.Unlock()
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// ackedStretchLocked is the request for the acked messages at the front
// of the unsettled ones, from just past the floor through the last of
// them, and that last one; ok is false when the front is not acked.
// s.mu is held.
func (s *session) ackedStretchLocked() (req contract.DeliveredRequest, through uint64, ok bool) {
	seen := map[string]bool{}
	for _, q := range s.unsettled {
		p := s.pending[q]
		if !p.acked {
			break
		}
		through, ok = q, true
		if !p.receipt && !seen[p.from] {
			seen[p.from] = true
			req.Senders = append(req.Senders, p.from)
		}
	}
	req.Reader, req.Device, req.From, req.To = s.id.User, s.id.Device, s.floor+1, through
	return req, through, ok
}

// queueTicks stores req in TICKS for the receipts function to apply when
// it is back.
func (s *session) queueTicks(ctx context.Context, req contract.DeliveredRequest) error {
	b, _ := json.Marshal(req)
	m := &nats.Msg{Subject: contract.TicksSubject(req.Reader), Data: b, Header: nats.Header{
		contract.HdrMsgID: {contract.QueuedTickDedupID(req.Reader, req.Device, req.From, req.To)},
	}}
	if _, err := s.srv.js.PublishMsg(ctx, m); err != nil {
		return err
	}
	s.srv.metrics.ticksQueued.Inc()
	return nil
}
