package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/secretfile"
	"github.com/switchboard-im/switchboard/streams"
)

// appConfig is everything the binary can be told. Flags and SWITCHBOARD_*
// variables map onto it in bindFlags, and nowhere else.
type appConfig struct {
	Gateway   gateway.Config
	Streams   streams.Options
	Regions   regionFlags // a regions deployment (regions.go)
	Functions functionsConfig

	// NATSURL, when set, uses that NATS instead of the embedded server.
	NATSURL string
	// NATSListen is the embedded server's client address.
	NATSListen string
	// NATSConfig is a nats-server config file for the embedded server.
	NATSConfig string
	// NATSKeys is the directory of the roles' NKey seeds (<role>.nk).
	// Empty means DataDir/nats, where the all-in-one makes them.
	NATSKeys string
	// NATSCreds, when set, authenticates with a JWT credentials file
	// instead of the role's seed.
	NATSCreds string
	// SyncAlways makes "sent" mean fsynced (embedded server only).
	SyncAlways bool
	// DataDir holds JetStream's files and the generated dev signing secret.
	DataDir string

	// JWTSecret (HS256) or JWTPublicKeyFile (Ed25519 PEM) verify tokens;
	// JWTPrivateKeyFile lets "token" mint Ed25519 tokens. With none set,
	// a random HS256 secret is kept in DataDir/jwt.secret.
	JWTSecret         string
	JWTPublicKeyFile  string
	JWTPrivateKeyFile string

	// DevTokens serves POST /v1/dev/token, a token for any user and
	// device, for the chat page in development. Unset (auto): on only for
	// the all-in-one with no token key configured (its own secret in
	// DataDir); explicitly on, it needs a key that can sign.
	DevTokens autoBool

	LogLevel  string
	LogFormat string
	// PprofListen serves Go's profiles (net/http/pprof) there when set:
	// loopback only, for finding where time and memory go.
	PprofListen string
}

// defaultAppConfig gives every setting its value, so that the logged
// configuration shows what applies rather than zeros that mean "default".
func defaultAppConfig() appConfig {
	c := appConfig{
		Gateway:    gateway.DefaultConfig(),
		Functions:  defaultFunctionsConfig(),
		NATSListen: "127.0.0.1:4222",
		DataDir:    "./data",
		LogLevel:   "info",
		LogFormat:  "text",
	}
	c.Gateway.MaxInflight = gateway.DefaultMaxInflight
	c.Streams.MaxAge = 30 * 24 * time.Hour
	c.Streams.DuplicateWindow = 2 * time.Minute
	return c
}

// listFlag is a comma-separated list flag that shows its value.
type listFlag struct {
	list *[]string
	set  func(v string) error
}

func (l listFlag) String() string {
	if l.list == nil || len(*l.list) == 0 {
		return "none"
	}
	return strings.Join(*l.list, ",")
}

func (l listFlag) Set(v string) error { return l.set(v) }

// bindFlags declares every flag. withNATS adds the embedded server's flags.
func bindFlags(fs *flag.FlagSet, c *appConfig, withEmbedded bool) {
	g := &c.Gateway
	fs.StringVar(&c.NATSURL, "nats", c.NATSURL, "NATS URL to use instead of the embedded server")
	if withEmbedded {
		fs.StringVar(&c.NATSListen, "nats-listen", c.NATSListen, "embedded NATS client address (port 0: pick one)")
		fs.StringVar(&c.NATSConfig, "nats-config", c.NATSConfig, "nats-server config file for the embedded server")
		fs.BoolVar(&c.SyncAlways, "sync-always", c.SyncAlways, "fsync every message before \"sent\" (embedded server)")
	}
	bindNATSAuthFlags(fs, c)
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory (JetStream store, dev signing secret, NATS keys)")
	fs.StringVar(&g.Listen, "listen", g.Listen, "gateway HTTP/WebSocket address")
	fs.StringVar(&g.MetricsListen, "metrics-listen", g.MetricsListen, "serve Prometheus metrics (/metrics) on this address, for operators only (empty: none)")
	fs.Var(listFlag{&g.AllowedOrigins, func(v string) error {
		g.AllowedOrigins = splitList(v)
		return nil
	}}, "origins", "comma-separated browser origins allowed besides same-origin (\"*\": any, dev only)")
	fs.IntVar(&g.MaxFrameBytes, "max-frame", g.MaxFrameBytes, "largest frame in bytes (bigger: close 1009)")
	fs.DurationVar(&g.PingInterval, "ping-interval", g.PingInterval, "how often to ping each connection")
	fs.DurationVar(&g.PongTimeout, "pong-timeout", g.PongTimeout, "close a connection silent for this long")
	fs.DurationVar(&g.WriteTimeout, "write-timeout", g.WriteTimeout, "bound on one frame write (slow reader: close 4001)")
	fs.DurationVar(&g.HandshakeTimeout, "handshake-timeout", g.HandshakeTimeout, "bound on reading the upgrade request")
	fs.Float64Var(&g.SendRate, "send-rate", g.SendRate, "send frames per second per connection")
	fs.IntVar(&g.SendBurst, "send-burst", g.SendBurst, "send frame burst per connection")
	fs.Float64Var(&g.FrameRate, "frame-rate", g.FrameRate, "other frames per second per connection")
	fs.IntVar(&g.FrameBurst, "frame-burst", g.FrameBurst, "other frame burst per connection")
	fs.Float64Var(&g.TypingRate, "typing-rate", g.TypingRate, "typing frames per second per connection")
	fs.IntVar(&g.TypingBurst, "typing-burst", g.TypingBurst, "typing frame burst per connection")
	fs.Float64Var(&g.SettingsRate, "settings-rate", g.SettingsRate, "settings frames per second per connection")
	fs.IntVar(&g.SettingsBurst, "settings-burst", g.SettingsBurst, "settings frame burst per connection")
	fs.Float64Var(&g.GroupRate, "group-rate", g.GroupRate, "group frames (operations) per second per connection")
	fs.IntVar(&g.GroupBurst, "group-burst", g.GroupBurst, "group frame burst per connection")
	fs.IntVar(&g.FloodStrikes, "flood-strikes", g.FloodStrikes, "rate-limited frames in a row before close 1008")
	fs.IntVar(&g.MaxInflight, "max-inflight", g.MaxInflight, "messages a device may hold unacked (0: 256)")
	fs.IntVar(&g.MaxPendingSends, "max-pending-sends", g.MaxPendingSends, "sends per connection awaiting their PubAck")
	fs.IntVar(&g.OutboundQueue, "outbound-queue", g.OutboundQueue, "frames queued per connection before close 4001")
	fs.DurationVar(&g.ShutdownTimeout, "shutdown-timeout", g.ShutdownTimeout, "bound on graceful shutdown")
	fs.IntVar(&g.MaxConcurrentStarts, "max-concurrent-starts", g.MaxConcurrentStarts, "sessions starting at once; the rest wait their turn (reconnect storms)")
	fs.DurationVar(&g.CursorDelay, "cursor-delay", g.CursorDelay, "how long a device's cursor save gathers further acks (0: save at once)")
	fs.DurationVar(&g.TickInterval, "tick-interval", g.TickInterval, "a busy device asks for delivered ticks at most once per interval, gathering its acks (0: at once)")
	fs.DurationVar(&g.TickQuiet, "tick-quiet", g.TickQuiet, "a device that has acked nothing for this long (or twice its usual gap between acks, if longer), or has acked all it was given and had nothing new for 100ms (at most this) or four times its usual gap between messages if longer, asks for its gathered ticks before the interval is over (0: wait it out)")
	fs.IntVar(&g.SharedCatchUps, "shared-catchups", g.SharedCatchUps, "sessions that may read their backlogs on their own at once; past it they share one reader (0: always share)")
	fs.DurationVar(&g.SweepInterval, "sweep-interval", g.SweepInterval, "how often each session checks its inbox for a lost live copy")
	fs.DurationVar(&g.PresenceTTL, "presence-ttl", g.PresenceTTL, "a device's presence lease: a dead gateway's devices go offline within it")
	fs.IntVar(&g.MaxPresenceSubs, "max-presence-subs", g.MaxPresenceSubs, "users one connection may follow")
	fs.DurationVar(&g.FunctionTimeout, "function-timeout", g.FunctionTimeout, "bound on a request to a worker function")
	if withEmbedded {
		bindStreamFlags(fs, &c.Streams)
		bindMediaBucketFlags(fs, &c.Functions.Media)
	}
	bindRegionFlags(fs, &c.Regions)
	if withEmbedded {
		bindFunctionFlags(fs, &c.Functions, true)
	}
	bindMediaFlags(fs, &c.Functions)
	bindKeyFlags(fs, c)
	fs.Var(&c.DevTokens, "dev-tokens", "serve POST /v1/dev/token {\"user\",\"device\"}: a token for anyone who asks, for the chat page in development "+
		"(default: on for the all-in-one when no --jwt-secret or key is given)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.PprofListen, "pprof", c.PprofListen, "serve Go profiles (/debug/pprof/) on this loopback address")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
}

// autoBool is a bool flag that knows whether it was given, for a default
// that depends on other flags.
type autoBool struct{ set, on bool }

func (b *autoBool) String() string {
	if b == nil || !b.set {
		return "auto"
	}
	return strconv.FormatBool(b.on)
}

func (b *autoBool) Set(v string) error {
	on, err := strconv.ParseBool(v)
	if err != nil {
		return err
	}
	b.set, b.on = true, on
	return nil
}

func (b *autoBool) IsBoolFlag() bool { return true }

// or is the flag's value, or def when it was not given.
func (b autoBool) or(def bool) bool {
	if b.set {
		return b.on
	}
	return def
}

// devTokens says whether to serve development tokens: as --dev-tokens
// says, else only for the all-in-one signing with its own secret.
func (c *appConfig) devTokens(allInOne bool) bool {
	return c.DevTokens.or(allInOne && c.JWTSecret == "" && c.JWTPublicKeyFile == "" && c.JWTPrivateKeyFile == "")
}

// bindStreamFlags declares the stream settings: the all-in-one and
// `switchboard setup` apply them; gateways only use the streams.
func bindStreamFlags(fs *flag.FlagSet, o *streams.Options) {
	fs.DurationVar(&o.MaxAge, "max-age", o.MaxAge, "keep messages this long (0: keep what INBOX has, 30 days for a new one)")
	fs.DurationVar(&o.DuplicateWindow, "dedup-window", o.DuplicateWindow, "remember message ids this long (0: keep what INBOX has, 2m for a new one)")
	fs.IntVar(&o.Replicas, "replicas", o.Replicas, "stream replicas (0: keep what the streams have, 1 for new ones)")
}

func bindNATSAuthFlags(fs *flag.FlagSet, c *appConfig) {
	fs.StringVar(&c.NATSKeys, "nats-keys", c.NATSKeys, "directory of the NATS NKey seeds, one per role (default: <data>/nats)")
	fs.StringVar(&c.NATSCreds, "nats-creds", c.NATSCreds, "a NATS JWT credentials file to use instead of the role's NKey")
}

// natsKeysDir is where the roles' seeds are.
func (c *appConfig) natsKeysDir() string {
	if c.NATSKeys != "" {
		return c.NATSKeys
	}
	return filepath.Join(c.DataDir, "nats")
}

// bindKeyFlags declares the token flags, shared by the gateway and
// "token" so the tokens it mints are ones the gateway accepts.
func bindKeyFlags(fs *flag.FlagSet, c *appConfig) {
	fs.StringVar(&c.JWTSecret, "jwt-secret", c.JWTSecret, "HS256 secret (prefer SWITCHBOARD_JWT_SECRET; never logged)")
	fs.StringVar(&c.JWTPublicKeyFile, "jwt-public-key", c.JWTPublicKeyFile, "Ed25519 public key PEM file")
	fs.StringVar(&c.JWTPrivateKeyFile, "jwt-private-key", c.JWTPrivateKeyFile, "Ed25519 private key PEM file (to mint tokens)")
	g := &c.Gateway
	fs.StringVar(&g.JWTAudience, "jwt-audience", g.JWTAudience, "tokens must name this audience (aud); \"token\" sets it (empty: not checked)")
	fs.StringVar(&g.JWTIssuer, "jwt-issuer", g.JWTIssuer, "tokens must name this issuer (iss); \"token\" sets it (empty: not checked)")
	fs.DurationVar(&g.JWTMaxTTL, "jwt-max-ttl", g.JWTMaxTTL, "refuse tokens that live longer (exp - iat, or exp - now without iat)")
}

// parseFlags parses args, then fills every flag not given on the command
// line from SWITCHBOARD_<FLAG> (dashes become underscores). An argument
// that is not a flag is refused.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseFlagsArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// parseFlagsArgs is parseFlags for a command that takes arguments after
// its flags (fs.Args()).
func parseFlagsArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := "SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func newLogger(c *appConfig, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch c.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format: %q is not text or json", c.LogFormat)
}

// logConfig logs the effective configuration with secrets redacted.
func logConfig(log *slog.Logger, fs *flag.FlagSet) {
	var attrs []any
	fs.VisitAll(func(f *flag.Flag) {
		attrs = append(attrs, slog.String(f.Name, redactFlag(f.Name, f.Value.String())))
	})
	log.Info("config", attrs...)
}

// redactFlag is flag name's value v as it may be shown: a secret's
// hidden, a URL's credentials hidden.
func redactFlag(name, v string) string {
	switch {
	case strings.Contains(name, "secret") && v != "":
		return "[redacted]"
	case strings.Contains(v, "://"):
		// A list of servers (--nats a,b,c): each its own URL.
		urls := strings.Split(v, ",")
		for i, u := range urls {
			urls[i] = redactURL(strings.TrimSpace(u))
		}
		return strings.Join(urls, ",")
	}
	return v
}

// redactURL hides what of a URL can hold a credential: the user info
// (user:password or a token), the query, and the path of one that is
// not a NATS or MinIO server's (a webhook's path is often its token).
func redactURL(v string) string {
	u, err := url.Parse(v)
	if err != nil {
		return "[unparsable url]"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	if (u.Scheme == "http" || u.Scheme == "https") && u.Path != "" && u.Path != "/" {
		u.Path, u.RawPath = "/redacted", ""
	}
	return u.String()
}

// loadKeys builds the token keys from the config. With nothing configured it
// uses DataDir/jwt.secret, creating it on first use, so a newcomer's
// "switchboard" and "switchboard token" agree with no setup.
func loadKeys(c *appConfig, create bool) (*gateway.Keys, error) {
	switch {
	case c.JWTSecret != "":
		return gateway.NewHS256Keys([]byte(c.JWTSecret))
	case c.JWTPublicKeyFile != "" || c.JWTPrivateKeyFile != "":
		var pub, priv []byte
		var err error
		if c.JWTPublicKeyFile != "" {
			if pub, err = os.ReadFile(c.JWTPublicKeyFile); err != nil {
				return nil, err
			}
		}
		if c.JWTPrivateKeyFile != "" {
			if priv, err = os.ReadFile(c.JWTPrivateKeyFile); err != nil {
				return nil, err
			}
		}
		return gateway.NewEd25519Keys(pub, priv)
	}
	path := filepath.Join(c.DataDir, "jwt.secret")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !create {
		// A fresh secret here would sign tokens no server accepts, or
		// make a gateway refuse every token the others accept.
		return nil, fmt.Errorf("no token key: %s does not exist. The all-in-one makes it on its first start; "+
			"give --data the server's data directory, or --jwt-secret (or --jwt-public-key) as the server has it: "+
			"every gateway must verify with the same key", path)
	}
	if errors.Is(err, os.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		b = []byte(hex.EncodeToString(raw))
		err := secretfile.Create(path, b)
		if errors.Is(err, os.ErrExist) {
			return loadKeys(c, false) // made meanwhile by another process
		}
		if err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return gateway.NewHS256Keys([]byte(strings.TrimSpace(string(b))))
}

func tokenTTLFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("ttl", 24*time.Hour, "token lifetime")
}

func newJetStream(nc *nats.Conn) (jetstream.JetStream, error) { return jetstream.New(nc) }
