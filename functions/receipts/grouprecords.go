package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// groupRecords keeps groups' records decoded, by revision. Every member's
// position asks for its group's record: decoded each time, a
// 1,024-member group cost a 60 KB JSON decode per member per message,
// the function's largest cost in a group's fan-out (13% of the
// all-in-one's CPU), growing as members² per message. The record is
// still read each time, so a membership change counts from the next
// position exactly as before; only a revision not seen yet is decoded.
type groupRecords struct {
	kv  jetstream.KeyValue
	max int

	mu sync.Mutex // guards m; a leaf
	m  map[string]groupEntry
}

// groupEntry is a decoded record and its revision.
type groupEntry struct {
	g   *contract.GroupRecord
	rev uint64
}

// recordsMax bounds the records kept; past it the cache starts over.
const recordsMax = 4096

func newGroupRecords(kv jetstream.KeyValue) *groupRecords {
	return &groupRecords{kv: kv, max: recordsMax, m: map[string]groupEntry{}}
}

// get returns group gid's record: contract.ErrUnknownGroup when it has
// none, contract.ErrBadRecord when it cannot be decoded. The record is
// shared: callers only read it.
func (c *groupRecords) get(ctx context.Context, gid string) (*contract.GroupRecord, error) {
	e, err := c.kv.Get(ctx, gid)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, contract.ErrUnknownGroup
	case err != nil:
		return nil, err
	}
	c.mu.Lock()
	cached, ok := c.m[gid]
	c.mu.Unlock()
	if ok && cached.rev == e.Revision() {
		return cached.g, nil
	}
	var g contract.GroupRecord
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		return nil, fmt.Errorf("%w: group %s: %w", contract.ErrBadRecord, gid, err)
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	if old, ok := c.m[gid]; !ok || old.rev < e.Revision() {
		c.m[gid] = groupEntry{g: &g, rev: e.Revision()}
	}
	c.mu.Unlock()
	return &g, nil
}
