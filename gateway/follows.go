package gateway

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"sync"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// follows is whose presence a session follows (presence_sub) and what it
// last told the device about each. Following a user costs the gateway one
// NATS subscription on sb.presence.<user>, shared through the router by
// all of its sessions that follow them; each change is decoded once for
// all of them.
type follows struct {
	s *session

	// subMu guards users and stopped. The read loop follows users named
	// in a frame; a group's members are followed from the call that read
	// the group's record. It is held while calling the router (subMu →
	// router.mu), which never takes it.
	subMu   sync.Mutex
	users   map[string]struct{} // the users followed
	stopped bool                // dropAll ran: follow no one any more

	// opMu guards ops and opRunning: presence_sub and presence_unsub
	// frames take effect in the order they came. One naming a group
	// reads the group's record, off the read loop; while one waits,
	// those after it wait behind it, in one goroutine at a time.
	opMu      sync.Mutex
	ops       []func()
	opRunning bool

	mu sync.Mutex // guards gen and sent; never held while calling the router
	// Presence frames go out newest first only: each update forwarded and
	// each answer asked for takes the next generation, and a frame older
	// than the last one sent about its user is dropped. An answer asked
	// for before an update, and arriving after it, is stale. sent also
	// says whether that last frame was hidden: a hidden frame after a
	// hidden one is not sent (see send).
	gen  uint64
	sent map[string]presenceSent
}

// presenceSent is what a session last decided about a followed user:
// the generation of that decision and whether the user was hidden.
type presenceSent struct {
	gen    uint64
	hidden bool
	rev    uint64 // the newest update's record revision forwarded
}

// maxPendingOps bounds the presence frames waiting behind a group's.
const maxPendingOps = 16

// inOrder runs op after the presence frames before it: at once, on the
// read loop, when none waits and op does not block; else in the
// goroutine that runs them in turn. It runs on the read loop.
func (f *follows) inOrder(blocks bool, op func()) {
	f.opMu.Lock()
	switch {
	case !f.opRunning && !blocks:
		f.opMu.Unlock()
		op()
		return
	case f.opRunning && len(f.ops) >= maxPendingOps:
		f.opMu.Unlock()
		f.s.refuseBusy("")
		return
	case f.opRunning:
		f.ops = append(f.ops, op)
		f.opMu.Unlock()
		return
	}
	f.opRunning = true
	f.ops = append(f.ops, op)
	f.opMu.Unlock()
	if !f.s.goCall(f.runOps) {
		f.opMu.Lock()
		f.ops, f.opRunning = nil, false
		f.opMu.Unlock()
		f.s.refuseBusy("")
	}
}

// runOps runs the waiting presence frames in turn until none is left.
func (f *follows) runOps() {
	for {
		f.opMu.Lock()
		if len(f.ops) == 0 {
			f.ops, f.opRunning = nil, false
			f.opMu.Unlock()
			return
		}
		op := f.ops[0]
		f.ops = f.ops[1:]
		f.opMu.Unlock()
		op()
	}
}

// subscribe follows users' presence changes and asks for their current
// state: of every user named, followed already or not, so a device whose
// answer was refused (unavailable, too many in flight) gets it by asking
// again, as the protocol tells it to. It runs on the read loop.
func (f *follows) subscribe(users []string) {
	f.inOrder(false, func() {
		followed, ok := f.follow(users)
		if ok && !f.ask(followed) {
			f.s.refuseBusy("")
		}
	})
}

// follow subscribes to the users not followed yet, up to the
// connection's limit, and returns those of users followed now (before or
// by this call); ok is false when the router failed (the device was
// told).
func (f *follows) follow(users []string) (followed []string, ok bool) {
	s := f.s
	f.subMu.Lock()
	defer f.subMu.Unlock()
	if f.stopped {
		return nil, false
	}
	full := false
	for _, u := range users {
		if _, ok := f.users[u]; ok {
			followed = append(followed, u)
			continue
		}
		if full {
			continue
		}
		if len(f.users) >= s.srv.cfg.MaxPresenceSubs {
			s.sendError(protocol.ErrTooMany, "at most "+strconv.Itoa(s.srv.cfg.MaxPresenceSubs)+" presence subscriptions per connection", "", 0, 0)
			full = true
			continue
		}
		if err := s.srv.router.add(routePresence, contract.PresenceSubject(u), s); err != nil {
			s.sendError(protocol.ErrInternal, "presence subscription failed", "", 0, 0)
			return followed, false
		}
		if f.users == nil {
			f.users = map[string]struct{}{}
		}
		f.users[u] = struct{}{}
		followed = append(followed, u)
	}
	return followed, true
}

// subscribeGroup follows every other member of group gid, as the group
// is now, and sends each one's current state: a member may follow the
// whole group with one frame. It runs on the read loop and reads the
// group's record off it; members who join later are not followed until
// the device asks again.
func (f *follows) subscribeGroup(gid string) {
	f.inOrder(true, func() {
		members, ok := f.groupMembers(gid)
		if !ok {
			return
		}
		followed, ok := f.follow(members)
		if !ok {
			return
		}
		if err := f.fetch(f.nextGen(), followed); err != nil {
			f.s.sendError(protocol.ErrUnavailable, "presence is unavailable: "+err.Error(), "", 0, 0)
		}
	})
}

// unsubscribeGroup stops following group gid's members, as the group is
// now, whether followed through it or by name. It runs on the read loop
// and reads the group's record off it.
func (f *follows) unsubscribeGroup(gid string) {
	f.inOrder(true, func() {
		if members, ok := f.groupMembers(gid); ok {
			f.unfollow(members)
		}
	})
}

// groupMembers lists group gid's members other than this user, if this
// user is one of them; else it tells the device why not.
func (f *follows) groupMembers(gid string) ([]string, bool) {
	s := f.s
	g, err := s.srv.groups.read(gid)
	if err != nil {
		code, msg := groupError(err)
		s.sendError(code, msg, "", 0, 0)
		return nil, false
	}
	if code, msg := memberCheck(&g, s.id.User); code != "" {
		s.sendError(code, msg, "", 0, 0)
		return nil, false
	}
	members := make([]string, 0, len(g.Members))
	for u := range g.Members {
		if u != s.id.User && protocol.ValidID(u) {
			members = append(members, u)
		}
	}
	sort.Strings(members)
	return members, true
}

// unsubscribe stops following users. It runs on the read loop.
func (f *follows) unsubscribe(users []string) {
	f.inOrder(false, func() { f.unfollow(users) })
}

// unfollow stops following users.
func (f *follows) unfollow(users []string) {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	for _, u := range users {
		if _, ok := f.users[u]; ok {
			f.s.srv.router.remove(contract.PresenceSubject(u), f.s)
			delete(f.users, u)
			f.mu.Lock()
			delete(f.sent, u)
			f.mu.Unlock()
		}
	}
}

// dropAll stops following everyone, when the session stops; a group's
// members being followed meanwhile are not.
func (f *follows) dropAll() {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	f.stopped = true
	for u := range f.users {
		f.s.srv.router.remove(contract.PresenceSubject(u), f.s)
	}
	f.users = nil
	f.mu.Lock()
	f.sent = nil
	f.mu.Unlock()
}

// nextGen takes the generation of a presence frame being prepared.
func (f *follows) nextGen() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	return f.gen
}

// send sends a presence frame of generation gen about user, unless a
// newer one about user went out already, or it is hidden and so was the
// last one. A hidden user's changes must not show: a hidden frame at each
// of them would tell exactly when the user comes and goes. So a follower
// gets hidden once, when following, and again only when the user's
// privacy hides them after showing them.
func (f *follows) send(gen uint64, user string, online bool, lastSeen int64, hidden bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	last := f.sent[user]
	if gen <= last.gen {
		return
	}
	if f.sent == nil {
		f.sent = map[string]presenceSent{}
	}
	f.sent[user] = presenceSent{gen: gen, hidden: hidden, rev: last.rev}
	if hidden && last.hidden {
		return
	}
	f.s.t.Send(protocol.AppendPresence(nil, user, online, lastSeen, hidden))
}

// newer reports whether u is no older than the updates of its user
// forwarded so far, and records its revision.
func (f *follows) newer(u *contract.PresenceUpdate) bool {
	if u.Rev == 0 {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	last, ok := f.sent[u.User]
	if ok && u.Rev < last.rev {
		return false
	}
	if f.sent == nil {
		f.sent = map[string]presenceSent{}
	}
	last.rev = u.Rev
	f.sent[u.User] = last
	return true
}

// onPresence forwards a presence change as this device's user may see it.
// It runs on the router's goroutine.
func (f *follows) onPresence(u *contract.PresenceUpdate) {
	if !f.newer(u) {
		return // an update published late, after a newer one
	}
	switch u.Visibility {
	case contract.VisibleEveryone:
		f.send(f.nextGen(), u.User, u.Online, u.LastSeen, false)
	case contract.VisibleContacts:
		// Whether this viewer is a contact is the function's to say. A
		// connection with too many calls in flight misses this one; its
		// next presence_sub answers with the current state. A failure is
		// not reported: the client asked nothing, and an error frame at
		// each change would show when the user comes and goes.
		f.askThen([]string{u.User}, func(err error) {
			f.s.log.Debug("presence answer for a change failed", "user", u.User, "err", err)
		})
	default:
		f.send(f.nextGen(), u.User, false, 0, true)
	}
}

// ask asks the presence function for users' state as this device's user
// may see it, and sends a presence frame per user. It does not block the
// caller; it reports false when too many calls are in flight.
func (f *follows) ask(users []string) bool {
	return f.askThen(users, func(err error) {
		f.s.sendError(protocol.ErrUnavailable, "presence is unavailable: "+err.Error(), "", 0, 0)
	})
}

// askThen is ask, calling failed if the function does not answer.
func (f *follows) askThen(users []string, failed func(error)) bool {
	if len(users) == 0 {
		return true
	}
	gen := f.nextGen()
	return f.s.goCall(func() {
		if err := f.fetch(gen, users); err != nil {
			failed(err)
		}
	})
}

// fetch asks the presence function for users' state, contract.MaxPresenceGet
// at a time, and sends a presence frame of generation gen per user. It
// blocks: it runs in a call's goroutine.
func (f *follows) fetch(gen uint64, users []string) error {
	s := f.s
	for chunk := range slices.Chunk(users, contract.MaxPresenceGet) {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		var reply contract.PresenceReply
		req := contract.PresenceRequest{Viewer: s.id.User, Users: chunk}
		err := contract.Call(ctx, s.srv.calls, contract.PresenceGetSubject, req, &reply)
		cancel()
		if err != nil {
			return err
		}
		for _, v := range reply.Users {
			if protocol.ValidID(v.User) {
				f.send(gen, v.User, v.Online, v.LastSeen, v.Hidden)
			}
		}
	}
	return nil
}
