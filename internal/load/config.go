package load

import (
	"context"
	"github.com/nats-io/nats.go"
	"os/exec"

	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("load: config")

// The scenarios.
const (
	ScenarioIdle    = "idle"
	ScenarioPairs   = "pairs"
	ScenarioStorm   = "storm"
	ScenarioOffline = "offline"
	ScenarioGroups  = "groups"
	// ScenarioGroupStorm is the storm for users in many small groups.
	ScenarioGroupStorm = "groupstorm"
)

// Scenarios lists the scenarios in the order the help text gives them.
var Scenarios = []string{ScenarioIdle, ScenarioPairs, ScenarioStorm, ScenarioOffline, ScenarioGroups, ScenarioGroupStorm}

// Target is the system under load.
type Target struct {
	// URLs are the gateways' WebSocket endpoints (ws://host:port/v1/ws).
	// Devices are spread over them round-robin, so several gateway
	// processes sharing one NATS are loaded evenly. At least one.
	URLs []string
	// MetricsURLs are the gateways' metrics endpoints
	// (http://host:port/metrics, served on --metrics-listen), read for
	// the server-side counters: error frames and closes by code. Empty:
	// no server counters.
	MetricsURLs []string
	// NATSURL reaches the NATS the gateways use: the raw baseline runs
	// there, and stream state is read from there. Empty skips both.
	NATSURL string
	// NATSOptions authenticate those connections: the operator's key
	// (natsauth.RoleOptions).
	NATSOptions []nats.Option
	// Token mints a token for a device. Required.
	Token func(user, device string) (string, error)
	// Procs are the server processes whose memory and CPU are read from
	// /proc. Empty: no server-side memory figures.
	Procs []Proc
	// ChildCommand makes the command of a child load-tool process for
	// an idle run with Config.Clients above 1: this binary with flags
	// that reach this target and run HoldIdle for devices devices
	// numbered from first. Nil: an idle run has one process.
	ChildCommand func(devices, first int) *exec.Cmd
	// Placement, for a pairs run on a regions deployment (README,
	// "Regions"), homes the senders in one region and the recipients in
	// another, or the same, and connects each to its own region's
	// gateways. Nil: every device on URLs, no homes given.
	Placement *Placement
}

// Placement homes a pairs run's users in regions.
type Placement struct {
	SenderRegion, RecipientRegion string
	// SenderURLs and RecipientURLs are each region's gateways.
	SenderURLs, RecipientURLs []string
	// Home records the homes (user -> region) in the deployment's
	// directory and returns once every region named reads them.
	Home func(ctx context.Context, homes map[string]string) error
}

// Proc is one server process to watch.
type Proc struct {
	// Role is "serve" (gateway and NATS in one process), "gateway" or
	// "nats". Memory per device sums every role; the raw consumer baseline
	// reads the process that holds NATS ("serve" or "nats").
	Role string `json:"role"`
	PID  int    `json:"pid"`
}

// Config is what to run. Each field's comment says what zero means;
// DefaultConfig fills every field.
type Config struct {
	// Scenario is one of Scenarios.
	Scenario string

	// Devices is the number of devices for idle and storm.
	Devices int
	// Pairs is the number of sender/recipient pairs for pairs.
	Pairs int
	// Users is the number of never-connected users for offline.
	Users int
	// Messages is what each offline user receives.
	Messages int
	// Pending is what each storm device receives while disconnected;
	// in a groupstorm, what each group's sender sends meanwhile.
	Pending int
	// Sample is how many offline users reconnect and drain. Zero: all.
	Sample int
	// FirstConnect connects each offline user's device once before the
	// messages, so the device has its queue (a device that went away
	// rather than one never seen).
	FirstConnect bool

	// GroupSize is the members of each group, the sender included
	// (groups, groupstorm).
	GroupSize int
	// Groups is how many groups send at once (groups, groupstorm).
	Groups int
	// Memberships is how many groups each member user is in
	// (groupstorm; each group's sender is in its own only).
	Memberships int
	// SendersAway has the groups' senders go away too once they have
	// sent, before the members come back (groupstorm): no device of a
	// group is left on a gateway, as after a gateway's restart.
	SendersAway bool

	// Rate is the total sends per second across all senders (pairs,
	// groups).
	// Zero: flat out, each sender keeping Inflight sends outstanding.
	Rate float64
	// Inflight is the number of sends one sender keeps outstanding; at a
	// fixed Rate it caps them. Zero: 8.
	Inflight int
	// Duration is how long pairs sends. Zero: 10s.
	Duration time.Duration
	// Size is the body size in bytes, JSON quotes included. Zero: 256.
	Size int
	// Senders is how many devices feed the storm and offline backlogs.
	// Zero: 20.
	Senders int

	// ConnectConcurrency bounds dials in flight while devices connect
	// (not during the storm, where every device reconnects at once).
	// Zero: 64.
	ConnectConcurrency int
	// PerSource is how many connections share one local source address
	// (127.0.0.1, .2, ...) when every target is on loopback, so a single
	// address's ephemeral ports are not the limit. Zero: 10000; negative:
	// never bind a source address.
	PerSource int
	// Trace, for the groups scenario, is a file to write one line per
	// message sent to: its group, its number, when its send was due
	// (unix ms), how many members got it and, once all had, the time
	// until the last did (ms). Empty: none.
	Trace string
	// DrainTimeout bounds the wait for outstanding deliveries and
	// receipts after the load stops. Zero: 60s.
	DrainTimeout time.Duration
	// Settle is the pause before memory is read after connecting or
	// storing, so in-flight work does not count as resident cost. Zero:
	// 2s; negative: none.
	Settle time.Duration

	// BaselineMsgs is the raw baseline's message count. Zero: 200000;
	// negative: use BaselineDuration instead.
	BaselineMsgs int
	// BaselineDuration, when BaselineMsgs is negative, publishes for this
	// long; it is also how long the paced baseline runs at a pairs Rate.
	// Zero: 3s.
	BaselineDuration time.Duration
	// BaselineConsumers is how many raw durable consumers idle creates
	// to set memory per device against memory per consumer. Zero:
	// min(Devices, 1000); negative: none.
	BaselineConsumers int
	// SkipBaseline runs no baseline at all (ratios are then absent).
	SkipBaseline bool

	// Clients, for idle, is how many load-tool processes hold the
	// devices (Target.ChildCommand starts them; each runs HoldIdle): one
	// process may hold some 19,000 sockets on this machine kind, so
	// 100,000 devices at once (QUALITY.md's P10) need six. 0 or 1: this
	// process holds them.
	Clients int
	// FirstDevice numbers this process's devices from it: their gateway
	// and source address follow the number, so the child processes of
	// one run share neither a device number nor a source address's ports.
	FirstDevice int

	// Progress, when set, receives a progress line (a terminal).
	Progress io.Writer
	// Args is recorded in the report as the command line that ran.
	Args []string
}

// DefaultConfig is the pairs scenario at its task-file size.
func DefaultConfig() Config {
	return Config{
		Scenario:           ScenarioPairs,
		Devices:            2000,
		Pairs:              100,
		GroupSize:          100,
		Groups:             1,
		Memberships:        1,
		Users:              2000,
		Messages:           5,
		Pending:            10,
		Sample:             100,
		Inflight:           8,
		Duration:           10 * time.Second,
		Size:               256,
		Senders:            20,
		ConnectConcurrency: 64,
		PerSource:          10000,
		DrainTimeout:       60 * time.Second,
		Settle:             2 * time.Second,
		BaselineMsgs:       200000,
		BaselineDuration:   3 * time.Second,
	}
}

// MinSize is the smallest body: the quotes and the send timestamp.
const MinSize = 2 + tsDigits

// Validate reports the first field that cannot work, named as the flag a
// user would change.
func (c *Config) Validate() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s %s", ErrConfig, field, why) }
	known := false
	for _, s := range Scenarios {
		known = known || s == c.Scenario
	}
	switch {
	case !known:
		return bad("scenario", fmt.Sprintf("%q is not one of %v", c.Scenario, Scenarios))
	case c.Scenario == ScenarioIdle && c.Devices < 1,
		c.Scenario == ScenarioStorm && c.Devices < 1:
		return bad("devices", "must be at least 1")
	case c.Scenario == ScenarioPairs && c.Pairs < 1:
		return bad("pairs", "must be at least 1")
	case c.Scenario == ScenarioGroups && c.GroupSize < 2:
		return bad("group-size", "must be at least 2 (a sender and a member)")
	case c.Scenario == ScenarioGroups && c.Groups < 1:
		return bad("groups", "must be at least 1")
	case c.Scenario == ScenarioOffline && c.Users < 1:
		return bad("users", "must be at least 1")
	case c.Scenario == ScenarioOffline && c.Messages < 1:
		return bad("messages", "must be at least 1")
	case c.Scenario == ScenarioStorm && c.Pending < 1,
		c.Scenario == ScenarioGroupStorm && c.Pending < 1:
		return bad("pending", "must be at least 1")
	case c.Scenario == ScenarioGroupStorm && (c.GroupSize < 2 || c.Groups < 1 || c.Memberships < 1):
		return bad("group-size", "must be at least 2, groups and memberships at least 1")
	case c.Scenario == ScenarioGroupStorm && (c.Groups*(c.GroupSize-1)%c.Memberships != 0 || c.Groups*(c.GroupSize-1)/c.Memberships < c.GroupSize-1):
		return bad("memberships", "must divide groups × (group-size − 1), leaving at least group-size − 1 users")
	case c.Sample < 0:
		return bad("sample", "must not be negative")
	case c.Clients < 0 || c.FirstDevice < 0:
		return bad("clients", "and the first device must not be negative")
	case c.Clients > 1 && c.Scenario != ScenarioIdle:
		return bad("clients", "above 1 is for the idle scenario")
	case c.Clients > c.Devices && c.Scenario == ScenarioIdle:
		return bad("clients", "must not be more than the devices")
	case c.Rate < 0:
		return bad("rate", "must not be negative")
	case c.Inflight < 0:
		return bad("inflight", "must not be negative")
	case c.Duration < 0:
		return bad("duration", "must not be negative")
	case c.Size != 0 && c.Size < MinSize:
		return bad("size", fmt.Sprintf("must be at least %d bytes (the send timestamp travels in the body)", MinSize))
	case c.Size > 60<<10:
		return bad("size", "must fit a frame (at most 60 KiB)")
	case c.Senders < 0:
		return bad("senders", "must not be negative")
	case c.ConnectConcurrency < 0:
		return bad("connect-concurrency", "must not be negative")
	}
	return nil
}

// withDefaults fills the zero values the comments promise.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Inflight == 0 {
		c.Inflight = d.Inflight
	}
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.Size == 0 {
		c.Size = d.Size
	}
	if c.Senders == 0 {
		c.Senders = d.Senders
	}
	if c.ConnectConcurrency == 0 {
		c.ConnectConcurrency = d.ConnectConcurrency
	}
	if c.PerSource == 0 {
		c.PerSource = d.PerSource
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	if c.Settle == 0 {
		c.Settle = d.Settle
	}
	if c.BaselineMsgs == 0 {
		c.BaselineMsgs = d.BaselineMsgs
	}
	if c.BaselineDuration == 0 {
		c.BaselineDuration = d.BaselineDuration
	}
	if c.BaselineConsumers == 0 {
		c.BaselineConsumers = min(c.Devices, 1000)
	}
	if c.Sample == 0 || c.Sample > c.Users {
		c.Sample = c.Users
	}
	return c
}

// Validate reports what is missing from the target.
func (t *Target) Validate() error {
	if len(t.URLs) == 0 {
		return fmt.Errorf("%w: url: at least one gateway WebSocket URL is needed", ErrConfig)
	}
	for _, u := range t.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "ws" && p.Scheme != "wss") || p.Host == "" {
			return fmt.Errorf("%w: url %q is not ws://host:port/path", ErrConfig, u)
		}
	}
	if t.Token == nil {
		return fmt.Errorf("%w: a token source is needed (--jwt-secret or --data)", ErrConfig)
	}
	if p := t.Placement; p != nil && (p.SenderRegion == "" || p.RecipientRegion == "" ||
		len(p.SenderURLs) == 0 || len(p.RecipientURLs) == 0 || p.Home == nil) {
		return fmt.Errorf("%w: a placement names both regions, their gateways and a directory", ErrConfig)
	}
	return nil
}

// loopback reports whether every URL names a loopback host, the only case
// where binding 127.0.0.x source addresses can reach it.
func (t *Target) loopback() bool {
	for _, u := range t.URLs {
		p, err := url.Parse(u)
		if err != nil {
			return false
		}
		h := p.Hostname()
		if h == "localhost" {
			continue
		}
		ip := net.ParseIP(h)
		if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}
