// Package embednats runs a nats-server with JetStream inside the process:
// the all-in-one binary's default and every test's server. It owns the
// server's options and lifecycle; it must not create streams or know about
// Switchboard's subjects.
package embednats

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options for an embedded server. A zero field means the server's default
// unless the comment says otherwise.
type Options struct {
	// Listen is host:port for NATS clients (the nats CLI, other gateways).
	// Port 0 or -1 picks a free port. Empty means 127.0.0.1:4222.
	Listen string
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// SyncAlways fsyncs every write before acking it ("sent" then survives
	// an OS crash), at a large cost in throughput. Off: the server's
	// default of an fsync every 2 minutes.
	SyncAlways bool
	// ConfigFile, when set, is a nats-server config file (e.g. from deploy/)
	// loaded first; the fields above override it where set.
	ConfigFile string
	// ServerName names the server in cluster and monitoring output.
	ServerName string
	// Users are the NKey users the server authenticates (natsauth). A
	// server with a ConfigFile takes its users from the file instead, and
	// must have some: a Switchboard NATS never lets an anonymous client
	// in, since one could read every inbox and forge any sender.
	Users []*server.NkeyUser
}

// ErrListen is returned when the client port cannot be listened on (taken
// by another server, say).
var ErrListen = errors.New("embednats: cannot listen")

// ErrNoAuth is returned for a server that would let anyone in.
var ErrNoAuth = errors.New("embednats: no users: every client could read every inbox")

// Start starts the server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	opts := &server.Options{}
	if o.ConfigFile != "" {
		fo, err := server.ProcessConfigFile(o.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("embednats: %w", err)
		}
		opts = fo
	}
	if o.StoreDir == "" && opts.StoreDir == "" {
		return nil, errors.New("embednats: StoreDir is required")
	}
	listen := o.Listen
	if listen == "" && o.ConfigFile == "" {
		listen = "127.0.0.1:4222"
	}
	if listen != "" {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("embednats: listen %q: %w", listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embednats: listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
		if o.ConfigFile != "" && opts.HTTPPort != 0 {
			// A config's monitoring port moves with its client port, so
			// tests can run several servers from one file.
			opts.HTTPHost, opts.HTTPPort = host, server.RANDOM_PORT
		}
	}
	opts.JetStream = true
	if o.StoreDir != "" {
		opts.StoreDir = o.StoreDir
	}
	if o.SyncAlways {
		opts.SyncAlways = true
	}
	if o.ServerName != "" {
		opts.ServerName = o.ServerName
	}
	if o.ConfigFile == "" {
		opts.Nkeys = o.Users
	}
	if len(opts.Nkeys) == 0 && len(opts.Users) == 0 && opts.Authorization == "" &&
		opts.TrustedOperators == nil && len(opts.TrustedKeys) == 0 {
		return nil, ErrNoAuth
	}
	if opts.Port > 0 {
		// The server only logs a listen failure and never gets ready;
		// say at once which port, and why.
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrListen, addr, err)
		}
		ln.Close()
	}
	opts.NoSigs = true
	opts.NoLog = true
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embednats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embednats: server not ready within 10s")
	}
	return ns, nil
}

// Connect opens a client connection to ns that does not touch the network.
func Connect(ns *server.Server, name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(ns), nats.Name(name)}, opts...)
	return nats.Connect(ns.ClientURL(), opts...)
}
