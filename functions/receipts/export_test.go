package receipts

import (
	"context"

	"github.com/nats-io/nats.go"
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

// LastValues reads the last values of keys of GROUP_TICKS in one
// batched direct get, for its tests.
func (s *Service) LastValues(ctx context.Context, keys []string) (map[string]string, error) {
	subjects := make([]string, len(keys))
	for i, k := range keys {
		subjects[i] = contract.KVSubject(contract.GroupTicksKV, k)
	}
	out := map[string]string{}
	_, err := s.directGet(ctx, "KV_"+contract.GroupTicksKV, directGet{MultiLast: subjects}, func(m *nats.Msg) {
		out[m.Header.Get(contract.HdrSubject)] = string(m.Data)
	})
	return out, err
}
