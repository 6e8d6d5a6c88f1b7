package gateway

import (
	"context"
	"encoding/json"
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

// lease is a session's presence lease.
type lease struct {
	s *session

	// mu guards the fields below, and orders writes and the delete, so no
	// refresh lands after the delete. rev is the revision last written
	// (0: none yet); wanted is false before the welcome and once a newer
	// session holds the lease; done once deleted.
	mu     sync.Mutex
	rev    uint64
	wanted bool
	done   bool
}

// putLocked writes the lease expecting revision rev (0: the first write).
//
// Lock should be held.
func (l *lease) putLocked(ctx context.Context, rev uint64) (uint64, error) {
	s := l.s
	val, _ := json.Marshal(contract.Lease{Gateway: s.srv.id, Session: s.sid, Since: s.born / int64(time.Millisecond)})
	opts := []jetstream.PublishOpt{jetstream.WithMsgTTL(s.srv.cfg.PresenceTTL)}
	if rev > 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(rev))
	}
	ack, err := s.srv.js.PublishMsg(ctx, &nats.Msg{Subject: contract.LeaseSubject(s.id.User, s.id.Device), Data: val}, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// goOnline writes the first lease and marks the session as one that
// holds a lease. A failure is logged, not fatal: chat works without
// presence, and the lease loop tries again.
func (l *lease) goOnline(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.wanted = true
	rev, err := l.putLocked(ctx, 0)
	if err != nil {
		l.s.log.Warn("presence lease not written", "err", err)
		return
	}
	l.rev = rev
}

// refresh extends the lease. When the lease changed under it, it reads
// what is there: gone (expired during a NATS outage) or written by an
// older session of this device, it takes the lease back; written by a
// newer session, it leaves it to that one for good.
func (l *lease) refresh(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.s
	if l.done || !l.wanted {
		return
	}
	n, err := l.putLocked(ctx, l.rev)
	switch {
	case err == nil:
		l.rev = n
		return
	case !contract.IsConflict(err):
		s.log.Debug("presence lease not refreshed", "err", err)
		return
	}
	e, err := s.srv.presenceKV.Get(ctx, contract.LeaseKey(s.id.User, s.id.Device))
	if err == nil {
		var held contract.Lease
		if json.Unmarshal(e.Value(), &held) == nil && held.Session != s.sid && held.Since >= s.born/int64(time.Millisecond) {
			l.wanted = false // a newer session holds it
			return
		}
		n, err = l.putLocked(ctx, e.Revision())
	} else {
		n, err = l.putLocked(ctx, 0)
	}
	if err != nil {
		s.log.Debug("presence lease not taken back", "err", err)
		return
	}
	l.rev = n
}

// goOffline deletes the lease if it is still this session's; no refresh
// runs after it.
func (l *lease) goOffline() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	if l.rev == 0 || !l.wanted {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.s.srv.presenceKV.Delete(ctx, contract.LeaseKey(l.s.id.User, l.s.id.Device), jetstream.LastRevision(l.rev)); err != nil {
		// Replaced, or NATS is gone: the lease expires on its own.
		l.s.log.Debug("presence lease not deleted", "err", err)
	}
}

// leaseLoop refreshes every live session's lease three times per TTL, so
// one lost refresh never lets a live device look offline.
func (srv *Server) leaseLoop() {
	defer close(srv.leaseDone)
	t := time.NewTicker(srv.cfg.PresenceTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-srv.leaseStop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), srv.cfg.PresenceTTL/3)
		for _, s := range srv.snapshot() {
			s.lease.refresh(ctx)
		}
		cancel()
	}
}
