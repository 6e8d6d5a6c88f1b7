// Package streams owns Switchboard's JetStream layout: the streams, the
// consumer templates and the KV buckets, kept as JSON files in the nats CLI's
// own format so that code and operators share one source of truth
// (`nats stream add --config streams/INBOX.json` creates what Apply creates).
//
// It applies definitions idempotently and names things; it must not hold
// connection state or know about the wire protocol.
package streams

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

//go:embed *.json consumers/*.json kv/*.json
var files embed.FS

// streamFiles and kvFiles are applied by Apply, in this order.
var (
	streamFiles = []string{"INBOX.json", "TICKS.json", "DLQ.json", "GROUPS.json"}
	kvFiles     = []string{"kv/DEVICES.json", "kv/CURSORS.json", "kv/READS.json", "kv/PRESENCE.json", "kv/SETTINGS.json", "kv/PUSH.json", "kv/GROUP_INFO.json", "kv/GROUP_TICKS.json"}
)

// ErrConfig wraps an invalid stream setting.
var ErrConfig = errors.New("streams: invalid config")

// Options override the JSON definitions. A zero field keeps the file's value.
type Options struct {
	// MaxAge is how long a message is kept in INBOX whether or not it was
	// delivered. Zero keeps the file's 30 days.
	MaxAge time.Duration
	// DuplicateWindow is how long a Nats-Msg-Id is remembered, so a
	// retried send is stored once. Zero keeps the file's 2 minutes.
	DuplicateWindow time.Duration
	// Replicas is the stream replication factor (1, 3 or 5). Zero keeps 1.
	Replicas int
	// Region, when set, lays out one region of a regions deployment
	// (regions.go). Nil: a single region.
	Region *Region
}

// InboxConfig returns the INBOX stream configuration with opts applied.
func InboxConfig(opts Options) (jetstream.StreamConfig, error) {
	var cfg jetstream.StreamConfig
	if err := load("INBOX.json", &cfg); err != nil {
		return cfg, err
	}
	if opts.MaxAge < 0 || opts.DuplicateWindow < 0 || opts.Replicas < 0 {
		return cfg, fmt.Errorf("%w: negative value", ErrConfig)
	}
	if opts.MaxAge > 0 {
		cfg.MaxAge = opts.MaxAge
	}
	if opts.DuplicateWindow > 0 {
		cfg.Duplicates = opts.DuplicateWindow
	}
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		return cfg, fmt.Errorf("%w: duplicate window %s exceeds max age %s", ErrConfig, cfg.Duplicates, cfg.MaxAge)
	}
	if opts.Replicas > 0 {
		cfg.Replicas = opts.Replicas
	}
	if opts.Region != nil {
		applyRegionInbox(&cfg, opts.Region)
	}
	return cfg, nil
}

// ConsumerConfig returns a worker function's durable consumer from
// consumers/<name>.json.
func ConsumerConfig(name string) (jetstream.ConsumerConfig, error) {
	var cfg jetstream.ConsumerConfig
	err := load("consumers/"+name+".json", &cfg)
	return cfg, err
}

// GroupsConsumerConfig returns the groups function's durable consumer of
// partition p of the group logs: consumers/groups.json, named and
// filtered for p.
func GroupsConsumerConfig(p int) (jetstream.ConsumerConfig, error) {
	cfg, err := ConsumerConfig("groups")
	if err != nil {
		return cfg, err
	}
	cfg.Durable = contract.GroupsDurable(p)
	cfg.FilterSubject = contract.GroupPartitionFilter(p)
	return cfg, nil
}

// DevicesConfig returns the DEVICES KV bucket configuration.
func DevicesConfig(replicas int) (jetstream.KeyValueConfig, error) {
	return kvConfig("kv/DEVICES.json", replicas)
}

func kvConfig(file string, replicas int) (jetstream.KeyValueConfig, error) {
	var cfg jetstream.KeyValueConfig
	if err := load(file, &cfg); err != nil {
		return cfg, err
	}
	if replicas > 0 {
		cfg.Replicas = replicas
	}
	return cfg, nil
}

func load(name string, v any) error {
	b, err := files.ReadFile(name)
	if err != nil {
		return fmt.Errorf("streams: %s: %w", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("streams: %s: %w", name, err)
	}
	return nil
}

// Apply creates or updates every stream and bucket. It is safe to run on
// every start and from many processes at once.
func Apply(ctx context.Context, js jetstream.JetStream, opts Options) error {
	if opts.Region != nil {
		if err := CheckRegion(ctx, js, opts.Region); err != nil {
			return err
		}
	}
	for _, file := range streamFiles {
		var cfg jetstream.StreamConfig
		var err error
		if file == "INBOX.json" {
			cfg, err = InboxConfig(opts)
		} else if err = load(file, &cfg); err == nil && opts.Replicas > 0 {
			cfg.Replicas = opts.Replicas
		}
		if err == nil && opts.Region != nil && file != "INBOX.json" {
			applyRegionSources(&cfg, opts.Region) // regions.go: GROUPS and TICKS
		}
		if err != nil {
			return err
		}
		if err := keepOperators(ctx, js, opts, &cfg); err != nil {
			return err
		}
		bellsFor(&cfg)
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("streams: apply %s: %w", cfg.Name, err)
		}
	}
	for _, file := range kvFiles {
		kv, err := kvConfig(file, opts.Replicas)
		if err != nil {
			return err
		}
		if err := keepReplicas(ctx, js, "KV_"+kv.Bucket, opts.Replicas, &kv.Replicas); err != nil {
			return err
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, kv); err != nil {
			return fmt.Errorf("streams: apply KV %s: %w", kv.Bucket, err)
		}
	}
	if err := deleteRetiredSync(ctx, js); err != nil {
		return err
	}
	if opts.Region != nil {
		return applyRegion(ctx, js, opts)
	}
	return nil
}

// retiredSyncDurable is the durable the sync function read INBOX with.
const retiredSyncDurable = "sync"

// deleteRetiredSync deletes the durable own copies of 1:1 sends were
// once made through, by a worker function; the gateways make them now.
// Left, it would count every message as pending for good. One that still
// holds messages is left for a function still running to finish (an
// upgrade that stopped it first leaves those messages without copies,
// whatever is done here), and deleted by a later setup.
func deleteRetiredSync(ctx context.Context, js jetstream.JetStream) error {
	c, err := js.Consumer(ctx, contract.Inbox, retiredSyncDurable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("streams: the retired %s durable: %w", retiredSyncDurable, err)
	}
	if i := c.CachedInfo(); i.NumPending > 0 || i.NumAckPending > 0 {
		return nil
	}
	if err := js.DeleteConsumer(ctx, contract.Inbox, retiredSyncDurable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("streams: delete the retired %s durable: %w", retiredSyncDurable, err)
	}
	return nil
}

// keepReplicas leaves an existing stream's replica count alone when none
// was asked for: a setup without --replicas must not scale a cluster's
// R3 streams back to one replica. A stream it cannot read is an error:
// guessing one replica would do just that.
func keepReplicas(ctx context.Context, js jetstream.JetStream, stream string, asked int, replicas *int) error {
	if asked > 0 {
		return nil
	}
	s, err := js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("streams: read %s's replicas: %w", stream, err)
	}
	*replicas = s.CachedInfo().Config.Replicas
	return nil
}

// bellsFor has a replicated GROUPS ring its bells with headers only: a
// gateway takes a bell's message only from a GROUPS of one replica on
// its own server (a leader change loses bells unseen), and reads the log
// for every other bell, so the bodies would cross to it twice.
func bellsFor(cfg *jetstream.StreamConfig) {
	if cfg.Name == contract.GroupsStream && cfg.RePublish != nil {
		cfg.RePublish.HeadersOnly = cfg.Replicas > 1
	}
}

// keepOperators leaves what an operator chose on an existing stream
// alone where this run does not ask otherwise: its replicas (as
// keepReplicas, a stream it cannot read being an error), INBOX's max age
// and dedup window (the flags' zero), and a byte limit or a placement
// where the file sets none (`nats stream edit INBOX --max-bytes 50GB`),
// so setup run again on an upgrade, or the all-in-one's restart, undoes
// none of it.
func keepOperators(ctx context.Context, js jetstream.JetStream, opts Options, cfg *jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("streams: read %s: %w", cfg.Name, err)
	}
	old := s.CachedInfo().Config
	if opts.Replicas == 0 {
		cfg.Replicas = old.Replicas
	}
	if cfg.Name == contract.Inbox {
		if opts.MaxAge == 0 {
			cfg.MaxAge = old.MaxAge
		}
		if opts.DuplicateWindow == 0 {
			cfg.Duplicates = old.Duplicates
		}
	}
	if cfg.MaxBytes <= 0 && old.MaxBytes > 0 {
		cfg.MaxBytes = old.MaxBytes
	}
	if cfg.Placement == nil && old.Placement != nil {
		cfg.Placement = old.Placement
	}
	return nil
}
