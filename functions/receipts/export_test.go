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

// SentFrom finds the message of group gid's log that came from region's
// OUTBOX sequence oseq, for its tests.
func (s *Service) SentFrom(ctx context.Context, gid, region string, oseq uint64) (uint64, string, error) {
	return s.sentFrom(ctx, gid, region, oseq)
}
