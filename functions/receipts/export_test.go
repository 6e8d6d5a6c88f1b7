package receipts

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// GroupRecords is the cache of groups' records, for its tests.
type GroupRecords struct{ c *groupRecords }

func NewGroupRecords(kv jetstream.KeyValue) GroupRecords { return GroupRecords{newGroupRecords(kv)} }

func (g GroupRecords) Get(ctx context.Context, gid string) (*contract.GroupRecord, error) {
	return g.c.get(ctx, gid)
}
func (g GroupRecords) Apply(e jetstream.KeyValueEntry) { g.c.apply(e) }
func (g GroupRecords) MarkWatching()                   { g.c.watching.Store(true) }
