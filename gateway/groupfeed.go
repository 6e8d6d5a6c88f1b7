package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// A session's groups read from their logs (docs/GROUP-LOG.md).
//
// A device reads a group's log from the change that told it to (a copy
// in its inbox with Sb-Group-Log: the switch of the group to its log, or
// the add of this user), or, for a device's first session, from the end
// of the log of each group on its log that the user's list of groups
// names (as a new device gets its inbox from where it joined). It reads
// until the change that takes the user out, which it is handed last;
// while out it passes the log, handing nothing, until a change adds the
// user back (whose copy the inbox hands on), or it has settled the
// removal and stops reading. Its place in each is in CURSORS
// (contract.GroupCursors), with, when it is out, the removal: everything
// up to the place acked, and the member's delivered position asked of
// the receipts function. The record is written before the inbox moves
// past a copy that starts a group.
//
// The gateway's reader of the group (grouplog.go) hands each message to
// every device that has had the one before it; a device behind reads for
// itself (a batched direct get from its place) until it has caught up.
// Frames carry gseq, the place in the log, and the device acks with it
// (an ack covers everything of the group up to it). A device holds at
// most groupWindow unacked per group, and at most the server's
// groupBudget across all of them (Config.groupBudget).
//
// Members homed in other regions get copies, not the log; push to
// offline members reads the log in the push function.

// groupWindow bounds what a device holds unacked of one group's log (or
// MaxInflight, if lower): with the inbox's MaxInflight, a device coming
// back to several busy groups must not owe more than its connection's
// outbound queue holds.
const groupWindow = 64

// groupFeeds is a session's delivery of the groups its device reads from
// their logs.
type groupFeeds struct {
	s *session

	mu      sync.Mutex // guards the fields below; taken before a groupFeed's
	feeds   map[string]*groupFeed
	loaded  contract.GroupCursors // the record as the session found it, until start
	stopped bool
	saving  bool // a save is set (saveSoon)

	// held is what the device holds unacked of all its groups: at most
	// the server's groupBudget, so a device coming back to many busy
	// groups is not handed more at once than its outbound queue takes.
	held atomic.Int64
	// starved: a feed went behind on the budget, and is woken once acks
	// bring held to half of it.
	starved atomic.Bool

	// saveMu orders the writes of the record, so a later one is never
	// overtaken by an earlier one; none follows the session's last
	// (final), which a newer session of the device reads.
	saveMu sync.Mutex
	ended  bool   // guarded by saveMu
	rev    uint64 // guarded by saveMu: the record's revision as this session last read or wrote it
}

// groupFeed is one group's log for a device: what it was handed, acked,
// settled.
type groupFeed struct {
	g   *groupFeeds
	gid string

	mu      sync.Mutex // guards the fields below
	last    uint64     // handed on (or passed) through here
	unacked []uint64   // handed on, not yet acked, in order
	acked   uint64     // the device acked everything through here
	floor   uint64     // settled: acked, its position asked, through here
	// out is the change that took the user out, handed on (0: a member).
	out       uint64
	following bool      // joined to the gateway's reader
	reading   bool      // reading the log itself (behind the reader)
	again     bool      // read once more when done: the reader offered something meanwhile
	behind    bool      // held as many unacked as it may: reads on once half are acked
	settle    bool      // a settle is set (settleDue)
	first     time.Time // when the first ack not yet settled came
	acks      cadence   // when the acks came
	left      bool      // no longer followed
}

func (g *groupFeeds) init(s *session) {
	g.s = s
	g.feeds = map[string]*groupFeed{}
}

func (g *groupFeeds) newFeed(gid string, c contract.GroupCursor) *groupFeed {
	return &groupFeed{g: g, gid: gid, last: c.At, acked: c.At, floor: c.At, out: c.Out}
}

// load reads the device's record, before the welcome.
func (g *groupFeeds) load(ctx context.Context) error {
	v, rev, err := g.s.srv.devices.loadGroupCursors(ctx, g.s.id.User, g.s.id.Device)
	if err != nil || v == nil {
		return err
	}
	g.saveMu.Lock()
	g.rev = rev
	g.saveMu.Unlock()
	cur, err := contract.ParseGroupCursors(v)
	if err != nil {
		// Not written by a gateway: read as none, rather than keep the
		// device from connecting; its groups start again with their
		// next change that names the user.
		g.s.log.Warn("the device's places in group logs are malformed; taken as none", "err", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for gid, c := range cur {
		if g.loaded == nil {
			g.loaded = contract.GroupCursors{}
		}
		g.loaded[gid] = c
	}
	return nil
}

// joining finds, for a device's first session (before it is registered,
// as its inbox starts after what INBOX held then), the groups on their
// logs that the user is in, with the end of each log as its place, and
// stores them before the device's cursor is made: a session that fails
// after would not look again. A user's first device gets their whole
// inbox, and so the copies that start their groups: it needs none.
func (g *groupFeeds) joining(ctx context.Context) error {
	srv := g.s.srv
	if others, err := srv.devices.others(ctx, g.s.id.User, g.s.id.Device); err != nil || !others {
		return err
	}
	region := ""
	if srv.regions != nil {
		region = srv.regions.self
	}
	list, err := srv.groupInfo.memberships(ctx, contract.MembershipsKey(g.s.id.User, region))
	if err != nil || len(list.Groups) == 0 {
		return err
	}
	places := contract.GroupCursors{}
	for gid := range list.Groups {
		if !protocol.ValidID(gid) {
			continue
		}
		end, rec, err := srv.groupLogAt(gid)
		if err != nil {
			return err
		}
		if rec.Log && rec.IsMember(g.s.id.User) && srv.regions.elsewhere(&rec) == "" {
			places[gid] = contract.GroupCursor{At: end}
		}
	}
	if len(places) == 0 {
		return nil
	}
	// A record there is not this device's (a device of the same name
	// removed before): written over.
	g.saveMu.Lock()
	err = g.writeLocked(ctx, places, false)
	g.saveMu.Unlock()
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.loaded = places
	return nil
}

// groupLogAt is the end of group gid's log and the group as of there, as
// its last change before it left it (the log, not GROUP_INFO, which may
// be behind it). A change stored between the two reads has them read
// again.
func (srv *Server) groupLogAt(gid string) (end uint64, g contract.GroupRecord, err error) {
	for range 3 {
		if end, err = srv.groupLogEnd(gid); err != nil {
			return 0, g, err
		}
		var at uint64
		var body []byte
		_, err = srv.directBatchOn(contract.GroupsStream, directGet{LastFor: contract.GroupEventSubject(gid)}, srv.leaseStop, func(seq uint64, m *nats.Msg) bool {
			at, body = seq, m.Data
			return false
		})
		switch {
		case err != nil:
			return 0, g, err
		case at == 0:
			return end, g, nil // no change: no group
		case at > end:
			continue // changed since the end was read
		}
		var ev struct {
			Group contract.GroupRecord `json:"group"`
		}
		if err := json.Unmarshal(body, &ev); err != nil {
			return 0, g, fmt.Errorf("gateway: group %s's last change: %w", gid, err)
		}
		return end, ev.Group, nil
	}
	return 0, g, fmt.Errorf("%w: group %s changes faster than it can be read", contract.ErrUnavailable, gid)
}

// groupLogEnd is the sequence of the newest message in group gid's log
// (0: none).
func (srv *Server) groupLogEnd(gid string) (end uint64, err error) {
	_, err = srv.directBatchOn(contract.GroupsStream, directGet{LastFor: contract.GroupLogFilter(gid)}, srv.leaseStop, func(seq uint64, _ *nats.Msg) bool {
		end = seq
		return false
	})
	return end, err // a 404 (an empty log) ends the batch: 0
}

// start begins the groups the device's record names, once the welcome
// is out.
func (g *groupFeeds) start() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for gid, c := range g.loaded {
		if protocol.ValidID(gid) && !g.stopped {
			f := g.newFeed(gid, c)
			g.feeds[gid] = f
			g.followLocked(f)
		}
	}
	g.loaded = nil
}

// followLocked joins f to the gateway's reader of its group and, unless
// the reader hands it everything past its place, has it read what the
// log holds past its place, which the reader, further on, may never
// offer (all of it, if the reader could not be joined: then until the
// sweep joins it again).
//
// Lock should be held.
func (g *groupFeeds) followLocked(f *groupFeed) {
	f.mu.Lock()
	from := f.last
	f.mu.Unlock()
	caughtUp, err := g.s.srv.groupLogs.join(f.gid, f, from)
	if err != nil {
		g.s.log.Warn("cannot follow a group's log", "group", f.gid, "err", err)
	} else {
		f.mu.Lock()
		f.following = true
		f.mu.Unlock()
	}
	if !caughtUp {
		f.wakeRead()
	}
}

// begin is a copy in the inbox telling the device to read gid's log past
// at (contract.HdrGroupLog): the change that put the group on its log or
// added this user. The record has it before the copy goes out, so the
// inbox cursor never passes the copy without it; the log is read once
// the copy is out (follow), so the device has the change before the
// group's messages. ok false: it could not be stored, and the copy is
// not to be handed on (it comes again).
func (g *groupFeeds) begin(gid string, at uint64) (follow func(), ok bool) {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return nil, false
	}
	f, known := g.feeds[gid]
	if known {
		// Still reading it, out or not: the add is in the log too, and
		// brings the user back as the feed reads on to it.
		g.mu.Unlock()
		return f.wakeRead, true
	}
	f = g.newFeed(gid, contract.GroupCursor{At: at})
	g.feeds[gid] = f
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), g.s.srv.cfg.FunctionTimeout)
	defer cancel()
	if err := g.store(ctx, false); err != nil {
		g.s.log.Warn("cannot store the device's places in group logs", "err", err)
		g.mu.Lock()
		if g.feeds[gid] == f {
			delete(g.feeds, gid)
		}
		g.mu.Unlock()
		return nil, false
	}
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.stopped && g.feeds[gid] == f {
			g.followLocked(f)
		}
	}, true
}

// stop ends every group's delivery: nothing is handed on after it.
func (g *groupFeeds) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	for gid, f := range g.feeds {
		g.s.srv.groupLogs.leave(gid, f)
		f.mu.Lock()
		f.left = true
		f.mu.Unlock()
	}
}

// final settles what was acked and stores the record, waiting for it.
func (g *groupFeeds) final() {
	g.mu.Lock()
	feeds := make([]*groupFeed, 0, len(g.feeds))
	for _, f := range g.feeds {
		feeds = append(feeds, f)
	}
	g.mu.Unlock()
	if len(feeds) == 0 {
		return
	}
	for _, f := range feeds {
		f.settleNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.store(ctx, true); err != nil {
		g.s.log.Debug("storing the device's places in group logs failed", "err", err)
	}
}

// record is the device's places as the record keeps them.
func (g *groupFeeds) record() contract.GroupCursors {
	g.mu.Lock()
	defer g.mu.Unlock()
	rec := contract.GroupCursors{}
	for id, f := range g.feeds {
		f.mu.Lock()
		c := contract.GroupCursor{At: f.floor}
		if f.out != 0 && f.floor >= f.out {
			c.Out = f.out // settled: read again, it would not be
		}
		done := f.done()
		f.mu.Unlock()
		if !done {
			rec[id] = c
		}
	}
	return rec
}

// store writes the record and waits until it is stored; last, it is the
// session's final one.
func (g *groupFeeds) store(ctx context.Context, last bool) error {
	g.saveMu.Lock()
	defer g.saveMu.Unlock()
	if g.ended {
		return errors.New("gateway: the session's places in group logs were stored for the last time")
	}
	g.ended = last
	return g.writeLocked(ctx, g.record(), true)
}

// writeLocked stores rec as the device's record, compare-and-set on the
// revision this session last saw. With merge, another session of the
// device may have written since (a replaced one's last write, slower than the kick's
// wait, or the newer one's after this one was replaced): then the groups
// the stored record has and rec lacks are kept in it, so no session's
// write drops a group another one started (a group a session begins is
// stored before its copy is handed on, so the inbox cursor may pass that
// copy only once the record has the group). A place kept from the other
// record can only be behind or ahead by what some device acked: at worst
// a few messages come again, dropped by id by the SDKs.
//
// saveMu should be held.
func (g *groupFeeds) writeLocked(ctx context.Context, rec contract.GroupCursors, merge bool) error {
	d := g.s.srv.devices
	for range 3 {
		rev, err := d.storeGroupCursors(ctx, g.s.id.User, g.s.id.Device, rec, g.rev)
		if err == nil {
			g.rev = rev
			return nil
		}
		if !contract.IsConflict(err) {
			return err
		}
		v, rev, err := d.loadGroupCursors(ctx, g.s.id.User, g.s.id.Device)
		if err != nil {
			return err
		}
		if theirs, err := contract.ParseGroupCursors(v); err == nil && merge {
			for gid, c := range theirs {
				if _, ok := rec[gid]; !ok {
					rec[gid] = c
				}
			}
		}
		g.rev = rev
	}
	return errors.New("gateway: the device's places in group logs are being written by another session")
}

// groupSaveDelays is how many CursorDelays a device's group record waits
// to be saved after a place moves: each save is a compare-and-set waited
// for, and one record holds every group's place, so a busy device writes
// it at most every few seconds (a lagging place only means a few
// messages come again, dropped by id by the SDKs; the session's last
// write has every place).
const groupSaveDelays = 5

// saveSoon has the record saved groupSaveDelays CursorDelays from now,
// with whatever settles meanwhile, as the inbox cursor is (cursor.go).
func (g *groupFeeds) saveSoon() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.saving {
		return
	}
	g.saving = true
	time.AfterFunc(groupSaveDelays*g.s.srv.cfg.CursorDelay, func() {
		g.mu.Lock()
		g.saving = false
		g.mu.Unlock()
		g.save()
	})
}

// save writes the record, off the session's paths (a timer's): a place
// that lags only means a few messages come again, dropped by id by the
// SDKs, so a failure is logged and the next save writes it.
func (g *groupFeeds) save() {
	g.saveMu.Lock()
	defer g.saveMu.Unlock()
	if g.ended {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.writeLocked(ctx, g.record(), true); err != nil {
		g.s.log.Debug("saving the device's places in group logs failed", "err", err)
	}
}

// feed returns gid's feed, nil if the device does not read gid.
func (g *groupFeeds) feed(gid string) *groupFeed {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.feeds[gid]
}

// ack takes the device's ack of gid up to gseq; false if nothing of gid
// up to gseq is handed on and unacked.
func (g *groupFeeds) ack(gid string, gseq uint64) bool {
	f := g.feed(gid)
	if f == nil || !f.ack(gseq) {
		return false
	}
	g.release()
	return true
}

// room is how many more group messages the device may be handed before
// it holds the session's budget; at none, the feeds that stop on it are
// woken by release.
func (g *groupFeeds) room() int {
	n := int64(g.s.srv.groupBudget) - g.held.Load()
	if n <= 0 {
		g.starved.Store(true)
	}
	return int(max(n, 0))
}

// claim takes up to n of the session's budget for a read of a group's
// log, and returns how many; the read gives back what it did not hold.
// At none, the feed is woken by release.
func (g *groupFeeds) claim(n int) int {
	for {
		cur := g.held.Load()
		k := min(int64(n), int64(g.s.srv.groupBudget)-cur)
		if k <= 0 {
			g.starved.Store(true)
			return 0
		}
		if g.held.CompareAndSwap(cur, cur+k) {
			return int(k)
		}
	}
}

// release, after an ack, wakes the feeds that stopped on the session's
// budget once the device holds half of it or less.
func (g *groupFeeds) release() {
	if !g.starved.Load() || g.held.Load() > int64(g.s.srv.groupBudget/2) || !g.starved.CompareAndSwap(true, false) {
		return
	}
	g.mu.Lock()
	var wake []*groupFeed
	for _, f := range g.feeds {
		f.mu.Lock()
		if f.behind {
			f.behind = false
			wake = append(wake, f)
		}
		f.mu.Unlock()
	}
	g.mu.Unlock()
	for _, f := range wake {
		f.wakeRead()
	}
}

// read reports whether gseq of gid was handed on to the device, which
// may then read it.
func (g *groupFeeds) read(gid string, gseq uint64) bool {
	f := g.feed(gid)
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return gseq > 0 && gseq <= f.last
}

// offer is the reader's: the log's message e, after prev.
func (f *groupFeed) offer(prev uint64, e *logEntry) {
	f.mu.Lock()
	switch {
	case f.left || e.seq <= f.last:
		f.mu.Unlock()
	case f.full():
		f.behind = true
		f.mu.Unlock()
	case f.reading || prev > f.last:
		// Behind the reader: read for itself, through this one.
		f.again = true
		f.mu.Unlock()
		f.wakeRead()
	default:
		f.mu.Unlock()
		f.take(e, false)
	}
}

// window is the most the device may hold unacked of the group.
func (f *groupFeed) window() int { return min(f.g.s.srv.maxInflight, groupWindow) }

// full reports whether the device holds as many unacked as it may.
//
// Lock should be held.
func (f *groupFeed) full() bool { return len(f.unacked) >= f.window() || f.g.room() == 0 }

// done reports whether the device is through with the group: the change
// that took the user out is settled, and the log after it, as far as
// read, did not bring them back.
//
// Lock should be held.
func (f *groupFeed) done() bool { return f.out != 0 && f.floor >= f.out }

// wakeRead starts reading the log from the device's place, unless a read
// runs (it then reads once more).
func (f *groupFeed) wakeRead() {
	f.mu.Lock()
	if f.reading || f.left {
		f.again = f.again || f.reading
		f.mu.Unlock()
		return
	}
	f.reading, f.again = true, false
	f.mu.Unlock()
	go f.readOn()
}

// readOn reads the log past the device's place until nothing is left,
// the device holds as many unacked as it may (it reads on once half are
// acked), or delivery stops; and once more if the reader offered
// something meanwhile.
func (f *groupFeed) readOn() {
	srv := f.g.s.srv
	for {
		f.mu.Lock()
		from, room, stop := f.last+1, min(f.window()-len(f.unacked), groupReadBatch), f.left
		f.mu.Unlock()
		// Claimed of the session's budget before the read, so feeds
		// reading at once do not each read what only one can take.
		n := 0
		if !stop && room > 0 {
			n = f.g.claim(room)
		}
		if n == 0 && !stop {
			f.mu.Lock()
			f.behind = true
			f.mu.Unlock()
			if room > 0 {
				// Stopped on the budget: marked after behind, so a release
				// from here on wakes this feed; one that came between the
				// claim and behind freed room, so read on.
				f.g.starved.Store(true)
				if f.g.room() > 0 {
					continue
				}
			}
		}
		more, taken := false, 0
		var es []*logEntry
		var err error
		kept := false
		if n > 0 {
			es, kept = srv.groupLogs.kept(f.gid, from-1, n)
		}
		if kept {
			// What the gateway's reader kept: no read. Whatever it reads
			// meanwhile it offers, which has this loop go round again.
			for _, e := range es {
				if f.take(e, true) {
					taken++
				}
			}
			more = len(es) == n
		} else if n > 0 {
			more, err = srv.readGroupLog(f.gid, from, 0, n, f.g.s.feed.quit, func(seq uint64, m *nats.Msg) bool {
				f.mu.Lock()
				stale, stop := seq <= f.last, f.left
				f.mu.Unlock()
				if stop {
					return false
				}
				if !stale && f.take(newLogEntry(f.gid, seq, m.Header, m.Data), true) {
					taken++
				}
				return true
			})
		}
		f.g.held.Add(int64(taken - n)) // what was claimed and not held
		if err != nil {
			f.g.s.log.Debug("reading a group's log", "group", f.gid, "err", err)
			f.mu.Lock()
			f.behind, f.reading = true, false // the sweep (or the next ack) reads again
			f.mu.Unlock()
			return
		}
		f.mu.Lock()
		if f.left || f.full() {
			f.behind = f.behind || f.full()
			f.reading = false
			f.mu.Unlock()
			return
		}
		if more || f.again {
			f.again = false
			f.mu.Unlock()
			continue
		}
		f.reading = false
		f.mu.Unlock()
		return
	}
}

// take hands the device the log's message e, or passes it: its own send,
// anything malformed, anything while the user is out of the group. held:
// e is handed on, and holds a place of the session's budget (claimed
// already, or taken here).
func (f *groupFeed) take(e *logEntry, claimed bool) (held bool) {
	s := f.g.s
	seq, frame := e.seq, e.frame
	out, in := false, false // this change takes this user out, or brings them in
	switch e.kind {
	case contract.KindMsg:
		if e.from == s.id.User && e.dev == s.id.Device {
			frame = nil // its own send: the device has it
		}
	case contract.KindEvent:
		out = e.op == contract.GroupRemove && slices.Contains(e.users, s.id.User) || e.op == contract.GroupLeave && e.from == s.id.User
		in = (e.op == contract.GroupAdd || e.op == contract.GroupCreate) && slices.Contains(e.users, s.id.User)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.left || seq <= f.last {
		return
	}
	if f.out != 0 {
		// Out of the group: nothing, up to a change that brings the user
		// back, itself passed too (its copy, the inbox hands on).
		if in {
			f.out = 0
		}
		f.passLocked(seq)
		return
	}
	if out {
		f.out = seq
	}
	if frame == nil {
		f.passLocked(seq)
		return
	}
	f.last = seq
	f.unacked = append(f.unacked, seq)
	if !claimed {
		f.g.held.Add(1)
	}
	s.srv.metrics.delivered.Inc()
	// Sent under the lock (Send only queues): frames go out in the
	// order taken, whichever of the reader and the feed's own read took
	// them.
	s.t.Send(frame)
	return true
}

// passLocked moves the device's place past seq without a frame, as an ack
// of it would.
//
// Lock should be held.
func (f *groupFeed) passLocked(seq uint64) {
	f.last = seq
	if len(f.unacked) == 0 {
		f.acked = seq
		f.settleLaterLocked(time.Now())
	}
}

// ack takes the device's ack up to gseq.
func (f *groupFeed) ack(gseq uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.unacked) == 0 || gseq < f.unacked[0] || gseq > f.last {
		return false
	}
	i, _ := slices.BinarySearch(f.unacked, gseq+1)
	f.unacked = f.unacked[i:]
	f.g.held.Add(-int64(i))
	f.acked = gseq
	if len(f.unacked) == 0 {
		f.acked = f.last // what was passed after it too
	}
	now := time.Now()
	f.acks.note(now, f.g.s.srv.cfg.TickInterval)
	f.settleLaterLocked(now)
	if f.behind && len(f.unacked) <= f.window()/2 {
		f.behind = false
		go f.wakeRead() // let go while it held too many: read on
	}
	return true
}

// settleLaterLocked sets a settle, unless one is set.
//
// Lock should be held.
func (f *groupFeed) settleLaterLocked(now time.Time) {
	if !f.settle {
		f.settle, f.first = true, now
		wait := f.quiet(now)
		if every := f.g.s.srv.cfg.TickInterval; every > 0 {
			wait = min(wait, every) // the interval bounds the wait, as settleDue's
		}
		time.AfterFunc(wait, f.settleDue)
	}
}

// quiet is how long acks must stop before a settle, as of now:
// TickQuiet, longer for acks that come more than half of it apart
// (cadence), or with none TickInterval.
//
// Lock should be held.
func (f *groupFeed) quiet(now time.Time) time.Duration {
	cfg := &f.g.s.srv.cfg
	if cfg.TickQuiet > 0 {
		return f.acks.quiet(now, cfg.TickQuiet, ackGaps)
	}
	return cfg.TickInterval
}

// settleDue settles once acks have stopped for quiet, or TickInterval
// after the first of them, as the inbox's acked stretches are (ticks.go):
// a busy device's positions are asked once per interval, and the
// members of a group that ack together are asked together.
func (f *groupFeed) settleDue() {
	cfg := &f.g.s.srv.cfg
	f.mu.Lock()
	now := time.Now()
	quiet, quietFor, pendingFor := f.quiet(now), now.Sub(f.acks.last), now.Sub(f.first)
	if quietFor < quiet && pendingFor < cfg.TickInterval {
		time.AfterFunc(min(quiet-quietFor, cfg.TickInterval-pendingFor), f.settleDue)
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	f.settleNow()
}

// settleNow asks the receipts function to raise the member's delivered
// position in the group to what the device acked, then makes that the
// device's place and has the record saved.
func (f *groupFeed) settleNow() {
	f.mu.Lock()
	f.settle = false
	through, floor := f.acked, f.floor
	f.mu.Unlock()
	if through <= floor {
		return
	}
	s := f.g.s
	req := contract.GroupPositionRequest{Group: f.gid, Member: s.id.User, Device: s.id.Device, Status: protocol.StatusDelivered, Seq: through}
	if err := s.ticks.groupTicks([]contract.GroupPositionRequest{req}); err != nil {
		s.log.Debug("group position not asked; asked again with the next ack", "group", f.gid, "err", err)
		return
	}
	f.mu.Lock()
	f.floor = max(f.floor, through)
	done := f.done()
	f.mu.Unlock()
	if done {
		f.g.drop(f)
	}
	f.g.saveSoon()
}

// drop ends the device's reading of f's group once the change that took
// the user out is settled and the log read since did not bring them back,
// so the record no longer names it (a later add starts it again).
func (g *groupFeeds) drop(f *groupFeed) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.feeds[f.gid] != f {
		return
	}
	f.mu.Lock()
	done := f.done() // again: the log may have brought the user back since
	if done {
		f.left = true
	}
	f.mu.Unlock()
	if done {
		delete(g.feeds, f.gid)
		g.s.srv.groupLogs.leave(f.gid, f)
	}
}

// sweep is the periodic check's: a group not joined to its reader joins
// it, one behind reads on (the reader's own sweep covers the others).
func (g *groupFeeds) sweep() {
	g.mu.Lock()
	var wake []*groupFeed
	for _, f := range g.feeds {
		f.mu.Lock()
		following, behind := f.following, f.behind || f.again
		f.mu.Unlock()
		switch {
		case g.stopped:
		case !following:
			g.followLocked(f)
		case behind:
			wake = append(wake, f)
		}
	}
	g.mu.Unlock()
	for _, f := range wake {
		f.wakeRead()
	}
}

// beginLog is the feed's, for a copy telling the device to read group's
// log past at (contract.HdrGroupLog): what to do once the copy is out, or
// false when it could not be recorded. Delivery then stops, so nothing
// after the copy moves the inbox cursor past it, and the session closes:
// the copy comes again on the next one.
func (f *feed) beginLog(group, at string) (follow func(), ok bool) {
	n, err := strconv.ParseUint(at, 10, 64)
	if err != nil || n == 0 {
		return nil, true // malformed: an ordinary copy
	}
	if follow, ok = f.s.groups.begin(group, n); ok {
		return follow, true
	}
	f.stop()
	f.s.t.Close(protocol.CloseServiceRestart, "group logs unavailable")
	return nil, false
}

// readGroupLog takes a read of gid's log up to gseq: the member's read
// position in the group rises, as with the read of a copy.
func (s *session) readGroupLog(gid string, gseq uint64) {
	if !s.groups.read(gid, gseq) {
		s.refuseFrame(protocol.TypeRead, gid, protocol.ErrUnknownSeq, "nothing of this group delivered up to this gseq", gseq, 0)
		return
	}
	req := contract.GroupPositionRequest{Group: gid, Member: s.id.User, Device: s.id.Device, Status: protocol.StatusRead, Seq: gseq, Log: true}
	ok := s.goCall(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		defer cancel()
		if err := contract.Call(ctx, s.srv.calls, contract.GroupPositionSubject, req, nil); err != nil {
			s.refuseFrame(protocol.TypeRead, gid, protocol.ErrUnavailable, "read receipt not taken; resend", gseq, 0)
		}
	})
	if !ok {
		s.refuseFrame(protocol.TypeRead, gid, protocol.ErrRateLimited, "too many requests in flight", gseq, 100)
	}
}
