package gateway

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// Presence leases.
//
// Each session holds a lease, lease.<user>.<device> in PRESENCE, written
// with a per-key TTL once the device is welcomed, refreshed by the
// server's lease loop and deleted when the session ends. Writes after the
// first expect the lease's last revision, so a session that was replaced
// (the device connected again, elsewhere) can neither refresh nor delete
// its successor's lease. A gateway that dies stops refreshing, and the
// leases expire within PresenceTTL.
//
// Writes do not wait: each is a publish whose PubAck comes back through
// the gateway's replies, and the server stores them as fast as it can,
// not one round trip after another.
//
// Refreshes are spread out: each lease is refreshed at its own time, a
// random part of the TTL (between a quarter and a third of it) after its
// last write, and the lease loop looks every leaseTick for those due.
// Refreshing every session in one pass, as the loop once did, wrote all
// of a gateway's leases at once every third of the TTL, and each write
// makes the presence function read and write its user's record: with
// 2,000 devices on one gateway at 5,000 msgs/s, that burst alone made a
// 1:1 message's p99 send→sent 263 ms (p50 2.4 ms).

// lease is a session's presence lease.
type lease struct {
	s *session

	// mu guards the fields below. A write is published under it, and the
	// delete waits for the write in flight, so no write lands after the
	// delete.
	mu sync.Mutex
	// rev is the revision last written (0: none yet); wanted is false
	// before the welcome and once a newer session holds the lease; done
	// once deleted.
	rev    uint64
	wanted bool
	done   bool
	// writing: a write is in flight, the n-th, published at sentAt; its
	// PubAck sets rev. settled is made by goOffline while one is, and
	// closed by its answer.
	writing bool
	n       uint64
	sentAt  time.Time
	settled chan struct{}
	// due is when the next refresh is (set by each write).
	due time.Time
}

// leaseInterval is the time from a lease's write to its next refresh: at
// random between a quarter and a third of ttl, so the refreshes of leases
// written together drift apart (over a twelfth of the TTL at first, more
// with each refresh) while costing a seventh more writes than one every
// third. A write lost is written again by a third of the TTL (and a
// tick) after it, so a lease is written again twice within 5/6 of its
// TTL however one write fares: one lost never lets a live device look
// offline.
func leaseInterval(ttl time.Duration) time.Duration {
	return ttl/4 + rand.N(ttl/12)
}

// leaseRetry is how soon a lease write the store refused (no leader, say)
// is tried again: sooner than the next refresh, which could leave a lease
// written a third of the TTL ago waiting another third. (One that could
// not be published, NATS being away, is tried on every pass of the loop,
// so it is written as soon as NATS is back.)
func leaseRetry(ttl time.Duration) time.Duration { return ttl / 12 }

// leaseTick is how often the lease loop looks for refreshes due.
func leaseTick(ttl time.Duration) time.Duration { return min(time.Second, ttl/12) }

// putLocked publishes a write of the lease expecting revision expect
// (0: whatever is there).
//
// Lock should be held.
func (l *lease) putLocked(expect uint64, at time.Time) error {
	s := l.s
	val, _ := json.Marshal(contract.Lease{Gateway: s.srv.id, Session: s.sid, Since: s.born / int64(time.Millisecond)})
	l.n++
	m := &nats.Msg{
		Subject: contract.LeaseSubject(s.id.User, s.id.Device),
		Reply:   s.srv.replies.subject(s.owner, replyLease, l.n, 0),
		Header:  nats.Header{jetstream.MsgTTLHeader: {s.srv.cfg.PresenceTTL.String()}},
		Data:    val,
	}
	if expect > 0 {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expect, 10))
	}
	if err := s.srv.nc.PublishMsg(m); err != nil {
		return err // due stays: tried again on the loop's next pass, as soon as NATS is back
	}
	l.writing, l.sentAt = true, at
	l.due = at.Add(leaseInterval(s.srv.cfg.PresenceTTL))
	return nil
}

// goOnline writes the first lease and marks the session as one that
// holds a lease. A failure is logged, not fatal: chat works without
// presence, and the lease loop tries again.
func (l *lease) goOnline() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.wanted = true
	if err := l.putLocked(0, time.Now()); err != nil {
		l.s.log.Warn("presence lease not written", "err", err)
	}
}

// refresh extends the lease once it is due, unless a write is in flight
// and not yet overdue. A write is stamped with the time of the pass that
// made it, and counts as lost once a quarter of the TTL has passed: the
// first pass at or after a third of the TTL always finds a write of a
// pass before it overdue (stamped with its publish instead, a hair after
// its pass, it was not, so one lost write made the next pass skip too,
// and the lease could run out on a live device).
func (l *lease) refresh(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done || !l.wanted || now.Before(l.due) || (l.writing && now.Sub(l.sentAt) < l.s.srv.cfg.PresenceTTL/4) {
		return
	}
	if err := l.putLocked(l.rev, now); err != nil {
		l.s.log.Debug("presence lease not refreshed", "err", err)
	}
}

// onReply takes the PubAck of the n-th write. When the lease changed
// under it, retake finds out why.
func (l *lease) onReply(n uint64, m *nats.Msg) {
	ack, err := parsePubAck(m)
	l.mu.Lock()
	defer l.mu.Unlock()
	if n != l.n || !l.writing {
		return // an older write's, or one counted as lost
	}
	l.writing = false
	switch {
	case err == nil:
		l.rev = ack.seq
	case contract.IsConflict(err) && !l.done && l.wanted:
		l.writing = true // retake writes, or gives up, in its turn
		go l.retake()
	default:
		l.s.log.Debug("presence lease not written", "err", err)
		l.due = l.sentAt.Add(leaseRetry(l.s.srv.cfg.PresenceTTL)) // refused (no leader, say): again soon
	}
	l.settleLocked()
}

// settleLocked wakes goOffline once no write is in flight.
//
// Lock should be held.
func (l *lease) settleLocked() {
	if !l.writing && l.settled != nil {
		close(l.settled)
		l.settled = nil
	}
}

// retake reads what is in the lease's place after a write found another
// revision there: gone (expired during a NATS outage) or written by an
// older session of this device, it takes the lease back; written by a
// newer session, it leaves it to that one for good. It is rare, and runs
// in a goroutine of its own.
func (l *lease) retake() {
	s := l.s
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.PresenceTTL/3)
	defer cancel()
	e, err := s.srv.presenceKV.Get(ctx, contract.LeaseKey(s.id.User, s.id.Device))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writing = false
	defer l.settleLocked()
	if l.done {
		return
	}
	var expect uint64
	if err == nil {
		var held contract.Lease
		if json.Unmarshal(e.Value(), &held) == nil && held.Session != s.sid && held.Since >= s.born/int64(time.Millisecond) {
			l.wanted = false // a newer session holds it
			return
		}
		expect = e.Revision()
	}
	if err := l.putLocked(expect, time.Now()); err != nil {
		s.log.Debug("presence lease not taken back", "err", err)
	}
}

// goOffline deletes the lease if it is still this session's, once the
// write in flight (if any) is answered; no write follows.
func (l *lease) goOffline() {
	l.mu.Lock()
	l.done = true
	if l.writing {
		ch := make(chan struct{})
		l.settled = ch
		l.mu.Unlock()
		wait := time.NewTimer(2 * time.Second)
		select {
		case <-ch:
		case <-wait.C:
		}
		wait.Stop()
		l.mu.Lock()
	}
	rev, wanted := l.rev, l.wanted
	l.mu.Unlock()
	if rev == 0 || !wanted {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.s.srv.presenceKV.Delete(ctx, contract.LeaseKey(l.s.id.User, l.s.id.Device), jetstream.LastRevision(rev)); err != nil {
		// Replaced, or NATS is gone: the lease expires on its own.
		l.s.log.Debug("presence lease not deleted", "err", err)
	}
}

// leaseLoop refreshes every live session's lease when it is due (see
// leaseInterval).
func (srv *Server) leaseLoop() {
	defer close(srv.leaseDone)
	t := time.NewTicker(leaseTick(srv.cfg.PresenceTTL))
	defer t.Stop()
	for {
		select {
		case <-srv.leaseStop:
			return
		case <-t.C:
		}
		srv.refreshLeases(time.Now())
	}
}

// refreshLeases publishes a refresh of every session's lease that is due
// at now. It does not wait for them to be stored: their PubAcks come back
// to each lease.
func (srv *Server) refreshLeases(now time.Time) {
	for _, s := range srv.snapshot() {
		s.lease.refresh(now)
	}
}
