package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/gateway"
	"github.com/valyala/fasthttp"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/functions/groups"
	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/functions/push"
	"github.com/switchboard-im/switchboard/functions/receipts"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/media"
)

// functionNames are the worker functions this binary can run, in start
// order.
var functionNames = []string{"receipts", "presence", "push", "media", "groups"}

// retiredSync is the function that made senders' own copies before the
// gateways did; naming it gets errRetiredSync.
const retiredSync = "sync"

var errRetiredSync = errors.New(`the "sync" function is retired: gateways store senders' own copies now; stop running it`)

// functionsConfig is what the worker functions are told.
type functionsConfig struct {
	// Run lists the functions the all-in-one runs in-process.
	Run    []string
	Push   push.Config
	Groups groups.Config
	Media  media.Config
	// MediaLimits are the per-class size limits in bytes (the types stay
	// media's defaults).
	MediaLimits map[media.Class]*int64
	// MediaKeyFile holds the embedded store's URL signing key; empty means
	// <data>/media.key. Made on first use.
	MediaKeyFile string
	// MediaListen is where a media function running alone serves the
	// embedded store's signed URLs.
	MediaListen string
	// MediaUploadTimeout bounds one upload to the embedded store: only a
	// request whose signed URL verifies gets it.
	MediaUploadTimeout time.Duration
}

func defaultFunctionsConfig() functionsConfig {
	c := functionsConfig{Run: functionNames, Push: push.DefaultConfig(), Groups: groups.DefaultConfig(), Media: media.DefaultConfig(), MediaUploadTimeout: 10 * time.Minute,
		MediaLimits: map[media.Class]*int64{}}
	c.Media.Limits = media.DefaultLimits()
	for class, l := range c.Media.Limits {
		size := l.MaxSize
		c.MediaLimits[class] = &size
	}
	return c
}

// mediaConfig returns the media config with the per-class limits applied.
func (c *functionsConfig) mediaConfig() media.Config {
	m := c.Media
	m.Limits = map[media.Class]media.Limit{}
	for class, l := range media.DefaultLimits() {
		l.MaxSize = *c.MediaLimits[class]
		m.Limits[class] = l
	}
	return m
}

func bindFunctionFlags(fs *flag.FlagSet, c *functionsConfig, withRun bool) {
	if withRun {
		fs.Var(listFlag{&c.Run, func(v string) error {
			c.Run = nil
			if v == "none" {
				return nil
			}
			for _, n := range splitList(v) {
				if n == retiredSync {
					return errRetiredSync
				}
				if !slices.Contains(functionNames, n) {
					return fmt.Errorf("unknown function %q", n)
				}
				c.Run = append(c.Run, n)
			}
			return nil
		}}, "functions", "worker functions to run in-process, comma-separated (receipts,presence,push,media,groups; \"none\" for none)")
	}
	bindPushFlags(fs, c)
	bindGroupsFlags(fs, c)
}

// bindGroupsFlags declares the groups function's flags.
func bindGroupsFlags(fs *flag.FlagSet, c *functionsConfig) {
	fs.IntVar(&c.Groups.MaxMembers, "group-max-members", c.Groups.MaxMembers, "most members a group may have")
	fs.IntVar(&c.Groups.LogMembers, "group-log-members", c.Groups.LogMembers,
		"groups reaching this many members are read from their log, not copied into each member's inbox (docs/GROUP-LOG.md; 0: never)")
}

// bindPushFlags declares the push function's flags.
func bindPushFlags(fs *flag.FlagSet, c *functionsConfig) {
	p := &c.Push
	fs.StringVar(&p.WebhookURL, "push-webhook", p.WebhookURL, "URL the push function POSTs notifications to (empty: push off)")
	fs.StringVar(&p.WebhookSecret, "push-webhook-secret", p.WebhookSecret, "sent as Authorization: Bearer to the webhook (never logged)")
	fs.DurationVar(&p.Window, "push-window", p.Window, "at most one push per user per window")
	fs.DurationVar(&p.Timeout, "push-timeout", p.Timeout, "bound on one webhook call")
	fs.IntVar(&p.MaxAttempts, "push-max-attempts", p.MaxAttempts, "webhook attempts before a notification is dead-lettered")
}

func bindMediaFlags(fs *flag.FlagSet, c *functionsConfig) {
	m := &c.Media
	fs.StringVar(&m.S3.Endpoint, "media-s3-endpoint", m.S3.Endpoint, "S3/MinIO host:port for media (empty: the embedded JetStream object store)")
	fs.StringVar(&m.S3.PublicEndpoint, "media-s3-public-endpoint", m.S3.PublicEndpoint, "S3 host:port as clients reach it, if different")
	fs.StringVar(&m.S3.AccessKey, "media-s3-access-key", m.S3.AccessKey, "S3 access key")
	fs.StringVar(&m.S3.SecretKey, "media-s3-secret-key", m.S3.SecretKey, "S3 secret key (never logged)")
	fs.StringVar(&m.S3.Bucket, "media-s3-bucket", m.S3.Bucket, "S3 bucket, created if missing")
	fs.StringVar(&m.S3.Region, "media-s3-region", m.S3.Region, "S3 region")
	fs.BoolVar(&m.S3.TLS, "media-s3-tls", m.S3.TLS, "use https to S3")
	fs.StringVar(&m.BaseURL, "media-base-url", m.BaseURL, "http(s)://host:port clients reach this binary at, for embedded media URLs (default: from --listen)")
	fs.DurationVar(&m.UploadExpiry, "media-upload-expiry", m.UploadExpiry, "life of an upload URL (at most 7 days)")
	fs.DurationVar(&m.DownloadExpiry, "media-download-expiry", m.DownloadExpiry, "life of a download URL (at most 7 days)")
	fs.DurationVar(&m.OrphanAge, "media-orphan-age", m.OrphanAge, "remove uploads no message referenced after this")
	fs.DurationVar(&c.MediaUploadTimeout, "media-upload-timeout", c.MediaUploadTimeout, "bound on one upload to the embedded media store")
	fs.Int64Var(&m.DailyQuota, "media-daily-quota", m.DailyQuota, "bytes of uploads one user may start per UTC day (negative: no quota)")
	fs.StringVar(&c.MediaKeyFile, "media-signing-key", c.MediaKeyFile, "file of the embedded store's URL signing key, made on first use; every media instance needs the same one (default: <data>/media.key)")
	for _, class := range []media.Class{media.ClassImage, media.ClassVideo, media.ClassAudio, media.ClassDocument} {
		fs.Int64Var(c.MediaLimits[class], "media-max-"+string(class), *c.MediaLimits[class], "largest "+string(class)+" upload in bytes")
	}
}

// bindMediaBucketFlags declares the settings of the media buckets, which
// the operator makes (setup, the all-in-one): how long an object outlives
// the last message that named it.
func bindMediaBucketFlags(fs *flag.FlagSet, m *media.Config) {
	fs.DurationVar(&m.ReferenceAge, "media-reference-age", m.ReferenceAge, "keep an object this long after the last message that named it (0: a day past --max-age)")
}

// stopper stops a running function.
type stopper interface{ Stop() }

// startFunctions starts the named functions, each on its own NATS
// connection from connect (one connection shared with the gateway would
// serialise every function's traffic behind the gateway's), and returns a
// func that stops them in reverse order and closes their connections, and
// the media service if it runs. push without a webhook is skipped with a
// log line, so the all-in-one runs with no setup.
func startFunctions(ctx context.Context, connect func(natsauth.Role) (*nats.Conn, error), names []string, c *functionsConfig, log *slog.Logger) (func(), *media.Service, error) {
	var running []stopper
	var conns []*nats.Conn
	var mediaSvc *media.Service
	stop := func() {
		for i := len(running) - 1; i >= 0; i-- {
			running[i].Stop()
		}
		for _, nc := range conns {
			_ = nc.Drain()
		}
		for _, nc := range conns {
			waitClosed(nc, 5*time.Second)
		}
	}
	for _, name := range names {
		if name == "push" && c.Push.WebhookURL == "" {
			log.Info("push function off: no --push-webhook")
			continue
		}
		nc, err := connect(natsauth.Role(name))
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("function %s: nats: %w", name, err)
		}
		conns = append(conns, nc)
		js, err := newJetStream(nc)
		if err != nil {
			stop()
			return nil, nil, err
		}
		var s stopper
		switch name {
		case "receipts":
			s, err = receipts.Start(ctx, nc, js, receipts.DefaultConfig(), log)
		case "presence":
			s, err = presence.Start(ctx, nc, js, presence.DefaultConfig(), log)
		case "media":
			mc := c.mediaConfig()
			if mc.Embedded() {
				if mc.SigningKey, err = media.LoadOrCreateSigningKey(c.MediaKeyFile); err != nil {
					break
				}
			}
			if mediaSvc, err = media.New(ctx, nc, js, mc, log); err == nil {
				s = mediaService{mediaSvc}
			}
		case "push":
			s, err = push.Start(ctx, nc, js, c.Push, log)
		case "groups":
			s, err = groups.Start(ctx, nc, js, c.Groups, log)
		default:
			err = fmt.Errorf("unknown function %q", name)
		}
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("function %s: %w", name, err)
		}
		log.Info("function started", "name", name)
		running = append(running, s)
	}
	return stop, mediaSvc, nil
}

// mediaService adapts media.Service, whose Stop returns an error.
type mediaService struct{ *media.Service }

func (m mediaService) Stop() { _ = m.Service.Stop() }

// runFunction runs one worker function alone against --nats, until a
// signal. Any number of these share the work with the in-process ones.
func runFunction(args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprint(os.Stderr, `usage: switchboard function NAME --nats URL [flags]

Runs one worker function alone; any number of instances share the work.
  receipts  delivered and read ticks for senders, and message status
  presence  who is online and last seen, from the gateways' leases
  push      wakes offline devices through --push-webhook
  media     upload tickets and download URLs (--media-listen serves the
            embedded store's signed URLs)
  groups    groups' membership, and their messages fanned out to members

Run "switchboard function NAME -h" for that function's flags.
`)
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] == "" || args[0][0] == '-' {
		return fmt.Errorf("function: name one of %v: switchboard function NAME --nats URL", functionNames)
	}
	name, args := args[0], args[1:]
	if name == retiredSync {
		return fmt.Errorf("function: %w", errRetiredSync)
	}
	if !slices.Contains(functionNames, name) {
		return fmt.Errorf("function: unknown function %q (one of %v)", name, functionNames)
	}
	c := defaultAppConfig()
	fs := flag.NewFlagSet("function "+name, flag.ContinueOnError)
	fs.StringVar(&c.NATSURL, "nats", "", "NATS URL (required)")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory, whose nats/ holds the NATS keys unless --nats-keys says otherwise")
	bindNATSAuthFlags(fs, &c)
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	// Only this function's own flags.
	switch name {
	case "push":
		bindPushFlags(fs, &c.Functions)
	case "groups":
		bindGroupsFlags(fs, &c.Functions)
	case "media":
		bindMediaFlags(fs, &c.Functions)
		fs.StringVar(&c.Functions.MediaListen, "media-listen", "", "address to serve the embedded store's signed upload and download URLs on")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.Functions.MediaKeyFile == "" {
		c.Functions.MediaKeyFile = filepath.Join(c.DataDir, "media.key")
	}
	c.NATSKeys = c.natsKeysDir() // logged as it applies
	log, err := newLogger(&c, os.Stderr)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	logConfig(log, fs)
	if c.NATSURL == "" {
		return errors.New("function: --nats is required")
	}
	if name == "push" && c.Functions.Push.WebhookURL == "" {
		return errors.New("function push: --push-webhook is required")
	}
	connect := func(r natsauth.Role) (*nats.Conn, error) {
		ro, err := natsauth.RoleOptions(r, c.natsKeysDir(), c.NATSCreds)
		if err != nil {
			return nil, err
		}
		return nats.Connect(c.NATSURL, append(append(ro, contract.ReconnectOptions()...), nats.Name("switchboard-"+string(r)))...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The embedded store's signed URLs are served where the store's key
	// is: here, not by gateways. Listen first: the URLs name the address.
	var blobs net.Listener
	if name == "media" && c.Functions.Media.Embedded() {
		if c.Functions.MediaListen == "" {
			return errors.New("function media: the embedded store needs --media-listen, where clients upload and download")
		}
		if blobs, err = net.Listen("tcp", c.Functions.MediaListen); err != nil {
			return fmt.Errorf("--media-listen: %w", err)
		}
		defer blobs.Close()
		if c.Functions.Media.BaseURL == "" {
			c.Functions.Media.BaseURL = baseURL(blobs.Addr())
		}
	}
	stop, mediaSvc, err := startFunctions(ctx, connect, []string{name}, &c.Functions, log)
	if err != nil {
		return err
	}
	if blobs != nil {
		srv := serveBlobs(blobs, mediaSvc.API(), c.Functions.MediaUploadTimeout, log)
		defer func() { _ = srv.Shutdown() }()
	}
	s := <-sig
	log.Info("shutting down", "signal", s.String())
	go exitOnSecondSignal(sig, log)
	stop()
	log.Info("stopped")
	return nil
}

// serveBlobs serves the embedded store's signed URLs on ln, with the
// gateway's limits: only an upload whose URL verifies (from its header)
// may take longer or send more than a handshake's worth.
func serveBlobs(ln net.Listener, api *media.API, uploadTimeout time.Duration, log *slog.Logger) *fasthttp.Server {
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if !strings.HasPrefix(string(ctx.Path()), media.PathBlob) {
				ctx.SetStatusCode(fasthttp.StatusNotFound)
				return
			}
			api.Blob(ctx)
		},
		HeaderReceived:               api.HeaderConfig(uploadTimeout),
		Name:                         "switchboard",
		ReadTimeout:                  10 * time.Second,
		WriteTimeout:                 10 * time.Second,
		MaxRequestBodySize:           64 << 10,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		SecureErrorLogMessage:        true,
		Logger:                       gateway.HTTPLogger(log),
	}
	log.Info("media URLs", "addr", ln.Addr().String())
	go func() { _ = srv.Serve(ln) }()
	return srv
}
