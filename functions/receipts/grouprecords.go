package receipts

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// groupRecords keeps groups' records decoded, current through a watch on
// GROUP_INFO. Every member's position asks for its group's record: read
// and decoded each time, a 1,024-member group cost a 60 KB read and its
// decoding per member per message, the function's largest cost in a
// group's fan-out (13% of the all-in-one's CPU), and one that grew as
// members² per message.
//
// A record is taken from the cache while the watch runs and for at most
// recordTTL after it was stored, a backstop should the watch stop
// without saying so. The watch stores each change as it comes, newer
// revisions only, so a read racing a change cannot put the older record
// back. A group deleted is remembered as gone.
type groupRecords struct {
	kv       jetstream.KeyValue
	ttl      time.Duration
	max      int
	watching atomic.Bool

	mu sync.Mutex // guards m; a leaf
	m  map[string]groupEntry
}

// groupEntry is a record (nil: deleted) and its revision; bad, a
// revision that could not be decoded, read again on demand.
type groupEntry struct {
	g   *contract.GroupRecord
	rev uint64
	at  time.Time
	bad bool
}

const (
	recordTTL  = 30 * time.Second
	recordsMax = 4096 // past it the cache starts over
)

func newGroupRecords(kv jetstream.KeyValue) *groupRecords {
	return &groupRecords{kv: kv, ttl: recordTTL, max: recordsMax, m: map[string]groupEntry{}}
}

// get returns group gid's record: contract.ErrUnknownGroup when it has
// none, contract.ErrBadRecord when it cannot be read. The record is
// shared: callers only read it.
func (c *groupRecords) get(ctx context.Context, gid string) (*contract.GroupRecord, error) {
	if c.watching.Load() {
		c.mu.Lock()
		e, ok := c.m[gid]
		c.mu.Unlock()
		if ok && !e.bad && time.Since(e.at) < c.ttl {
			if e.g == nil {
				return nil, contract.ErrUnknownGroup
			}
			return e.g, nil
		}
	}
	g, rev, err := contract.LoadGroup(ctx, c.kv, gid)
	if err != nil {
		return nil, err
	}
	c.put(gid, groupEntry{g: &g, rev: rev})
	return &g, nil
}

// put stores gid's entry unless a newer one is stored.
func (c *groupRecords) put(gid string, e groupEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[gid]; ok && old.rev > e.rev {
		return
	}
	if _, ok := c.m[gid]; !ok && len(c.m) >= c.max {
		clear(c.m)
	}
	e.at = time.Now()
	c.m[gid] = e
}

// watch keeps the cache current until ctx ends. The watch sends only
// changes made after it started; what was stored before is read on
// demand.
func (c *groupRecords) watch(ctx context.Context, log interface{ Warn(string, ...any) }) error {
	w, err := c.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	c.watching.Store(true)
	go func() {
		defer c.watching.Store(false)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					log.Warn("the watch on group records ended; records are read again each time")
					return
				}
				if e != nil {
					c.apply(e)
				}
			}
		}
	}()
	return nil
}

// apply stores one change the watch saw.
func (c *groupRecords) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		c.put(e.Key(), groupEntry{rev: e.Revision()})
		return
	}
	var g contract.GroupRecord
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		// Unreadable: read on demand, which reports it as it is.
		c.put(e.Key(), groupEntry{rev: e.Revision(), bad: true})
		return
	}
	c.put(e.Key(), groupEntry{g: &g, rev: e.Revision()})
}
