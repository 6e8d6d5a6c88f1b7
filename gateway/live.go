package gateway

import (
	"errors"
	"hash/maphash"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
)

// Why a session reads its inbox from the stream after connecting (the
// catchups_total metric's reason label).
const (
	reasonGap       = "gap"       // a live copy named a predecessor the device had not had
	reasonReconnect = "reconnect" // the gateway's NATS connection was restored
	reasonOverflow  = "overflow"  // live copies overflowed a buffer and were let go
	reasonLeader    = "leader"    // INBOX has a new leader
	reasonSweep     = "sweep"     // the periodic check
)

var catchUpReasons = []string{reasonGap, reasonReconnect, reasonOverflow, reasonLeader, reasonSweep}

// sweepTicks is how many ticks one sweep is spread over: each tick wakes
// the sessions whose id hashes to it.
const sweepTicks = 60

// watchLive hooks the NATS connection so that whatever may have lost live
// copies wakes the sessions concerned: a restored connection and an INBOX
// leader change wake all of them, an overflowing subscription its own.
// The first two may have lost PubAcks too: every session publishes again,
// at once, what it has not had a PubAck for (pubQueue.recover). Handlers
// set on the connection before are kept and called first.
func (s *Server) watchLive() error {
	nc := s.nc
	prevErr, prevRe := nc.Opts.AsyncErrorCB, nc.Opts.ReconnectedCB
	s.router.setWake(func(sessions []*session) {
		for _, sess := range sessions {
			s.metrics.catchUps.WithLabelValues(reasonOverflow).Inc()
			sess.feed.wakeUp()
		}
	})
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if prevErr != nil {
			prevErr(c, sub, err)
		}
		if s.groups.refused(err) && s.groups.deny() {
			s.log.Warn("the gateway's NATS user may not subscribe to $KV.GROUP_INFO.* (deploy/permissions.conf has it) or to more subjects: every group send reads its group's record", "err", err)
		}
		if sub != nil && errors.Is(err, nats.ErrSlowConsumer) {
			// The router fell behind and NATS dropped a message: if it
			// was a live copy, its readers must read the stream; if a
			// group's bell, its reader its log.
			s.router.dropped(sub)
			s.groupLogs.dropped(sub)
		}
	})
	nc.SetReconnectHandler(func(c *nats.Conn) {
		if prevRe != nil {
			prevRe(c)
		}
		s.recoverAll(republishReconnect)
		s.wakeAll(reasonReconnect)
		s.groupLogs.ringAll()       // bells rung while away were lost
		go s.groupLogs.checkBells() // perhaps on another server now
	})
	sub, err := nc.Subscribe(contract.LeaderSubject, func(*nats.Msg) {
		s.recoverAll(republishLeader)
		s.wakeAll(reasonLeader)
		go s.groupLogs.checkBells() // the cluster changed: GROUPS may have moved too
	})
	s.leaderSub = sub
	if err == nil {
		s.groups.probe()
	}
	return err
}

// recoverAll has every session publish again what it has not had a PubAck
// for. It does not wait: a session with nothing in flight costs a lock.
func (s *Server) recoverAll(reason string) {
	for _, sess := range s.snapshot() {
		sess.pubs.recover(reason)
	}
}

// wakeAll has every session read its inbox from the stream, wakeBatch at
// a time every wakePause, so a gateway with tens of thousands of sessions
// does not send as many reads in the same instant.
func (s *Server) wakeAll(reason string) {
	all := s.snapshot()
	go func() {
		for i, sess := range all {
			if i > 0 && i%wakeBatch == 0 {
				time.Sleep(wakePause) // pacing
			}
			s.metrics.catchUps.WithLabelValues(reason).Inc()
			sess.feed.wakeUp()
		}
	}()
}

const (
	wakeBatch = 256
	wakePause = 20 * time.Millisecond
)

// snapshot returns the sessions connected now.
func (s *Server) snapshot() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	return all
}

// sweepLoop checks every session once per SweepInterval, spread evenly
// over it: the last resort for a live copy lost with nothing to report it
// (the last message of a burst, republished by a stream leader that died
// before it reached this gateway's server).
func (s *Server) sweepLoop() {
	defer close(s.sweepDone)
	t := time.NewTicker(s.cfg.SweepInterval / sweepTicks)
	defer t.Stop()
	seed := maphash.MakeSeed()
	for tick := uint64(0); ; tick++ {
		select {
		case <-s.leaseStop:
			return
		case <-t.C:
		}
		if tick%sweepTicks == 0 {
			s.groupLogs.checkBells()
			s.groupLogs.ringAll()
		}
		var due []*session
		for _, sess := range s.snapshot() {
			if maphash.String(seed, sess.sid)%sweepTicks == tick%sweepTicks {
				due = append(due, sess)
				sess.groups.sweep()
			}
		}
		s.sweep(due)
	}
}

// sweepBatch is the most inboxes one sweep request asks about (the
// server answers a multi_last with at most 1,024 messages, and holds the
// stream's writes back while it loads them), and sweepBytes the most
// bytes its answer may carry: one cut short wakes the sessions of the
// inboxes it did not answer.
const (
	sweepBatch = 128
	sweepBytes = 1 << 20
)

// sweep asks the newest message of the due sessions' inboxes, sweepBatch
// inboxes to a batched direct get (multi_last), and wakes only the
// sessions whose inbox holds one past what they delivered: at 100,000
// idle devices a few requests a second for the whole gateway, where a
// get per session was some 800 a second, each answered "nothing new". A
// request that fails, or an answer cut short, wakes the sessions it did
// not answer for, which read for themselves.
func (s *Server) sweep(due []*session) {
	bySubject := map[string][]*session{}
	var subjects []string
	for _, sess := range due {
		subj := contract.InboxSubject(sess.id.User)
		if _, ok := bySubject[subj]; !ok {
			subjects = append(subjects, subj)
		}
		bySubject[subj] = append(bySubject[subj], sess)
	}
	for len(subjects) > 0 {
		chunk := subjects[:min(len(subjects), sweepBatch)]
		subjects = subjects[len(chunk):]
		newest := make(map[string]uint64, len(chunk))
		more, err := s.stream.directBatch(directGet{MultiLast: chunk, Batch: len(chunk), MaxBytes: sweepBytes}, s.leaseStop, func(seq uint64, m *nats.Msg) bool {
			newest[m.Header.Get(contract.HdrSubject)] = seq
			return true
		})
		s.metrics.sweeps.Inc()
		for _, subj := range chunk {
			n, answered := newest[subj]
			for _, sess := range bySubject[subj] {
				if err != nil || (more && !answered) || n > sess.feed.lastSeq() {
					s.metrics.catchUps.WithLabelValues(reasonSweep).Inc()
					sess.feed.wakeUp()
				}
			}
		}
	}
}
