package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/embednats"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/media"
	"github.com/switchboard-im/switchboard/streams"
)

// runServe runs the all-in-one (embedded NATS unless --nats is given) or,
// with allInOne false, a gateway against --nats.
func runServe(args []string, allInOne bool) error {
	c := defaultAppConfig()
	name := "serve"
	if !allInOne {
		name = "gateway"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c.Functions.Media.ReferenceAge = 0 // unless given: a day past --max-age (referenceAge)
	bindFlags(fs, &c, allInOne)
	var err error
	if err = parseFlags(fs, args); err != nil {
		return err
	}
	c.Functions.Media.ReferenceAge = referenceAge(c.Functions.Media.ReferenceAge, c.Streams.MaxAge)
	if c.Gateway.Regions, err = c.Regions.gateway(); err != nil { // regions.go
		return err
	}
	if c.Streams.Region, err = c.Regions.layout(); err != nil {
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
	// Signals are caught from the start, so a SIGTERM during start-up is
	// a clean stop too; a second one forces an exit.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	logConfig(log, fs)
	if !allInOne && c.NATSURL == "" {
		return errors.New("gateway: --nats is required")
	}
	keys, err := loadKeys(&c, allInOne)
	if err != nil {
		return err
	}
	if err := servePprof(c.PprofListen, log); err != nil {
		return err
	}

	var ns *server.Server
	opts := contract.ReconnectOptions()
	// connect opens a connection in one role: every component has its
	// own key and only its role's rights (internal/natsauth).
	var connect func(role natsauth.Role) (*nats.Conn, error)
	if c.NATSURL == "" {
		if err := checkEmbeddedListen(c.NATSListen, c.NATSConfig); err != nil {
			return err
		}
		keys, err := natsauth.LoadOrCreate(c.natsKeysDir())
		if err != nil {
			return err
		}
		if c.NATSConfig != "" {
			// deploy/*.conf take the roles' public keys from the
			// environment: these are the keys this process connects with.
			for _, r := range natsauth.Roles {
				os.Setenv(natsauth.EnvVar(r), keys.Public(r))
			}
		}
		ns, err = embednats.Start(embednats.Options{
			Listen:     c.NATSListen,
			StoreDir:   filepath.Join(c.DataDir, "jetstream"),
			SyncAlways: c.SyncAlways,
			ConfigFile: c.NATSConfig,
			Users:      keys.ServerUsers(),
		})
		if errors.Is(err, embednats.ErrListen) {
			return fmt.Errorf("--nats-listen: %w (is another switchboard or nats-server running? choose another address, or port 0)", err)
		}
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		log.Info("nats listening", "url", ns.ClientURL(), "store", filepath.Join(c.DataDir, "jetstream"))
		log.Info("nats CLI: use the operator key", "NATS_URL", ns.ClientURL(),
			"NATS_NKEY", natsauth.SeedFile(c.natsKeysDir(), natsauth.Operator))
		connect = func(r natsauth.Role) (*nats.Conn, error) {
			return embednats.Connect(ns, "switchboard-"+string(r), append(keys.Options(r), opts...)...)
		}
	} else {
		connect = func(r natsauth.Role) (*nats.Conn, error) {
			ro, err := natsauth.RoleOptions(r, c.natsKeysDir(), c.NATSCreds)
			if err != nil {
				return nil, err
			}
			return nats.Connect(c.NATSURL, append(append(ro, opts...), nats.Name("switchboard-"+string(r)))...)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if allInOne {
		// The all-in-one sets up its streams itself, as the operator; a
		// gateway has no right to, and finds them made by `switchboard
		// setup` (or an all-in-one).
		if err := setupStreams(ctx, connect, c.Streams, c.Functions.mediaConfig()); err != nil {
			return err
		}
	}
	nc, err := connect(natsauth.Gateway)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()

	// Listen first: the embedded media store's URLs name this address.
	ln, err := net.Listen("tcp", c.Gateway.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	// Metrics get a listener of their own, loopback by default: they are
	// for operators, not for whoever reaches the WebSocket port.
	var metricsLn net.Listener
	if addr := c.Gateway.MetricsListen; addr != "" {
		if metricsLn, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("--metrics-listen %s: %w", addr, err)
		}
		defer metricsLn.Close()
	}
	if c.Functions.Media.BaseURL == "" {
		c.Functions.Media.BaseURL = baseURL(ln.Addr())
	}
	stopFunctions := func() {}
	var mediaSvc *media.Service
	if allInOne {
		stop, svc, err := startFunctions(ctx, connect, c.Functions.Run, &c.Functions, log)
		if err != nil {
			return err
		}
		mediaSvc = svc
		// They stop after the gateway, which may still be storing receipt
		// events for them, and before NATS drains.
		stopFunctions = sync.OnceFunc(stop)
		defer stopFunctions()
	}
	gw, err := gateway.New(ctx, c.Gateway, keys, nc, log)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w: create the streams first with `switchboard setup` (as the operator)", err)
		}
		return err
	}
	// The media API on the gateway's listener: its own routes when the
	// function runs here, else only the token-checked ones, which ask the
	// function over NATS.
	api := media.NewRemoteAPI(gw.Calls(), c.Functions.mediaConfig(), log)
	if mediaSvc != nil {
		api = mediaSvc.API()
	}
	gw.Mount(gateway.Route{Prefix: media.PathPrefix, Handle: api.Handler(gw.Authenticate), Config: api.HeaderConfig(c.Functions.MediaUploadTimeout)})
	if err := mountWeb(gw, &c, keys, allInOne, log); err != nil {
		return err
	}
	serveErr := make(chan error, 2)
	if metricsLn != nil {
		log.Info("metrics", "url", "http://"+metricsLn.Addr().String()+gateway.PathMetrics)
		go func() { serveErr <- gw.ServeMetrics(metricsLn) }()
	}
	go func() { serveErr <- gw.Serve(ln) }()
	if allInOne {
		ws := strings.Replace(baseURL(ln.Addr()), "http://", "ws://", 1) + gateway.PathWS
		log.Info("ready: open the chat page in a browser, or mint a token per device and chat from two terminals",
			"page", baseURL(ln.Addr())+"/", "ws", ws,
			"token", "switchboard token --data "+c.DataDir+" --user alice --device phone",
			"chat", "switchboard chat --url "+ws+" --token TOKEN --to bob")
	}

	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case err := <-serveErr:
		return err
	}
	go exitOnSecondSignal(sig, log)
	if err := gw.Shutdown(context.Background()); err != nil {
		log.Warn("shutdown incomplete", "err", err)
	}
	stopFunctions()
	if err := nc.Drain(); err != nil {
		log.Warn("nats drain", "err", err)
	}
	waitClosed(nc, 5*time.Second)
	log.Info("stopped")
	return nil
}

// baseURL is how clients reach a listener, for URLs that point back at
// it: a wildcard address becomes localhost (set --media-base-url for
// clients on other machines).
func baseURL(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// referenceAge is how long media keeps an object after the last message
// that named it: as given, else as long as messages are kept (maxAge, 30
// days when zero) and a day.
func referenceAge(given, maxAge time.Duration) time.Duration {
	if given != 0 {
		return given
	}
	if maxAge == 0 {
		maxAge = 30 * 24 * time.Hour
	}
	return maxAge + 24*time.Hour
}

// setupStreams creates or updates the streams and buckets over an
// operator connection, closed after.
func setupStreams(ctx context.Context, connect func(natsauth.Role) (*nats.Conn, error), o streams.Options, m media.Config) error {
	nc, err := connect(natsauth.Operator)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	js, err := newJetStream(nc)
	if err != nil {
		return err
	}
	if err := streams.Apply(ctx, js, o); err != nil {
		return err
	}
	// Media's buckets, replicated like the streams.
	m.Replicas = o.Replicas
	return media.Setup(ctx, js, m)
}

// exitOnSecondSignal makes a second signal, during a graceful stop, an
// immediate exit.
func exitOnSecondSignal(sig <-chan os.Signal, log *slog.Logger) {
	s := <-sig
	log.Warn("second signal: exiting at once", "signal", s.String())
	os.Exit(1)
}

func waitClosed(nc *nats.Conn, d time.Duration) {
	deadline := time.Now().Add(d)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// servePprof serves Go's profiles on addr (none when empty). Loopback
// only: a profile shows memory contents and must not leave the machine.
func servePprof(addr string, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--pprof %s: loopback addresses only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	log.Info("profiles", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	go func() { _ = http.Serve(ln, nil) }() // net/http/pprof registers on the default mux
	return nil
}

// checkEmbeddedListen refuses to expose the embedded NATS beyond loopback
// without a config file: its clients authenticate with keys, but nothing
// would encrypt the messages between machines. A config file can set up
// TLS.
func checkEmbeddedListen(listen, configFile string) error {
	if configFile != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("nats-listen: %w", err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("nats-listen %q is not a loopback address: the embedded NATS has no TLS; "+
		"use --nats-config with tls, or an external NATS", listen)
}
