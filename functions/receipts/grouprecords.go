package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// groupRecords keeps groups' records decoded, by revision. Every member's
// position asks for its group's record: decoded each time, a
// 1,024-member group cost a 60 KB JSON decode per member per message,
// the function's largest cost in a group's fan-out (13% of the
// all-in-one's CPU), growing as members² per message. Read each time, it
// still cost a 60 KB direct get per position: in one 1,024-member group
// at 10 messages a second, 60 MB/s of records through the server and the
// function to learn that nothing changed.
//
// So a record is read once per revision, and a watch of the bucket's
// changes (headers only: a key and its revision) says when a newer one
// exists: from then on the group's next position reads it. Settling a
// group after a change (so a removal counts even in a group where no
// position moves after it) is groupnews.go's, from a durable of the same
// changes shared by the instances; news, when set, is also told of each
// change the watch names (tests). A position that comes between a change
// and the watch's word of it is judged against the record before the
// change, as one read just before the change would have been; the settle
// of the change then corrects whatever it decided, and an aggregate
// computed from a newer record than the one in hand makes the hand read
// again (groups.go), so an old membership never overwrites a newer one.
// While the watch is not running, every position reads the record, as
// before.
//
// The server may end a watch on its own: nats.go gives up an ordered
// consumer whose re-creation the server refuses (a JetStream API queue
// past its limit, as in a storm of 100,000 first connects). The watch is
// then started again, with backoff, from the revision after the last it
// named (or after the bucket's last when it began), so every change made
// while it was down still comes as news and its group is settled.
type groupRecords struct {
	kv  jetstream.KeyValue
	max int
	// leader reads a record through the bucket's stream leader; nil:
	// kv.Get. Records are read this way while the watch runs: a direct
	// get, which any replica may answer, could bring a revision older
	// than one stored before the watch began, which the watch never
	// names, and that record would be served for good.
	leader func(ctx context.Context, gid string) (value []byte, rev uint64, err error)
	reads  atomic.Int64 // records read (tests)
	// news, when set, is told of every group whose record the watch saw
	// change; it must not block (the watch waits for it).
	news func(gid string)
	// ended is told when the watch ends other than by stop.
	ended func()

	mu sync.Mutex // guards the fields below; a leaf
	m  map[string]groupEntry
	// watching says the watch runs, so a record kept is current until
	// the watch names a newer revision of it.
	watching bool
	// gen changes whenever m is cleared or the watch stops: a read begun
	// before is not kept, since what would have marked it stale is lost.
	gen     uint64
	w       jetstream.KeyWatcher
	stopped bool // stop was called
	// seen is the last revision the watch named, or the bucket's last
	// when it began: a watch started again resumes after it.
	seen uint64
	// life bounds the watches (ended by stop); restarts counts the
	// watches started again (tests).
	life     context.Context
	cancel   context.CancelFunc
	restarts atomic.Int64
}

// The wait before a watch that ended is started again: doubling from
// rewatchMin to rewatchMax while the server refuses it.
const (
	rewatchMin = 100 * time.Millisecond
	rewatchMax = 5 * time.Second
)

// groupEntry is a decoded record and its revision, or, with g nil, a
// revision the watch announced and no read has brought yet.
type groupEntry struct {
	g   *contract.GroupRecord
	rev uint64
	// watched: read while the watch ran, so current until it names a
	// newer revision. Otherwise the record is read each time and only
	// its decoding is saved.
	watched bool
}

// recordsMax bounds the records kept; past it the cache starts over.
const recordsMax = 4096

func newGroupRecords(kv jetstream.KeyValue) *groupRecords {
	c := &groupRecords{kv: kv, max: recordsMax, m: map[string]groupEntry{}}
	c.life, c.cancel = context.WithCancel(context.Background())
	return c
}

// watch starts the watch of the bucket's changes, and starts it again
// whenever it ends before stop. Records are kept between reads only
// while it runs. ctx bounds the first attempt; one that fails is made
// again in the background, with backoff, until it starts or stop.
func (c *groupRecords) watch(ctx context.Context) error {
	w, err := c.begin(ctx)
	if err != nil {
		go func() {
			c.follow(c.retry(func() (jetstream.KeyWatcher, error) { return c.begin(c.life) }))
		}()
		return err
	}
	go c.follow(w)
	return nil
}

// begin starts the first watch: of changes from now on, with the
// bucket's last revision as the one a restart resumes after.
func (c *groupRecords) begin(ctx context.Context) (jetstream.KeyWatcher, error) {
	st, err := c.kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		c.mu.Lock()
		c.seen = max(c.seen, bs.StreamInfo().State.LastSeq)
		c.mu.Unlock()
	}
	// Records alone: users' lists of groups share the bucket.
	w, err := c.kv.Watch(c.life, contract.GroupRecordKeys, jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		return nil, err
	}
	return c.adopt(w)
}

// resume starts the watch again from the revision after the last one
// seen: every change since, in order.
func (c *groupRecords) resume() (jetstream.KeyWatcher, error) {
	c.mu.Lock()
	from := c.seen + 1
	c.mu.Unlock()
	w, err := c.kv.Watch(c.life, contract.GroupRecordKeys, jetstream.MetaOnly(), jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from))
	if err != nil {
		return nil, err
	}
	if w, err = c.adopt(w); err == nil {
		c.restarts.Add(1)
	}
	return w, err
}

// adopt makes w the running watch, unless stop came first.
func (c *groupRecords) adopt(w jetstream.KeyWatcher) (jetstream.KeyWatcher, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		_ = w.Stop()
		return nil, errors.New("receipts: group records: stopped")
	}
	c.w, c.watching = w, true
	return w, nil
}

// retry calls start until it gives a watch, waiting between refusals
// (doubling from rewatchMin to rewatchMax); nil once stop is called.
func (c *groupRecords) retry(start func() (jetstream.KeyWatcher, error)) jetstream.KeyWatcher {
	for wait := rewatchMin; ; wait = min(2*wait, rewatchMax) {
		t := time.NewTimer(wait)
		select {
		case <-c.life.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if w, err := start(); err == nil {
			return w
		}
	}
}

// follow takes w's news until it ends, then starts a watch again, until
// stop.
func (c *groupRecords) follow(w jetstream.KeyWatcher) {
	for w != nil {
		for e := range w.Updates() {
			if e != nil {
				c.changed(e.Key(), e.Revision())
			}
		}
		c.mu.Lock()
		c.watching = false
		c.clearLocked() // a read begun before is not kept as watched
		stopped := c.stopped
		c.mu.Unlock()
		if stopped {
			return
		}
		if c.ended != nil {
			c.ended()
		}
		w = c.retry(c.resume)
	}
}

// stop ends the watch.
func (c *groupRecords) stop() {
	c.mu.Lock()
	c.stopped = true
	w := c.w
	c.mu.Unlock()
	c.cancel()
	if w != nil {
		_ = w.Stop()
	}
}

// changed takes the watch's word that group gid's record is at rev, and
// tells news of it unless a newer revision is known already (whose own
// word is still to come). A read may have brought rev first: the group
// must still be settled, so the news goes out then too.
func (c *groupRecords) changed(gid string, rev uint64) {
	c.mu.Lock()
	c.seen = max(c.seen, rev)
	old, ok := c.m[gid]
	if !ok || old.rev < rev {
		c.putLocked(gid, groupEntry{rev: rev})
	}
	c.mu.Unlock()
	if (!ok || old.rev <= rev) && c.news != nil {
		c.news(gid)
	}
}

// get returns group gid's record: contract.ErrUnknownGroup when it has
// none, contract.ErrBadRecord when it cannot be decoded. The record is
// shared: callers only read it.
func (c *groupRecords) get(ctx context.Context, gid string) (*contract.GroupRecord, error) {
	return c.load(ctx, gid, false)
}

// fresh is get, read from the bucket's leader even when a record is
// kept: for a record in hand that may be behind.
func (c *groupRecords) fresh(ctx context.Context, gid string) (*contract.GroupRecord, error) {
	return c.load(ctx, gid, true)
}

func (c *groupRecords) load(ctx context.Context, gid string, fresh bool) (*contract.GroupRecord, error) {
	c.mu.Lock()
	cached, ok := c.m[gid]
	watching, gen := c.watching, c.gen
	c.mu.Unlock()
	if ok && cached.g != nil && cached.watched && watching && !fresh {
		return cached.g, nil
	}
	value, rev, err := c.read(ctx, gid, watching || fresh)
	if err != nil {
		return nil, err
	}
	g := cached.g
	if !ok || g == nil || cached.rev != rev {
		g = new(contract.GroupRecord)
		if err := json.Unmarshal(value, g); err != nil {
			return nil, fmt.Errorf("%w: group %s: %w", contract.ErrBadRecord, gid, err)
		}
	}
	c.mu.Lock()
	// Kept unless the watch named a newer revision meanwhile (this read
	// came just before a change); served without a read only if the
	// watch ran all along (a change it did not see would go unnoticed).
	if old, ok := c.m[gid]; !ok || old.rev < rev || (old.rev == rev && !old.watched) {
		c.putLocked(gid, groupEntry{g: g, rev: rev, watched: watching && c.watching && c.gen == gen})
	}
	c.mu.Unlock()
	return g, nil
}

// read reads group gid's record, through the leader while watched (or
// asked to be fresh).
func (c *groupRecords) read(ctx context.Context, gid string, watched bool) ([]byte, uint64, error) {
	c.reads.Add(1)
	if watched && c.leader != nil {
		return c.leader(ctx, gid)
	}
	e, err := c.kv.Get(ctx, gid)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, contract.ErrUnknownGroup
	case err != nil:
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// putLocked keeps e for gid, starting over when full.
//
// Lock should be held.
func (c *groupRecords) putLocked(gid string, e groupEntry) {
	if _, ok := c.m[gid]; !ok && len(c.m) >= c.max {
		c.clearLocked()
	}
	c.m[gid] = e
}

// clearLocked forgets every record and revision.
//
// Lock should be held.
func (c *groupRecords) clearLocked() {
	clear(c.m)
	c.gen++
}
