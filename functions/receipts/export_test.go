package receipts

import (
	"context"
	"errors"
	"sync"

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

// SentTo finds in to's inbox the chat message sender sent from region at
// OUTBOX sequence oseq, for its tests.
func (s *Service) SentTo(ctx context.Context, sender, to, region string, oseq uint64) (uint64, error) {
	return s.sentTo(ctx, sender, to, region, oseq)
}

// ErrSearchTooLong is a search that read too far, for its tests.
var ErrSearchTooLong = errSearchTooLong

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

// aggregateHookKV calls fn just before writes of one key, so a test can
// run other requests at the moment a settle writes a group's aggregate.
type aggregateHookKV struct {
	jetstream.KeyValue
	key string

	mu   sync.Mutex
	n    int
	busy bool
	fn   func(n int)
}

func (h *aggregateHookKV) before(key string) {
	h.mu.Lock()
	if key != h.key || h.busy || h.fn == nil {
		h.mu.Unlock()
		return
	}
	h.n++
	n, fn := h.n, h.fn
	h.busy = true
	h.mu.Unlock()
	fn(n)
	h.mu.Lock()
	h.busy = false
	h.mu.Unlock()
}

func (h *aggregateHookKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	h.before(key)
	return h.KeyValue.Update(ctx, key, value, rev)
}

func (h *aggregateHookKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	h.before(key)
	return h.KeyValue.Create(ctx, key, value, opts...)
}

// HookAggregateWrites calls fn(n) just before the n-th write of group
// gid's aggregate (not for writes made from inside fn).
func (s *Service) HookAggregateWrites(gid string, fn func(n int)) {
	s.groupTicks = &aggregateHookKV{KeyValue: s.groupTicks, key: contract.GroupAggregateKey(gid), fn: fn}
}

// GroupPosition is the group endpoint's work, called in process.
func (s *Service) GroupPosition(ctx context.Context, req contract.GroupPositionRequest) error {
	return s.groupPosition(ctx, req)
}

// SettleMoved is what a request that moved member to p does after its
// swap (the check it makes against the aggregate), called on its own.
func (s *Service) SettleMoved(ctx context.Context, gid, member string, p contract.GroupPosition) error {
	g, err := s.records.get(ctx, gid)
	if err != nil {
		return err
	}
	return s.settleGroup(ctx, g, &settling{known: map[string]memberPos{member: {p: p}}, only: true, by: member, device: "phone", read: true})
}

// LeaderTick reads key of GROUP_TICKS through the stream's leader, for
// its tests.
func (s *Service) LeaderTick(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := s.leaderTick(ctx, key)
	return e.value, e.rev, err
}

// Watch, Stop and Changed drive the cache's watch, for its tests.
func (g GroupRecords) Watch(ctx context.Context) error { return g.c.watch(ctx) }
func (g GroupRecords) Stop()                           { g.c.stop() }
func (g GroupRecords) Changed(gid string, rev uint64)  { g.c.changed(gid, rev) }

// NewWatchedGroupRecords is the cache as the function makes it: records
// read through the bucket's leader over nc while the watch runs.
func NewWatchedGroupRecords(kv jetstream.KeyValue, nc *nats.Conn) GroupRecords {
	c := newGroupRecords(kv)
	c.leader = (&Service{nc: nc}).leaderRecord
	return GroupRecords{c}
}

// Restarts counts the watches the cache started again after one ended.
func (g GroupRecords) Restarts() int64 { return g.c.restarts.Load() }

// Reads counts the records the cache read.
func (g GroupRecords) Reads() int64 { return g.c.reads.Load() }

// HoldRecord makes the instance serve g as group g.ID's current record,
// at revision rev, as it does while the watch's news of a later change
// is still on its way.
func (s *Service) HoldRecord(g *contract.GroupRecord, rev uint64) {
	s.records.mu.Lock()
	defer s.records.mu.Unlock()
	s.records.m[g.ID] = groupEntry{g: g, rev: rev, watched: true}
}

// NewsIdle reports whether no settle of the watch's news is pending or
// running.
func (s *Service) NewsIdle() bool { return s.news.idle() }

// failingKV fails every write of one key, as a store in trouble would.
type failingKV struct {
	jetstream.KeyValue
	key string
}

var errStoreTrouble = errors.New("store in trouble")

func (f *failingKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if key == f.key {
		return 0, errStoreTrouble
	}
	return f.KeyValue.Update(ctx, key, value, rev)
}

func (f *failingKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if key == f.key {
		return 0, errStoreTrouble
	}
	return f.KeyValue.Create(ctx, key, value, opts...)
}

// FailAggregateWrites makes every write of group gid's aggregate fail.
func (s *Service) FailAggregateWrites(gid string) {
	s.groupTicks = &failingKV{KeyValue: s.groupTicks, key: contract.GroupAggregateKey(gid)}
}

// OnNews sets what the cache tells of a group whose record the watch saw change.
func (g GroupRecords) OnNews(f func(gid string)) { g.c.news = f }

// Fresh is the cache's fresh read (groupPosition's path for a member the
// kept record does not know).
func (g GroupRecords) Fresh(ctx context.Context, gid string) (*contract.GroupRecord, error) {
	return g.c.fresh(ctx, gid)
}

// getCountKV counts Gets of GROUP_TICKS keys.
type getCountKV struct {
	jetstream.KeyValue
	mu   sync.Mutex
	gets map[string]int
}

func (c *getCountKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.mu.Lock()
	c.gets[key]++
	c.mu.Unlock()
	return c.KeyValue.Get(ctx, key)
}

// CountTickGets counts the instance's Gets of GROUP_TICKS keys from now
// on (call while nothing runs on the instance).
func (s *Service) CountTickGets() func() map[string]int {
	c := &getCountKV{KeyValue: s.groupTicks, gets: map[string]int{}}
	s.groupTicks = c
	return func() map[string]int {
		c.mu.Lock()
		defer c.mu.Unlock()
		out := map[string]int{}
		for k, v := range c.gets {
			out[k] = v
		}
		return out
	}
}

// WatchThrough makes instances started with cfg watch group records
// through wrap's KeyValue.
func WatchThrough(cfg Config, wrap func(jetstream.KeyValue) jetstream.KeyValue) Config {
	cfg.watchThrough = wrap
	return cfg
}

// ProbeReads gives instances started with cfg a search budget of n
// direct gets.
func ProbeReads(cfg Config, n int) Config {
	cfg.probeReads = n
	return cfg
}
