package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Presence, settings and status: the gateway's side of the presence and
// receipts functions.
//
// Each session holds a lease, lease.<user>.<device> in PRESENCE, written
// with a per-key TTL once the device is welcomed, refreshed by the
// server's lease loop and deleted when the session ends. Writes after the
// first expect the lease's last revision, so a session that was replaced
// (the device connected again, elsewhere) can neither refresh nor delete
// its successor's lease. A gateway that dies stops refreshing, and the
// leases expire within PresenceTTL.

// putLease writes the session's lease; rev is the revision the session
// last wrote, 0 for the first write.
func (s *session) putLease(ctx context.Context, rev uint64) (uint64, error) {
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
func (s *session) goOnline(ctx context.Context) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.leaseDone {
		return
	}
	s.leaseWanted = true
	rev, err := s.putLease(ctx, 0)
	if err != nil {
		s.log.Warn("presence lease not written", "err", err)
		return
	}
	s.leaseRev = rev
}

// refreshLease extends the lease. When the lease changed under it, it
// reads what is there: gone (expired during a NATS outage) or written by
// an older session of this device, it takes the lease back; written by a
// newer session, it leaves it to that one for good.
func (s *session) refreshLease(ctx context.Context) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.leaseDone || !s.leaseWanted {
		return
	}
	n, err := s.putLease(ctx, s.leaseRev)
	switch {
	case err == nil:
		s.leaseRev = n
		return
	case !contract.IsConflict(err):
		s.log.Debug("presence lease not refreshed", "err", err)
		return
	}
	e, err := s.srv.presenceKV.Get(ctx, contract.LeaseKey(s.id.User, s.id.Device))
	if err == nil {
		var l contract.Lease
		if json.Unmarshal(e.Value(), &l) == nil && l.Session != s.sid && l.Since >= s.born/int64(time.Millisecond) {
			s.leaseWanted = false // a newer session holds it
			return
		}
		n, err = s.putLease(ctx, e.Revision())
	} else {
		n, err = s.putLease(ctx, 0)
	}
	if err != nil {
		s.log.Debug("presence lease not taken back", "err", err)
		return
	}
	s.leaseRev = n
}

// goOffline deletes the lease if it is still this session's; no refresh
// runs after it.
func (s *session) goOffline() {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	s.leaseDone = true
	rev := s.leaseRev
	if rev == 0 || !s.leaseWanted {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.presenceKV.Delete(ctx, contract.LeaseKey(s.id.User, s.id.Device), jetstream.LastRevision(rev)); err != nil {
		// Replaced, or NATS is gone: the lease expires on its own.
		s.log.Debug("presence lease not deleted", "err", err)
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
		srv.mu.Lock()
		live := make([]*session, 0, len(srv.sessions))
		for sess := range srv.sessions {
			live = append(live, sess)
		}
		srv.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), srv.cfg.PresenceTTL/3)
		for _, sess := range live {
			sess.refreshLease(ctx)
		}
		cancel()
	}
}

// presenceHub shares one NATS subscription per followed user among all
// of this gateway's sessions that follow them. The subscriptions feed one
// channel read by one goroutine, so following costs a map entry per
// session and user, not a subscription goroutine each.
type presenceHub struct {
	nc    *nats.Conn
	ch    chan *nats.Msg
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex // guards users
	users map[string]*followers
}

type followers struct {
	sub      *nats.Subscription
	sessions map[*session]struct{}
}

func newPresenceHub(nc *nats.Conn) *presenceHub {
	h := &presenceHub{nc: nc, ch: make(chan *nats.Msg, 4096), stop: make(chan struct{}), done: make(chan struct{}),
		users: map[string]*followers{}}
	go h.run()
	return h
}

func (h *presenceHub) follow(s *session, user string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.users[user]
	if f == nil {
		sub, err := h.nc.ChanSubscribe(contract.PresenceSubject(user), h.ch)
		if err != nil {
			return err
		}
		f = &followers{sub: sub, sessions: map[*session]struct{}{}}
		h.users[user] = f
	}
	f.sessions[s] = struct{}{}
	return nil
}

func (h *presenceHub) unfollow(s *session, user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f := h.users[user]; f != nil {
		delete(f.sessions, s)
		if len(f.sessions) == 0 {
			_ = f.sub.Unsubscribe()
			delete(h.users, user)
		}
	}
}

// run hands each change to the sessions following its user. A change is
// decoded once for all of them.
func (h *presenceHub) run() {
	defer close(h.done)
	var to []*session
	for {
		var m *nats.Msg
		select {
		case m = <-h.ch:
		case <-h.stop:
			return
		}
		var u contract.PresenceUpdate
		if json.Unmarshal(m.Data, &u) != nil || !protocol.ValidID(u.User) {
			continue
		}
		to = to[:0]
		h.mu.Lock()
		if f := h.users[u.User]; f != nil {
			for s := range f.sessions {
				to = append(to, s)
			}
		}
		h.mu.Unlock()
		for _, s := range to {
			s.onPresence(&u)
		}
	}
}

func (h *presenceHub) close() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	<-h.done
}

// presenceSub follows users' presence changes and asks for their current
// state.
func (s *session) presenceSub(users []string) {
	s.presMu.Lock()
	var added []string
	for _, u := range users {
		if _, ok := s.presSubs[u]; ok {
			continue
		}
		if len(s.presSubs) >= s.srv.cfg.MaxPresenceSubs {
			s.presMu.Unlock()
			s.sendError(protocol.ErrTooMany, "at most "+strconv.Itoa(s.srv.cfg.MaxPresenceSubs)+" presence subscriptions per connection", "", 0, 0)
			if !s.askPresence(added) {
				s.refuseBusy("")
			}
			return
		}
		if err := s.srv.presence.follow(s, u); err != nil {
			s.presMu.Unlock()
			s.sendError(protocol.ErrInternal, "presence subscription failed", "", 0, 0)
			return
		}
		s.presSubs[u] = struct{}{}
		added = append(added, u)
	}
	s.presMu.Unlock()
	if !s.askPresence(added) {
		s.refuseBusy("")
	}
}

func (s *session) presenceUnsub(users []string) {
	s.presMu.Lock()
	defer s.presMu.Unlock()
	for _, u := range users {
		if _, ok := s.presSubs[u]; ok {
			s.srv.presence.unfollow(s, u)
			delete(s.presSubs, u)
			delete(s.presSent, u)
		}
	}
}

func (s *session) dropPresenceSubs() {
	s.presMu.Lock()
	defer s.presMu.Unlock()
	for u := range s.presSubs {
		s.srv.presence.unfollow(s, u)
		delete(s.presSubs, u)
	}
	clear(s.presSent)
}

// nextPresenceGen takes the generation of a presence frame being prepared.
func (s *session) nextPresenceGen() uint64 {
	s.presMu.Lock()
	defer s.presMu.Unlock()
	s.presGen++
	return s.presGen
}

// presenceSent is what a session last decided about a followed user:
// the generation of that decision and whether the user was hidden.
type presenceSent struct {
	gen    uint64
	hidden bool
}

// sendPresence sends a presence frame of generation gen about user,
// unless a newer one about user went out already, or it is hidden and so
// was the last one. A hidden user's changes must not show: a hidden frame
// at each of them would tell exactly when the user comes and goes. So a
// follower gets hidden once, when following, and again only when the
// user's privacy hides them after showing them.
func (s *session) sendPresence(gen uint64, user string, online bool, lastSeen int64, hidden bool) {
	s.presMu.Lock()
	defer s.presMu.Unlock()
	last := s.presSent[user]
	if gen <= last.gen {
		return
	}
	s.presSent[user] = presenceSent{gen: gen, hidden: hidden}
	if hidden && last.hidden {
		return
	}
	s.t.Send(protocol.AppendPresence(nil, user, online, lastSeen, hidden))
}

// onPresence forwards a presence change as this device's user may see it.
func (s *session) onPresence(u *contract.PresenceUpdate) {
	switch u.Visibility {
	case contract.VisibleEveryone:
		s.sendPresence(s.nextPresenceGen(), u.User, u.Online, u.LastSeen, false)
	case contract.VisibleContacts:
		// Whether this viewer is a contact is the function's to say. A
		// connection with too many calls in flight misses this one; its
		// next presence_sub answers with the current state. A failure is
		// not reported: the client asked nothing, and an error frame at
		// each change would show when the user comes and goes.
		s.askPresenceThen([]string{u.User}, func(err error) {
			s.log.Debug("presence answer for a change failed", "user", u.User, "err", err)
		})
	default:
		s.sendPresence(s.nextPresenceGen(), u.User, false, 0, true)
	}
}

// askPresence asks the presence function for users' state as this
// device's user may see it, and sends a presence frame per user. It does
// not block the caller; it reports false when too many calls are in
// flight.
func (s *session) askPresence(users []string) bool {
	return s.askPresenceThen(users, func(err error) {
		s.sendError(protocol.ErrUnavailable, "presence is unavailable: "+err.Error(), "", 0, 0)
	})
}

// askPresenceThen is askPresence, calling failed if the function does
// not answer.
func (s *session) askPresenceThen(users []string, failed func(error)) bool {
	if len(users) == 0 {
		return true
	}
	gen := s.nextPresenceGen()
	return s.goCall(func() {
		req, _ := json.Marshal(contract.PresenceRequest{Viewer: s.id.User, Users: users})
		var reply contract.PresenceReply
		if err := s.callFunction(contract.PresenceGetSubject, req, &reply); err != nil {
			failed(err)
			return
		}
		for _, v := range reply.Users {
			if protocol.ValidID(v.User) {
				s.sendPresence(gen, v.User, v.Online, v.LastSeen, v.Hidden)
			}
		}
	})
}

// goCall runs fn (a request to a worker function) without blocking the
// read loop, at most maxFunctionCalls at a time per connection, so a
// client cannot pile up goroutines and requests. It reports false, having
// run nothing, when that many are in flight.
func (s *session) goCall(fn func()) bool {
	select {
	case s.calls <- struct{}{}:
	default:
		return false
	}
	go func() {
		defer func() { <-s.calls }()
		fn()
	}()
	return true
}

// refuseBusy answers a frame that found maxFunctionCalls in flight.
func (s *session) refuseBusy(id string) {
	s.sendError(protocol.ErrRateLimited, "too many requests in flight", id, 0, 100)
}

// errNotFound is a function's 404.
var errNotFound = errors.New("not found")

// callFunction makes a request to a worker function and decodes its JSON
// answer. A micro error reply (its code in a header) becomes an error.
func (s *session) callFunction(subject string, req []byte, reply any) error {
	m, err := s.srv.nc.Request(subject, req, s.srv.cfg.FunctionTimeout)
	if err != nil {
		return err
	}
	if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
		if code == "404" {
			return errNotFound
		}
		return errors.New(m.Header.Get("Nats-Service-Error"))
	}
	return json.Unmarshal(m.Data, reply)
}

// status answers a status frame: the ticks of the message stored at seq,
// if this user sent it, from the receipts function. The message is read
// off the read loop to learn its sender and recipient.
func (s *session) status(seq uint64) {
	ok := s.goCall(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		defer cancel()
		rm, err := s.srv.inbox.GetMsg(ctx, seq)
		if err != nil || rm.Header.Get(contract.HdrKind) != contract.KindMsg || rm.Header.Get(contract.HdrFrom) != s.id.User {
			s.sendError(protocol.ErrUnknownSeq, "you sent no message with this seq", "", seq, 0)
			return
		}
		var reply contract.StatusReply
		req := contract.StatusRequest{Sender: s.id.User, Recipient: strings.TrimPrefix(rm.Subject, contract.InboxPrefix), Seq: seq}
		if err := contract.Call(ctx, s.srv.nc, contract.StatusSubject, req, &reply); err != nil {
			s.sendError(protocol.ErrUnavailable, "receipts are unavailable", "", seq, 0)
			return
		}
		to := make(map[string]protocol.Ticks, len(reply.Recipients))
		for u, t := range reply.Recipients {
			if protocol.ValidID(u) {
				to[u] = protocol.Ticks{Delivered: t.Delivered, Read: t.Read}
			}
		}
		s.t.Send(protocol.EncodeStatus(seq, to))
	})
	if !ok {
		s.sendError(protocol.ErrRateLimited, "too many requests in flight", "", seq, 100)
	}
}

// settings applies a settings frame's changes (none: just asking) and
// answers with the settings stored. It runs on the read loop, so one
// device's settings frames are applied in the order sent.
func (s *session) settings(f *protocol.Frame) {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
	defer cancel()
	var set contract.Settings
	var err error
	if f.ReadReceipts == nil && f.LastSeenPrivacy == "" && f.Contacts == nil {
		set, _, err = contract.LoadSettings(ctx, s.srv.settingsKV, s.id.User)
	} else {
		set, err = contract.UpdateSettings(ctx, s.srv.settingsKV, s.id.User, func(set *contract.Settings) error {
			if f.ReadReceipts != nil {
				set.ReadReceipts = *f.ReadReceipts
			}
			if f.LastSeenPrivacy != "" {
				set.LastSeen = f.LastSeenPrivacy
			}
			if f.Contacts != nil {
				set.Contacts = dedupe(*f.Contacts)
			}
			return set.Validate(protocol.ValidID)
		})
	}
	if err != nil {
		s.sendError(protocol.ErrStoreFailed, "settings were not stored; resend", "", 0, 0)
		return
	}
	s.t.Send(protocol.EncodeSettings(set.ReadReceipts, set.LastSeen, set.Contacts))
	if f.LastSeenPrivacy != "" || f.Contacts != nil {
		// Followers see the new privacy at once, not at the user's next
		// change: the current state goes out under it.
		// The presence function is the one publisher of updates.
		if err := contract.Call(ctx, s.srv.nc, contract.PresenceAnnounceSubject, contract.AnnounceRequest{User: s.id.User}, nil); err != nil {
			s.log.Debug("presence not announced after a privacy change", "err", err)
		}
	}
}

func dedupe(users []string) []string {
	seen := make(map[string]bool, len(users))
	out := make([]string, 0, len(users))
	for _, u := range users {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}
