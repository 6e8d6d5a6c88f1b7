package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/groups"
	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/streams"
)

// Regions is a regions deployment started from deploy/regions: the hub
// and one server per region, each an embedded nats-server loaded from its
// file, with only what one test machine cannot share replaced: every port
// is a free one and each store dir a temp dir. Each region's leaf link to
// the hub runs through a Proxy of its own, so a test can cut it.
type Regions struct {
	Hub     *server.Server
	hubOpts *server.Options // to start it again on the same address (StartHub)
	// Regions are the regions in the order started; the first is the
	// directory region (streams.Region.Directory).
	Regions []*Region
}

// Region is one region's server, with the operator's connection to it.
type Region struct {
	Name string
	*NATS
	// Link is the region's leaf link to the hub.
	Link *Proxy
	// Gateway is the region's gateway (Start).
	Gateway *Gateway
	// Groups is the region's groups function (Start).
	Groups *groups.Service
	hub    string          // the hub's leaf address, the link's target while not cut
	opts   *server.Options // its file's, to start it again (Restart)
}

// RegionsDir is deploy/regions in this module.
func RegionsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "regions")
}

// StartRegions starts hub.conf and <name>.conf for each name from
// deploy/regions, and waits until every region's leaf link is up. The
// servers stop at the end of the test. Streams are not applied (Apply).
func StartRegions(t testing.TB, names ...string) *Regions {
	t.Helper()
	DeployEnv(t)
	dir := RegionsDir()
	hubOpts := loadConf(t, filepath.Join(dir, "hub.conf"))
	if hubOpts.JetStream {
		t.Fatal("hub.conf: the hub must hold no JetStream")
	}
	hubLeaf, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(hubLeaf)
	hubOpts.LeafNode.Host, hubOpts.LeafNode.Port = "127.0.0.1", atoi(port)
	hub := startEmbedded(t, hubOpts.Clone())
	rs := &Regions{Hub: hub, hubOpts: hubOpts}
	for _, name := range names {
		o := loadConf(t, filepath.Join(dir, name+".conf"))
		switch {
		case !o.JetStream || o.JetStreamDomain != name:
			t.Fatalf("%s.conf: want JetStream in domain %q, got %v %q", name, name, o.JetStream, o.JetStreamDomain)
		case len(o.LeafNode.Remotes) != 1:
			t.Fatalf("%s.conf: want one leaf remote (the hub), got %d", name, len(o.LeafNode.Remotes))
		}
		r := &Region{Name: name, hub: hubLeaf}
		r.Link = StartProxy(t, r.hub)
		remote := o.LeafNode.Remotes[0]
		u := *remote.URLs[0]
		u.Host = r.Link.Addr
		remote.URLs = []*url.URL{&u}
		o.StoreDir = t.TempDir()
		ns := startEmbedded(t, o.Clone())
		nc, err := nats.Connect(ns.ClientURL(), TestKeys(t).Options(natsauth.Operator)...)
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		r.opts = o
		r.NATS = &NATS{Server: ns, Conn: nc, JS: js, Dir: o.StoreDir, Keys: TestKeys(t)}
		t.Cleanup(r.NATS.Stop)
		rs.Regions = append(rs.Regions, r)
	}
	for _, r := range rs.Regions {
		r.WaitLinked(t, 10*time.Second)
	}
	return rs
}

func loadConf(t testing.TB, file string) *server.Options {
	t.Helper()
	o, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	o.Host, o.Port = "127.0.0.1", server.RANDOM_PORT
	if o.HTTPPort != 0 {
		o.HTTPHost, o.HTTPPort = "127.0.0.1", server.RANDOM_PORT
	}
	o.NoSigs, o.NoLog = true, true
	return o
}

func startEmbedded(t testing.TB, o *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatalf("%s not ready within 10s", o.ServerName)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// Region returns the region named name, or nil.
func (rs *Regions) Region(name string) *Region {
	for _, r := range rs.Regions {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Layout is region r's streams.Region: every other region a peer, the
// first region started the directory.
func (rs *Regions) Layout(r *Region) *streams.Region {
	l := &streams.Region{Name: r.Name, Directory: rs.Regions[0].Name}
	for _, o := range rs.Regions {
		if o != r {
			l.Peers = append(l.Peers, o.Name)
		}
	}
	return l
}

// Apply lays every region's streams out (streams.Apply with its
// Region), the directory region first, and waits until every region's
// INBOX sources every other region's OUTBOX and HOMES is readable.
func (rs *Regions) Apply(t testing.TB, opts streams.Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, r := range rs.Regions {
		o := opts
		o.Region = rs.Layout(r)
		if err := streams.Apply(ctx, r.JS, o); err != nil {
			t.Fatalf("region %s: %v", r.Name, err)
		}
	}
	for _, r := range rs.Regions {
		r.WaitSourcing(t, 30*time.Second)
	}
}

// SetHome records user's home region in the directory (as the operator,
// in the directory region) and waits until every region reads it.
func (rs *Regions) SetHome(t testing.TB, user, region string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := rs.Regions[0].JS.KeyValue(ctx, contract.HomesKV)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, user, region); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs.Regions {
		WaitFor(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			kv, err := r.JS.KeyValue(ctx, contract.HomesKV)
			if err != nil {
				return err
			}
			e, err := kv.Get(ctx, user)
			if err != nil {
				return fmt.Errorf("region %s: home of %s: %w", r.Name, user, err)
			}
			if string(e.Value()) != region {
				return fmt.Errorf("region %s: home of %s is %q", r.Name, user, e.Value())
			}
			return nil
		})
	}
}

// Start runs, in every region, the receipts, presence and groups
// functions and a gateway configured with cfg placed in its region, every
// region's URL known to each.
func (rs *Regions) Start(t testing.TB, cfg gateway.Config) {
	t.Helper()
	urls := map[string]string{}
	addrs := map[string]string{}
	for _, r := range rs.Regions {
		addr, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addrs[r.Name], urls[r.Name] = addr, "ws://"+addr+gateway.PathWS
	}
	for _, r := range rs.Regions {
		r.Functions = StartFunctionsURL(t, r.Server.ClientURL())
		r.Groups = startGroups(t, r.Server.ClientURL())
		c := cfg
		c.Listen = addrs[r.Name]
		c.Regions = gateway.RegionsConfig{Region: r.Name, URLs: urls}
		r.Gateway = StartGatewayURL(t, r.Server.ClientURL(), c)
	}
}

// startGroups runs a groups function on its own connection in its role,
// reconnecting for ever as a separate process would, until the test ends.
func startGroups(t testing.TB, url string) *groups.Service {
	t.Helper()
	nc, err := nats.Connect(url, append(TestKeys(t).Options(natsauth.Groups),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := groups.Start(ctx, nc, js, groups.DefaultConfig(), Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(); nc.Close() })
	return s
}

// WaitLinked waits until the region's server has its leaf link up.
func (r *Region) WaitLinked(t testing.TB, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, func() error {
		if r.Server.NumLeafNodes() == 0 {
			return fmt.Errorf("region %s: no leaf link", r.Name)
		}
		return nil
	})
}

// WaitSourcing waits until the region's INBOX, GROUPS and TICKS have an
// active source for every other region's OUTBOX, and GROUP_DIR for every
// other region's GROUP_INFO.
func (r *Region) WaitSourcing(t testing.TB, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, name := range []string{contract.Inbox, contract.GroupsStream, contract.TicksStream, "KV_" + contract.GroupDirKV} {
			s, err := r.JS.Stream(ctx, name)
			if err != nil {
				return err
			}
			info := s.CachedInfo()
			if len(info.Sources) != len(info.Config.Sources) || len(info.Sources) == 0 {
				return fmt.Errorf("region %s: %s: %d of %d sources reported", r.Name, name, len(info.Sources), len(info.Config.Sources))
			}
			for _, si := range info.Sources {
				if si.Error != nil {
					return fmt.Errorf("region %s: %s: source %s: %v", r.Name, name, si.Name, si.Error)
				}
				if si.Active < 0 {
					return fmt.Errorf("region %s: %s: source %s from %v not active", r.Name, name, si.Name, si.External)
				}
			}
		}
		return nil
	})
}

// Cut cuts the region's leaf link as a network failure would: every
// connection through it is dropped and new ones are refused until Restore.
func (r *Region) Cut(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := ln.Addr().String()
	ln.Close() // a closed port: dials are refused
	r.Link.SetTarget(nowhere)
	r.Link.DropAll()
	WaitFor(t, 10*time.Second, func() error {
		if r.Server.NumLeafNodes() != 0 {
			return errors.New("leaf link still up")
		}
		return nil
	})
}

// Restore lets the region's leaf link connect again; it does not wait.
func (r *Region) Restore() { r.Link.SetTarget(r.hub) }

// StopHub stops the hub, as a crash of its machine would, and waits until
// every region has lost its leaf link.
func (rs *Regions) StopHub(t testing.TB) {
	t.Helper()
	rs.Hub.Shutdown()
	rs.Hub.WaitForShutdown()
	for _, r := range rs.Regions {
		WaitFor(t, 10*time.Second, func() error {
			if r.Server.NumLeafNodes() != 0 {
				return fmt.Errorf("region %s: leaf link still up", r.Name)
			}
			return nil
		})
	}
}

// StartHub starts the hub again from its file's options, on the same
// leaf address, and waits until every region has linked again.
func (rs *Regions) StartHub(t testing.TB) {
	t.Helper()
	rs.Hub = startEmbedded(t, rs.hubOpts.Clone())
	for _, r := range rs.Regions {
		r.WaitLinked(t, 20*time.Second)
	}
}

// Restart shuts the region's server down and starts it
// again on the same client address and store, then waits until its leaf
// link is up. Its gateway and functions reconnect by themselves; the
// operator's connection (NATS.Conn, JS) is a new one.
func (r *Region) Restart(t testing.TB) {
	t.Helper()
	o := r.opts.Clone()
	_, port, _ := net.SplitHostPort(r.Server.Addr().String())
	o.Port = atoi(port)
	r.NATS.Stop()
	ns := startEmbedded(t, o)
	nc, err := nats.Connect(ns.ClientURL(), TestKeys(t).Options(natsauth.Operator)...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	r.NATS = &NATS{Server: ns, Conn: nc, JS: js, Dir: o.StoreDir, Keys: TestKeys(t)}
	t.Cleanup(r.NATS.Stop)
	r.WaitLinked(t, 20*time.Second)
}
