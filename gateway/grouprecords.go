package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
)

// Group records, kept.
//
// Every group send is checked against its group's record (is the sender
// a member, is the group homed here), as are typing, presence and ticks.
// A read of GROUP_INFO per send was a tenth of an all-in-one's CPU with
// groups of 10 flat out, so a gateway keeps the records its users use,
// each watched: a core subscription to the record's own subject in
// GROUP_INFO ($KV.GROUP_INFO.<group>) sees every write to it, stored or
// refused, and a write seen drops the kept record. The subscriptions
// share one channel, drained before every look-up, so what the
// connection had read before a look-up is applied to it.
//
// A send's look-up (check) needs no fresher record than that: the send
// is stored only if the group's log has no change after the record's
// (session.checkGroupSend), so a member removed a moment ago whose kept
// record still lists them is refused by the store, and checked again
// against the log. A look-up that finds the user not a member reads the
// record again before refusing (below), so one added a moment ago is
// taken. A record without the sequence of its change (Seq: from a
// groups function before it kept one) cannot make the store
// conditional, so it is read for every send. Until the store was
// conditional, a check waited for a round trip to the NATS server
// first, to have every write the server had handled; measured with ten
// groups of 10 flat out, dropping that round trip more than paid for
// the condition (32,300–32,800 member deliveries/s against
// 29,800–31,600/s for the build before both).
//
// A record is read again when its subscription dropped messages (it is
// made again, the new one first), when the connection was restored
// since it was read (counted by nats.go's reconnects, not by the
// reconnect callback, which comes later), and past watchedMaxAge, which
// bounds what nothing above sees: a write handled just before the
// record's subscription but stored after its read, or in a cluster a
// write on another server before that server heard of the
// subscription. A look-up that finds the user not a member reads the
// record again before refusing. A group homed in another region (read
// from GROUP_DIR) is kept unwatched, for typing only (groupCacheTTL),
// and a read that fails keeps nothing (a made-up id holds no watch). A
// connection that may not watch (probe, deny) keeps records unwatched.

// groupCacheTTL is how long an unwatched record serves typing frames.
const groupCacheTTL = 2 * time.Second

// watchedMaxAge is how long a watched record is used before it is read
// again whatever its subscription saw.
const watchedMaxAge = 10 * time.Second

// groupCacheMax bounds the records kept; past it one is let go per record
// taken.
const groupCacheMax = 4096

// groupRecords keeps group records. Its lock is a leaf, never held over a
// request.
type groupRecords struct {
	nc      *nats.Conn
	load    func(ctx context.Context, gid string) (contract.GroupRecord, error) // GROUP_INFO
	remote  func(ctx context.Context, gid string) (contract.GroupRecord, error) // GROUP_DIR; nil in one region
	prefix  string                                                              // $KV.GROUP_INFO.
	writes  chan *nats.Msg                                                      // every watched record's writes
	timeout time.Duration

	mu     sync.Mutex // guards the fields below
	m      map[string]*keptGroup
	closed bool
	denied bool // the connection may not watch records: kept unwatched
}

type keptGroup struct {
	g      contract.GroupRecord
	at     time.Time
	ok     bool               // g is the record as last read, and no write was seen since
	gen    uint64             // writes seen
	epoch  uint64             // the connection's reconnects when g was read
	sub    *nats.Subscription // nil: unwatched
	remote bool               // homed in another region: kept unwatched
}

// epoch counts the connection's reconnects: a record read before the
// last one may have missed writes while the connection was down. (Not
// the reconnect callback: it comes later, from nats.go's callback
// goroutine, and a send may look first.)
func (c *groupRecords) epoch() uint64 { return c.nc.Stats().Reconnects }

// freshLocked tells whether e may be used without a read: ok, read on
// this connection, within its age, its watch whole.
func (c *groupRecords) freshLocked(e *keptGroup, watched bool) bool {
	if e == nil || !e.ok || e.epoch != c.epoch() {
		return false
	}
	if e.sub == nil {
		return !watched && time.Since(e.at) < groupCacheTTL
	}
	if n, err := e.sub.Dropped(); err != nil || n > 0 {
		return false
	}
	return time.Since(e.at) < watchedMaxAge
}

func newGroupRecords(nc *nats.Conn, load, remote func(context.Context, string) (contract.GroupRecord, error), timeout time.Duration) *groupRecords {
	return &groupRecords{
		nc: nc, load: load, remote: remote, timeout: timeout,
		prefix: "$KV." + contract.GroupInfoKV + ".",
		writes: make(chan *nats.Msg, 1024),
		m:      map[string]*keptGroup{},
	}
}

// get returns group gid's record for typing, ticks and the like: a
// watched record as the connection last heard of it, an unwatched one
// up to groupCacheTTL old.
func (c *groupRecords) get(gid string) (contract.GroupRecord, error) {
	c.mu.Lock()
	c.drainLocked()
	if e := c.m[gid]; c.freshLocked(e, false) {
		g := e.g
		c.mu.Unlock()
		return g, nil
	}
	c.mu.Unlock()
	return c.read(gid)
}

// check returns group gid's record for a send by user: kept, or read
// when the kept one does not list user or has no Seq (see above).
func (c *groupRecords) check(gid, user string) (contract.GroupRecord, error) {
	c.mu.Lock()
	c.drainLocked()
	e := c.m[gid]
	if !c.freshLocked(e, true) || e.g.Seq == 0 || !e.g.IsMember(user) {
		c.mu.Unlock()
		return c.read(gid)
	}
	g := e.g
	c.mu.Unlock()
	return g, nil
}

// latest returns group gid's record as the latest change in its log
// left it, read through the stream's leader, and lets the kept record go:
// a send the store refused because a change came after the record its
// check used is checked again against this (GROUP_INFO follows the log,
// and may be a moment behind it).
func (c *groupRecords) latest(gid string) (contract.GroupRecord, error) {
	c.forget(gid)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	sm, err := contract.GetMsg(ctx, c.nc, contract.GroupsStream, 0, contract.GroupEventSubject(gid))
	switch {
	case errors.Is(err, contract.ErrNoMsg):
		return contract.GroupRecord{}, contract.ErrUnknownGroup
	case err != nil:
		return contract.GroupRecord{}, err
	}
	var change struct {
		Group contract.GroupRecord `json:"group"`
	}
	if err := json.Unmarshal(sm.Data, &change); err != nil {
		return contract.GroupRecord{}, fmt.Errorf("%w: change %d of group %s: %w", contract.ErrBadRecord, sm.Sequence, gid, err)
	}
	change.Group.Seq = sm.Sequence
	return change.Group, nil
}

// read returns group gid's record read now, and keeps it.
func (c *groupRecords) read(gid string) (contract.GroupRecord, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		g, _, err := c.loadAny(ctx, gid)
		return g, err
	}
	e := c.m[gid]
	if e == nil {
		if len(c.m) >= groupCacheMax {
			c.evictLocked()
		}
		e = &keptGroup{}
		c.m[gid] = e
	}
	if e.sub != nil {
		if n, err := e.sub.Dropped(); err != nil || n > 0 {
			// It missed writes: watched again, the new watch first.
			old := e.sub
			e.sub, e.ok = nil, false
			e.gen++
			c.watchLocked(e, gid)
			_ = old.Unsubscribe()
		}
	}
	if e.sub == nil && !e.remote {
		// Watched before the read: a write after the read is seen.
		c.watchLocked(e, gid)
	}
	gen, epoch, watched := e.gen, c.epoch(), e.sub != nil
	c.mu.Unlock()

	g, remote, err := c.loadAny(ctx, gid)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.drainLocked()
	if c.m[gid] != e {
		return g, err // let go meanwhile
	}
	if err != nil {
		// Not kept: a group that is not (a made-up id) holds no watch.
		if e.sub != nil {
			_ = e.sub.Unsubscribe()
		}
		delete(c.m, gid)
		return g, err
	}
	if e.remote = remote; remote && e.sub != nil {
		_ = e.sub.Unsubscribe()
		e.sub = nil
		watched = false
	}
	e.g, e.at, e.epoch = g, time.Now(), epoch
	// A write seen during the read may or may not be in what it read.
	e.ok = e.gen == gen && (e.sub != nil) == watched
	return g, nil
}

// watchLocked subscribes to group gid's record for e, unless the
// connection may not.
func (c *groupRecords) watchLocked(e *keptGroup, gid string) {
	if c.denied {
		return
	}
	if sub, err := c.nc.ChanSubscribe(c.prefix+gid, c.writes); err == nil {
		e.sub = sub
	}
}

// loadAny reads group gid's record from GROUP_INFO or, for a group
// homed in another region (remote), from GROUP_DIR.
func (c *groupRecords) loadAny(ctx context.Context, gid string) (g contract.GroupRecord, remote bool, err error) {
	g, err = c.load(ctx, gid)
	if errors.Is(err, contract.ErrUnknownGroup) && c.remote != nil {
		g, err = c.remote(ctx, gid)
		return g, err == nil, err
	}
	return g, false, err
}

// forget drops group gid's record, so the next look-up reads it.
func (c *groupRecords) forget(gid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[gid]; e != nil {
		e.ok = false
	}
}

// deny ends every watch for good: the connection may not subscribe to
// GROUP_INFO's subjects (a permissions file from before this gateway
// watched them). Records are kept unwatched, as for typing, and sends
// are checked by a read each.
// It says whether the records were watched until now.
func (c *groupRecords) deny() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.denied {
		return false
	}
	c.denied = true
	for gid, e := range c.m {
		if e.sub != nil {
			_ = e.sub.Unsubscribe()
		}
		delete(c.m, gid)
	}
	return true
}

// refused tells whether err is the server refusing a watch of a record:
// the user may not subscribe to its subject, or no more subscriptions
// (which does not say which one it refused).
func (c *groupRecords) refused(err error) bool {
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `Subscription to "`+c.prefix) ||
		errors.Is(err, nats.ErrMaxSubscriptionsExceeded)
}

// probe asks the server once, at the start, whether this connection may
// watch records, before any look-up trusts a watch: a refusal comes
// back on its own, later than the subscription (the error callback, from
// nats.go's callback goroutine), but before the answer to a round trip.
func (c *groupRecords) probe() {
	sub, err := c.nc.SubscribeSync(c.prefix + "_")
	if err != nil {
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.nc.FlushTimeout(probeTimeout); err == nil && c.refused(c.nc.LastError()) {
		c.deny()
	}
}

// close ends every watch; records are read each time from then on.
func (c *groupRecords) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for gid, e := range c.m {
		if e.sub != nil {
			_ = e.sub.Unsubscribe()
		}
		delete(c.m, gid)
	}
}

// drainLocked applies the writes the connection has read.
func (c *groupRecords) drainLocked() {
	for {
		select {
		case m := <-c.writes:
			c.applyLocked(m)
		default:
			return
		}
	}
}

// applyLocked applies one write the connection has read: its record, if
// kept, is read again at the next look-up.
func (c *groupRecords) applyLocked(m *nats.Msg) {
	if e := c.m[strings.TrimPrefix(m.Subject, c.prefix)]; e != nil {
		e.ok = false
		e.gen++
	}
}

// evictLocked lets one record go (any: map order).
func (c *groupRecords) evictLocked() {
	for gid, e := range c.m {
		if e.sub != nil {
			_ = e.sub.Unsubscribe()
		}
		delete(c.m, gid)
		return
	}
}

// probeTimeout bounds the probe's round trip.
const probeTimeout = 5 * time.Second
