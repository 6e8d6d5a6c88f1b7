package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// ErrConfig wraps every invalid configuration value; the message names the
// field.
var ErrConfig = errors.New("gateway: invalid config")

// Config is the gateway's configuration. DefaultConfig gives working values;
// Validate names the first bad field.
type Config struct {
	// Listen is the HTTP/WebSocket address, e.g. ":8080" or "127.0.0.1:0".
	Listen string
	// MetricsListen is where Prometheus metrics are served (see
	// Server.ServeMetrics), apart from Listen: they tell anyone who reads
	// them how loaded the gateway is and what is failing, so they are for
	// operators only. Loopback by default; empty serves no metrics.
	MetricsListen string
	// AllowedOrigins lists browser origins (scheme://host[:port]) allowed
	// besides same-origin. Requests with no Origin header (native apps) are
	// always allowed; a request with any other Origin gets 403. "*" allows
	// every origin and is meant for local development only.
	AllowedOrigins []string

	// JWTAudience, when set, must be one of a token's aud, and JWTIssuer,
	// when set, its iss. Empty checks nothing.
	JWTAudience string
	JWTIssuer   string
	// JWTMaxTTL is the longest a token may live: exp - iat, or exp - now
	// for a token without iat. A token that says it lives longer is
	// refused (bad_token). Must be positive.
	JWTMaxTTL time.Duration

	// MaxFrameBytes is the largest frame accepted; a larger one closes the
	// connection with 1009. Zero is invalid.
	MaxFrameBytes int
	// PingInterval is how often the server pings each connection.
	PingInterval time.Duration
	// PongTimeout closes a connection from which nothing (pong or frame) has
	// arrived for this long (or from 7/8 of it: a busy connection's
	// deadline is moved only once it has run down an eighth). Must exceed
	// PingInterval. On Linux it also bounds how long bytes the gateway
	// sent may go unacknowledged before the kernel drops the connection
	// (listener.go).
	PongTimeout time.Duration
	// WriteTimeout bounds one write to the socket (the frames queued
	// together, up to 64 KiB; from 7/8 of it, as PongTimeout); a client
	// that does not read for this long is closed with 4001 (slow).
	WriteTimeout time.Duration
	// HandshakeTimeout bounds reading the HTTP upgrade request (slowloris).
	HandshakeTimeout time.Duration

	// SendRate is the sustained send frames per second per connection and
	// SendBurst the bucket size. Other frames (ack, read) have their own
	// bucket of FrameRate/FrameBurst.
	SendRate   float64
	SendBurst  int
	FrameRate  float64
	FrameBurst int
	// TypingRate and TypingBurst limit typing frames per connection; they
	// fan out to every device of the recipient, so they get their own,
	// tighter bucket.
	TypingRate  float64
	TypingBurst int
	// SettingsRate and SettingsBurst limit settings frames per
	// connection; each that changes something is a KV write of up to a
	// frame's size, so they get their own, tightest bucket.
	SettingsRate  float64
	SettingsBurst int
	// GroupRate and GroupBurst limit group frames per connection: each is
	// a request to the groups function, and a change is a stored event
	// fanned out to every member. Zero means 2/s and 10.
	GroupRate  float64
	GroupBurst int
	// FloodStrikes is how many rate-limited frames in a row close the
	// connection with 1008 "flood".
	FloodStrikes int

	// MaxInflight is how many messages one device may hold delivered but not
	// acked. Past it, delivery waits for acks. Zero means 256.
	MaxInflight int
	// MaxPendingSends is how many sends per connection may await their
	// JetStream PubAck; past it the gateway stops reading from that socket.
	MaxPendingSends int
	// OutboundQueue is the per-connection queue of frames waiting to be
	// written. Overflow closes the connection with 4001 (slow); the messages
	// stay pending in JetStream. It must hold at least MaxInflight +
	// MaxPendingSends + 64 frames: all the gateway can owe a client at once.
	OutboundQueue int
	// ShutdownTimeout bounds a graceful shutdown: finishing in-flight
	// PubAcks and closing every connection with 1012.
	ShutdownTimeout time.Duration
	// KickTimeout bounds how long a new session waits for an older session
	// of the same device (on any gateway) to close.
	KickTimeout time.Duration

	// CursorDelay is how long a device's cursor save waits after its acks,
	// gathering those that follow. After a gateway crash, what the device
	// acked in the last CursorDelay comes again on its next connection
	// (the SDK drops the repeats). Zero saves at once.
	CursorDelay time.Duration
	// TickInterval is how long a busy device's delivered ticks gather
	// acks: after asking for the ticks of what it acked, a device asks
	// again only once this has passed, so a steady stream of messages
	// costs one receipt per sender (and one position per group) per
	// interval. The first ack after a quiet spell is asked for at once.
	// Zero asks at once every time.
	TickInterval time.Duration
	// TickQuiet ends the gathering early once no ack has come for this
	// long: the last messages of a burst are ticked soon after it, not
	// up to TickInterval later. Acks the Go SDK gathers (250 ms) come
	// well inside this while messages flow, so a steady stream still
	// costs one request per interval; a device whose acks come more
	// than half of it apart waits twice their usual gap instead
	// (cadence), so a stream of a message every 600 ms is not ticked
	// after each. A device that has acked all it was given ends its
	// burst sooner, once its deliveries pause for 100 ms (at most this),
	// or four times their usual gap if longer. Zero waits out the
	// interval.
	TickQuiet time.Duration
	// SharedCatchUps is how many sessions may read their backlogs from the
	// stream on their own at once; past it they share one reader (see
	// backlog.go). 0 shares every read.
	SharedCatchUps int
	// SweepInterval is how often each session checks its inbox in the
	// stream for a live copy lost with nothing to report it.
	SweepInterval time.Duration
	// PresenceTTL is the life of a device's presence lease: a gateway that
	// dies without reporting has its devices shown offline within it. Live
	// sessions refresh the lease three times per TTL. At least 1 s.
	PresenceTTL time.Duration
	// MaxPresenceSubs bounds the users one connection follows.
	MaxPresenceSubs int
	// FunctionTimeout bounds a request to a worker function (presence,
	// receipts status, media grant) and a settings write.
	FunctionTimeout time.Duration
	// PubAckWait is how long a write to JetStream waits for its PubAck,
	// when nothing says the stream changed leader, before it is published
	// again (doubling per attempt; see pubqueue.go). Zero is 1 s.
	PubAckWait time.Duration
	// MaxConcurrentStarts bounds the sessions starting at once (kick,
	// cursor, subscriptions, welcome); the rest wait their turn, up to
	// StartTimeout.
	MaxConcurrentStarts int
	// StartTimeout bounds a session start, waiting for a turn included.
	StartTimeout time.Duration

	// Regions places the gateway in a regions deployment (regions.go);
	// the zero value is a single region.
	Regions RegionsConfig
}

// DefaultConfig returns the configuration used when nothing is set.
func DefaultConfig() Config {
	return Config{
		Listen:           ":8080",
		MetricsListen:    "127.0.0.1:9090",
		JWTMaxTTL:        DefaultJWTMaxTTL,
		MaxFrameBytes:    64 << 10,
		PingInterval:     25 * time.Second,
		PongTimeout:      60 * time.Second,
		WriteTimeout:     10 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		SendRate:         50,
		SendBurst:        200,
		FrameRate:        500,
		FrameBurst:       1000,
		FloodStrikes:     50,
		TypingRate:       2,
		TypingBurst:      5,
		SettingsRate:     1,
		SettingsBurst:    5,
		GroupRate:        2,
		GroupBurst:       10,
		MaxPendingSends:  256,
		OutboundQueue:    1024,
		ShutdownTimeout:  10 * time.Second,
		KickTimeout:      3 * time.Second,
		PresenceTTL:      60 * time.Second,
		SweepInterval:    2 * time.Minute,
		CursorDelay:      time.Second,
		TickInterval:     time.Second,
		TickQuiet:        500 * time.Millisecond,
		SharedCatchUps:   32,
		MaxPresenceSubs:  1024,
		FunctionTimeout:  3 * time.Second,

		MaxConcurrentStarts: 4096,
		StartTimeout:        30 * time.Second,
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s %s", ErrConfig, field, why) }
	switch {
	case c.Listen == "":
		return bad("Listen", "is empty")
	case c.MetricsListen != "" && !isHostPort(c.MetricsListen):
		return bad("MetricsListen", "must be host:port")
	case c.JWTMaxTTL <= 0:
		return bad("JWTMaxTTL", "must be positive")
	case c.MaxFrameBytes < 256 || c.MaxFrameBytes > MaxFrameLimit:
		return bad("MaxFrameBytes", fmt.Sprintf("must be between 256 B and %d B (a stored message is at most 1 MiB)", MaxFrameLimit))
	case c.PingInterval <= 0:
		return bad("PingInterval", "must be positive")
	case c.PongTimeout <= c.PingInterval:
		return bad("PongTimeout", "must exceed PingInterval")
	case c.WriteTimeout <= 0:
		return bad("WriteTimeout", "must be positive")
	case c.HandshakeTimeout <= 0:
		return bad("HandshakeTimeout", "must be positive")
	case c.SendRate <= 0 || c.SendBurst < 1:
		return bad("SendRate/SendBurst", "must be positive")
	case c.FrameRate <= 0 || c.FrameBurst < 1:
		return bad("FrameRate/FrameBurst", "must be positive")
	case c.TypingRate <= 0 || c.TypingBurst < 1:
		return bad("TypingRate/TypingBurst", "must be positive")
	case c.SettingsRate <= 0 || c.SettingsBurst < 1:
		return bad("SettingsRate/SettingsBurst", "must be positive")
	case c.GroupRate < 0 || c.GroupBurst < 0:
		return bad("GroupRate/GroupBurst", "must not be negative")
	case c.FloodStrikes < 1:
		return bad("FloodStrikes", "must be at least 1")
	case c.MaxInflight < 0 || c.MaxInflight > 100000:
		return bad("MaxInflight", "must be between 0 and 100000")
	case c.MaxPendingSends < 1:
		return bad("MaxPendingSends", "must be at least 1")
	case c.OutboundQueue < c.minOutboundQueue():
		// Everything the gateway may owe a client at once must fit, or a
		// prompt reader with a backlog would be closed as slow.
		return bad("OutboundQueue", fmt.Sprintf("must be at least MaxInflight + MaxPendingSends + 64 = %d", c.minOutboundQueue()))
	case c.ShutdownTimeout <= 0:
		return bad("ShutdownTimeout", "must be positive")
	case c.KickTimeout <= 0:
		return bad("KickTimeout", "must be positive")
	case c.SharedCatchUps < 0:
		return bad("SharedCatchUps", "must not be negative")
	case c.CursorDelay < 0:
		return bad("CursorDelay", "must not be negative")
	case c.TickInterval < 0 || c.TickInterval > time.Minute:
		return bad("TickInterval", "must be between 0 and 1m")
	case c.TickQuiet < 0:
		return bad("TickQuiet", "must not be negative")
	case c.SweepInterval < time.Second:
		return bad("SweepInterval", "must be at least 1s")
	case c.PresenceTTL < time.Second:
		return bad("PresenceTTL", "must be at least 1s (the server's smallest message TTL)")
	case c.MaxPresenceSubs < 1:
		return bad("MaxPresenceSubs", "must be positive")
	case c.FunctionTimeout <= 0:
		return bad("FunctionTimeout", "must be positive")
	case c.PubAckWait < 0:
		return bad("PubAckWait", "must not be negative")
	case c.MaxConcurrentStarts < 1:
		return bad("MaxConcurrentStarts", "must be positive")
	case c.StartTimeout <= 0:
		return bad("StartTimeout", "must be positive")
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if _, err := normalizeOrigin(o); err != nil {
			return bad("AllowedOrigins", fmt.Sprintf("entry %q: %v", o, err))
		}
	}
	return c.Regions.validate()
}

func isHostPort(addr string) bool {
	_, _, err := net.SplitHostPort(addr)
	return err == nil
}

// DefaultJWTMaxTTL is JWTMaxTTL by default.
const DefaultJWTMaxTTL = 30 * 24 * time.Hour

// TokenRules are the checks the gateway makes of a token beyond its
// signature and expiry.
func (c *Config) TokenRules() TokenRules {
	return TokenRules{Audience: c.JWTAudience, Issuer: c.JWTIssuer, MaxTTL: c.JWTMaxTTL}
}

// MaxFrameLimit is the largest MaxFrameBytes allowed: a stored message
// (body plus headers) must fit JetStream's 1 MiB message limit.
const MaxFrameLimit = 1<<20 - 16<<10

func (c *Config) minOutboundQueue() int {
	return c.maxInflight() + c.MaxPendingSends + 64
}

// groupBudget is what a device may hold unacked of all the groups it
// reads from their logs together (each at most groupWindow): what the
// outbound queue holds past all else the gateway can owe a client
// (minOutboundQueue), and at least one group's window, which the
// queue's margin takes.
func (c *Config) groupBudget() int {
	return max(groupWindow, c.OutboundQueue-c.minOutboundQueue())
}

// DefaultMaxInflight is MaxInflight when not set.
const DefaultMaxInflight = 256

func (c *Config) maxInflight() int {
	if c.MaxInflight == 0 {
		return DefaultMaxInflight
	}
	return c.MaxInflight
}

// normalizeOrigin returns scheme://host:port in lower case with the default
// port made explicit, so "https://A.example" and "https://a.example:443"
// compare equal and "http://a.example" does not.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", errors.New("scheme must be http or https")
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("must be scheme://host[:port] only")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + ":" + port, nil
}

func (c *Config) groupRate() float64 {
	if c.GroupRate <= 0 {
		return 2
	}
	return c.GroupRate
}

func (c *Config) groupBurst() int {
	if c.GroupBurst <= 0 {
		return 10
	}
	return c.GroupBurst
}
