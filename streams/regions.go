package streams

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// Regions: the layout one region of a regions deployment adds to the
// single-region one (README, "Regions"; contract/regions.go).
//
//   - OUTBOX (OUTBOX.json): what this region stores for users homed
//     elsewhere, on out.<region>.<user>. A work queue with no age limit:
//     a message stays until its region's INBOX has sourced it, however
//     long the link is down, and is deleted then. (A max age, or a
//     message TTL, would drop messages during a long outage without an
//     error.) It numbers from contract.OutboxFirstSeq, so its sequences,
//     which senders get as "sent", are never INBOX sequences.
//   - One durable push consumer on OUTBOX per other region
//     (consumers/to-region.json): the other region's INBOX sources through
//     it, so after a cut the source resumes where the consumer stands in
//     seconds, rather than after the half-minute health check and
//     back-off of an ephemeral source.
//   - INBOX sources every other region's OUTBOX, across domains
//     ($JS.<region>.API), taking out.<this region>.* as inbox.*: the same
//     inbox, cursors, live copies and push as a message sent within the
//     region. Its duplicate window is set explicitly (a stream with
//     sources otherwise gets none), so a send retried under the same id
//     stays single across the hop too.
//   - HOMES: the directory of home regions, a bucket in the directory
//     region and a mirror of it in every other region, read locally.
//   - Groups across regions (contract/regions.go): GROUPS sources every
//     other region's OUTBOX out.<this region>.g.<partition>.<group> (a
//     member's send to a group homed here) as
//     group.<partition>.<group>.m, and TICKS its out.<this region>.t.<member>
//     (a member's position in a group homed here, or a read tick for a
//     user homed here, which the receipts function stores in their
//     inbox if their setting allows) as ticks.<member>, each
//     through a durable consumer of its own on that OUTBOX, like INBOX;
//     GROUP_DIR sources every other region's GROUP_INFO, through a durable
//     consumer there too, so every group's record is read locally.
//
// This is applied in code, over the single-region files, for a region
// deployment only: INBOX.json itself is unchanged.

// Region is this region's place in a regions deployment.
type Region struct {
	// Name is this region's name, which is also its JetStream domain.
	Name string
	// Peers are the other regions.
	Peers []string
	// Directory is the region whose HOMES bucket is the directory; the
	// others mirror it.
	Directory string
}

// ErrRegions wraps a regions layout that must not be applied: one that
// names a region twice or itself as a peer, runs on a server of another
// domain, or would carry messages around in a loop.
var ErrRegions = errors.New("streams: regions")

// Validate checks r's names: ids, distinct, and the directory one of the
// regions.
func (r *Region) Validate() error {
	all := append([]string{r.Name}, r.Peers...)
	seen := map[string]bool{}
	for _, n := range all {
		if !validRegion(n) {
			return fmt.Errorf("%w: %q is not a region name (1-32 of a-z 0-9 _ -)", ErrRegions, n)
		}
		if seen[n] {
			return fmt.Errorf("%w: region %q named twice", ErrRegions, n)
		}
		seen[n] = true
	}
	if len(r.Peers) == 0 {
		return fmt.Errorf("%w: no other region", ErrRegions)
	}
	if !seen[r.Directory] {
		return fmt.Errorf("%w: directory region %q is not one of the regions", ErrRegions, r.Directory)
	}
	return nil
}

// validRegion: a region name is a subject token and a JetStream domain.
func validRegion(n string) bool {
	if n == "" || len(n) > 32 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// carrier is one kind of what crosses from a region's OUTBOX into a
// stream of the region it is for, through a durable consumer of its own
// on that OUTBOX (so each resumes where it stood after a cut).
type carrier struct {
	stream string // the receiving region's stream that sources it
	suffix string // of the consumer's name and deliver subject
	// filter is the OUTBOX subjects for region to; dest, what the
	// receiving stream stores them as.
	filter func(to string) string
	dest   string
}

// carriers: 1:1 messages and ticks into INBOX, group sends into the
// group's home GROUPS, group positions into its TICKS. Their OUTBOX
// subjects have different numbers of tokens, so the work queue's
// consumers never overlap.
var carriers = []carrier{
	{contract.Inbox, "", func(to string) string { return contract.OutboxSubject(to, "*") }, contract.InboxPrefix + "{{wildcard(1)}}"},
	{contract.GroupsStream, "groups", func(to string) string { return contract.OutboxPrefix + to + ".g.*.*" }, contract.GroupsPrefix + "{{wildcard(1)}}.{{wildcard(2)}}.m"},
	{contract.TicksStream, "ticks", func(to string) string { return contract.OutboxTicksSubject(to, "*") }, contract.TicksPrefix + "{{wildcard(1)}}"},
}

func (c carrier) consumer(to string) string {
	if c.suffix == "" {
		return contract.CrossRegionConsumer(to)
	}
	return contract.CrossRegionConsumer(to) + "-" + c.suffix
}

func (c carrier) deliver(from, to string) string {
	if c.suffix == "" {
		return contract.CrossRegionDeliver(from, to)
	}
	return contract.CrossRegionDeliver(from, to) + "." + c.suffix
}

// carrierOf is the carrier into stream, if one sources into it.
func carrierOf(stream string) (carrier, bool) {
	for _, c := range carriers {
		if c.stream == stream {
			return c, true
		}
	}
	return carrier{}, false
}

// applyRegionSources adds to cfg, the config of a stream some carrier
// sources into, its source of every peer's OUTBOX.
func applyRegionSources(cfg *jetstream.StreamConfig, r *Region) {
	c, ok := carrierOf(cfg.Name)
	if !ok {
		return
	}
	for _, p := range r.Peers {
		cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{
			Name:     contract.Outbox,
			External: &jetstream.ExternalStream{APIPrefix: apiPrefix(p)},
			SubjectTransforms: []jetstream.SubjectTransformConfig{{
				Source:      c.filter(r.Name),
				Destination: c.dest,
			}},
			Consumer: &jetstream.StreamConsumerSource{
				Name:           c.consumer(r.Name),
				DeliverSubject: c.deliver(p, r.Name),
			},
		})
	}
}

// applyRegionInbox adds the sources of opts.Region to INBOX's config.
func applyRegionInbox(cfg *jetstream.StreamConfig, r *Region) { applyRegionSources(cfg, r) }

func apiPrefix(domain string) string { return "$JS." + domain + ".API" }

// OutboxConfig returns OUTBOX's config for region r: subjects only for
// its peers, so nothing can be stored for a region that is not one.
func OutboxConfig(opts Options, r *Region) (jetstream.StreamConfig, error) {
	var cfg jetstream.StreamConfig
	if err := load("OUTBOX.json", &cfg); err != nil {
		return cfg, err
	}
	cfg.Subjects = nil
	for _, p := range r.Peers {
		for _, c := range carriers {
			cfg.Subjects = append(cfg.Subjects, c.filter(p))
		}
	}
	if opts.DuplicateWindow > 0 {
		cfg.Duplicates = opts.DuplicateWindow
	}
	if opts.Replicas > 0 {
		cfg.Replicas = opts.Replicas
	}
	return cfg, nil
}

// CrossRegionConsumerConfig is the durable consumer on region from's
// OUTBOX that region to's INBOX sources through.
func CrossRegionConsumerConfig(from, to string) (jetstream.ConsumerConfig, error) {
	return carriers[0].consumerConfig(from, to)
}

// consumerConfig is the durable consumer on region from's OUTBOX that
// carries c's messages for region to.
func (c carrier) consumerConfig(from, to string) (jetstream.ConsumerConfig, error) {
	var cfg jetstream.ConsumerConfig
	if err := load("consumers/to-region.json", &cfg); err != nil {
		return cfg, err
	}
	cfg.Durable = c.consumer(to)
	cfg.Description = strings.ReplaceAll(cfg.Description, "REGION", to)
	if c.stream != contract.Inbox {
		cfg.Description = "Switchboard regions: carries OUTBOX's " + c.filter(to) + " to region " + to + "'s " + c.stream +
			", which sources through it; a message is deleted once that stream has it"
	}
	cfg.DeliverSubject = c.deliver(from, to)
	cfg.FilterSubject = c.filter(to)
	return cfg, nil
}

// GroupDirConfig is GROUP_DIR in region r: a source of every peer's
// GROUP_INFO. Only the group's home writes its record, so the sources
// never disagree, and GROUP_INFO sources nothing, so nothing loops.
func GroupDirConfig(replicas int, r *Region) (jetstream.KeyValueConfig, error) {
	cfg, err := kvConfig("kv/GROUP_DIR.json", replicas)
	if err != nil {
		return cfg, err
	}
	for _, p := range r.Peers {
		cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{
			Name:     "KV_" + contract.GroupInfoKV,
			External: &jetstream.ExternalStream{APIPrefix: apiPrefix(p)},
			SubjectTransforms: []jetstream.SubjectTransformConfig{{
				Source:      contract.KVSubject(contract.GroupInfoKV, ">"),
				Destination: contract.KVSubject(contract.GroupDirKV, ">"),
			}},
			Consumer: &jetstream.StreamConsumerSource{
				Name:           groupDirConsumer(r.Name),
				DeliverSubject: groupDirDeliver(p, r.Name),
			},
		})
	}
	return cfg, nil
}

// groupDirConsumer names the durable consumer on a region's GROUP_INFO
// through which region to's GROUP_DIR sources it: like OUTBOX's, so that
// after a cut the records resume in seconds, not after the back-off of
// an ephemeral source.
func groupDirConsumer(to string) string { return contract.CrossRegionConsumer(to) + "-dir" }

func groupDirDeliver(from, to string) string { return contract.CrossRegionDeliver(from, to) + ".dir" }

// GroupDirConsumerConfig is the durable consumer on region from's
// GROUP_INFO that region to's GROUP_DIR sources through.
func GroupDirConsumerConfig(from, to string) (jetstream.ConsumerConfig, error) {
	var cfg jetstream.ConsumerConfig
	if err := load("consumers/to-region.json", &cfg); err != nil {
		return cfg, err
	}
	cfg.Durable = groupDirConsumer(to)
	cfg.Description = "Switchboard regions: carries GROUP_INFO's records to region " + to + "'s GROUP_DIR, which sources through it"
	cfg.DeliverSubject = groupDirDeliver(from, to)
	cfg.FilterSubject = contract.KVSubject(contract.GroupInfoKV, ">")
	return cfg, nil
}

// HomesConfig is the HOMES bucket in region r: the directory itself in
// the directory region, else a mirror of it.
func HomesConfig(replicas int, r *Region) (jetstream.KeyValueConfig, error) {
	cfg, err := kvConfig("kv/HOMES.json", replicas)
	if err != nil || r.Name == r.Directory {
		return cfg, err
	}
	cfg.Description = "Switchboard regions: each user's home region, mirrored from region " + r.Directory
	cfg.Mirror = &jetstream.StreamSource{
		Name:     "KV_" + contract.HomesKV,
		External: &jetstream.ExternalStream{APIPrefix: apiPrefix(r.Directory)},
	}
	return cfg, nil
}

// applyRegion creates or updates OUTBOX, its consumers and HOMES (Apply
// has checked the server with CheckRegion).
func applyRegion(ctx context.Context, js jetstream.JetStream, opts Options) error {
	r := opts.Region
	cfg, err := OutboxConfig(opts, r)
	if err != nil {
		return err
	}
	if err := keepOperators(ctx, js, opts, &cfg); err != nil {
		return err
	}
	outbox, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return fmt.Errorf("streams: apply %s: %w", cfg.Name, err)
	}
	for _, p := range r.Peers {
		for _, car := range carriers {
			c, err := car.consumerConfig(r.Name, p)
			if err != nil {
				return err
			}
			// A work queue's consumers have the stream's replica count.
			c.Replicas = outbox.CachedInfo().Config.Replicas
			if _, err := outbox.CreateOrUpdatePushConsumer(ctx, c); err != nil {
				return fmt.Errorf("streams: apply consumer %s on %s: %w", c.Durable, cfg.Name, err)
			}
		}
	}
	info, err := js.Stream(ctx, "KV_"+contract.GroupInfoKV)
	if err != nil {
		return fmt.Errorf("streams: %s: %w", contract.GroupInfoKV, err)
	}
	for _, p := range r.Peers {
		c, err := GroupDirConsumerConfig(r.Name, p)
		if err != nil {
			return err
		}
		if _, err := info.CreateOrUpdatePushConsumer(ctx, c); err != nil {
			return fmt.Errorf("streams: apply consumer %s on %s: %w", c.Durable, contract.GroupInfoKV, err)
		}
	}
	homes, err := HomesConfig(opts.Replicas, r)
	if err != nil {
		return err
	}
	dir, err := GroupDirConfig(opts.Replicas, r)
	if err != nil {
		return err
	}
	for _, kv := range []jetstream.KeyValueConfig{homes, dir} {
		if err := keepReplicas(ctx, js, "KV_"+kv.Bucket, opts.Replicas, &kv.Replicas); err != nil {
			return err
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, kv); err != nil {
			return fmt.Errorf("streams: apply KV %s: %w", kv.Bucket, err)
		}
	}
	return nil
}

// CheckRegion refuses to lay region r out on a server that is not
// region r's, or where what exists would loop messages between regions:
//   - the server's JetStream domain must be r.Name: sourcing addresses
//     each region by its domain, and a region laid out under another
//     region's name would take that region's messages as its own;
//   - OUTBOX must source and mirror nothing: a region's OUTBOX holds only
//     what its own users sent, else a message taken from another region
//     would be sent on again, and between two such regions for ever;
//   - INBOX may source only other regions' OUTBOX streams (never an
//     INBOX, never its own region's OUTBOX).
func CheckRegion(ctx context.Context, js jetstream.JetStream, r *Region) error {
	if err := r.Validate(); err != nil {
		return err
	}
	info, err := js.AccountInfo(ctx)
	if err != nil {
		return fmt.Errorf("streams: account info: %w", err)
	}
	if info.Domain != r.Name {
		return fmt.Errorf("%w: the server's JetStream domain is %q, not region %q: each region runs as the domain of its name (jetstream { domain: %s })",
			ErrRegions, info.Domain, r.Name, r.Name)
	}
	if s, err := js.Stream(ctx, contract.Outbox); err == nil {
		c := s.CachedInfo().Config
		if c.Mirror != nil || len(c.Sources) > 0 {
			return fmt.Errorf("%w: stream %s sources or mirrors another stream, which would send other regions' messages on again, in a loop; remove them (nats stream edit %s)",
				ErrRegions, contract.Outbox, contract.Outbox)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("streams: %s: %w", contract.Outbox, err)
	}
	// What sources: the carriers' streams, only other regions' OUTBOX;
	// GROUP_DIR, only other regions' GROUP_INFO (never a GROUP_DIR, which
	// would pass records on round the regions).
	only := map[string]string{"KV_" + contract.GroupDirKV: "KV_" + contract.GroupInfoKV}
	for _, c := range carriers {
		only[c.stream] = contract.Outbox
	}
	for _, name := range []string{contract.Inbox, contract.GroupsStream, contract.TicksStream, "KV_" + contract.GroupDirKV} {
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("streams: %s: %w", name, err)
		}
		if s.CachedInfo().Config.Mirror != nil {
			return fmt.Errorf("%w: stream %s mirrors another stream; it may source only other regions' %s", ErrRegions, name, only[name])
		}
		for _, src := range s.CachedInfo().Config.Sources {
			var api string
			if src.External != nil {
				api = src.External.APIPrefix
			}
			domain := strings.TrimSuffix(strings.TrimPrefix(api, "$JS."), ".API")
			if src.Name != only[name] || api == "" || domain == r.Name {
				return fmt.Errorf("%w: stream %s sources %s from %q: it may source only other regions' %s",
					ErrRegions, name, src.Name, api, only[name])
			}
		}
	}
	return nil
}

// DeployedRegions are the regions of the deployment as laid out on the
// server js talks to: its own JetStream domain first, then each region
// whose OUTBOX its INBOX sources. A server with no regions layout (no
// domain, or an INBOX that sources nothing) is an error.
func DeployedRegions(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	info, err := js.AccountInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("streams: account info: %w", err)
	}
	s, err := js.Stream(ctx, contract.Inbox)
	if err != nil {
		return nil, fmt.Errorf("streams: %s: %w", contract.Inbox, err)
	}
	names := []string{info.Domain}
	for _, src := range s.CachedInfo().Config.Sources {
		if src.Name != contract.Outbox || src.External == nil {
			continue
		}
		names = append(names, strings.TrimSuffix(strings.TrimPrefix(src.External.APIPrefix, "$JS."), ".API"))
	}
	if info.Domain == "" || len(names) < 2 {
		return nil, fmt.Errorf("%w: this server has no regions layout (run setup with --region)", ErrRegions)
	}
	return names, nil
}
