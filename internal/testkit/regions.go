package testkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
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
	proc   *regionProc     // a region run as a process (RegionsOptions.Processes); nil: embedded
}

// RegionsDir is deploy/regions in this module.
func RegionsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "regions")
}

// RegionsOptions change how StartRegionsWith runs the regions.
type RegionsOptions struct {
	// Processes names the regions whose nats-server runs as a process of
	// its own (the nats-server binary of go.mod's version, NATSServer),
	// on its very file, so that a test can kill it (Region.Crash); the
	// others run embedded.
	Processes []string
}

// StartRegions starts hub.conf and <name>.conf for each name from
// deploy/regions, and waits until every region's leaf link is up. The
// servers stop at the end of the test. Streams are not applied (Apply).
func StartRegions(t testing.TB, names ...string) *Regions {
	t.Helper()
	return StartRegionsWith(t, RegionsOptions{}, names...)
}

// StartRegionsWith is StartRegions with ro.
func StartRegionsWith(t testing.TB, ro RegionsOptions, names ...string) *Regions {
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
		file := filepath.Join(dir, name+".conf")
		o := loadConf(t, file)
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
		r.opts = o
		if slices.Contains(ro.Processes, name) {
			r.proc = startRegionProc(t, file, r.Link.Addr)
			r.connect(t, r.proc.node.ClientURL, nil)
		} else {
			ns := startEmbedded(t, o.Clone())
			r.connect(t, ns.ClientURL(), ns)
		}
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
	// Every gateway names every region's URL, so each one's listener is
	// bound before any starts (a port picked and bound later could be
	// taken meanwhile by another test process).
	urls := map[string]string{}
	lns := map[string]net.Listener{}
	for _, r := range rs.Regions {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		lns[r.Name], urls[r.Name] = ln, "ws://"+ln.Addr().String()+gateway.PathWS
	}
	for _, r := range rs.Regions {
		r.Functions = StartFunctionsURL(t, r.URL())
		r.Groups = startGroups(t, r.URL())
		c := cfg
		c.Listen = lns[r.Name].Addr().String()
		c.Regions = gateway.RegionsConfig{Region: r.Name, URLs: urls}
		r.Gateway = startGatewayOn(t, r.URL(), c, Logger(t), lns[r.Name])
	}
}

// startGroups runs a groups function on its own connection in its role,
// reconnecting for ever as a separate process would, until the test ends.
func startGroups(t testing.TB, url string) *groups.Service {
	t.Helper()
	nc, js := ConnectAs(t, url, natsauth.Groups)
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
		if r.leafLinks() == 0 {
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
		if r.leafLinks() != 0 {
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
			if r.leafLinks() != 0 {
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

// Restart shuts the region's server down cleanly (it writes its
// streams' state and closes its files) and starts it again on the same
// client address and store, then waits until its leaf link is up. Its
// gateway and functions reconnect by themselves; the operator's
// connection (NATS.Conn, JS) is a new one. For a crash, see Crash.
func (r *Region) Restart(t testing.TB) {
	t.Helper()
	if r.proc != nil {
		t.Fatalf("region %s runs as a process: Crash it", r.Name)
	}
	o := r.opts.Clone()
	_, port, _ := net.SplitHostPort(r.Server.Addr().String())
	o.Port = atoi(port)
	r.NATS.Stop()
	ns := startEmbedded(t, o)
	r.connect(t, ns.ClientURL(), ns)
	r.WaitLinked(t, 20*time.Second)
}

// Crash kills the region's nats-server process with SIGKILL, as a crash
// or the OOM killer would (no shutdown: nothing flushed, no state
// written, connections dropped), and starts it again on the same file,
// client address and store, then waits until its leaf link is up. Only
// for a region run as a process (RegionsOptions.Processes).
func (r *Region) Crash(t testing.TB) {
	t.Helper()
	if r.proc == nil {
		t.Fatalf("region %s runs embedded: start it with RegionsOptions.Processes to crash it", r.Name)
	}
	r.NATS.Conn.Close()
	r.proc.node.Kill()
	r.proc.start(t)
	r.connect(t, r.proc.node.ClientURL, nil)
	r.WaitLinked(t, 20*time.Second)
}

// URL is the region's client URL.
func (r *Region) URL() string {
	if r.proc != nil {
		return r.proc.node.ClientURL
	}
	return r.Server.ClientURL()
}

// connect opens the operator's connection to the region's server at url
// (ns: the embedded server, nil for a process), closed at the end of the
// test with the server.
func (r *Region) connect(t testing.TB, url string, ns *server.Server) {
	t.Helper()
	nc, err := nats.Connect(url, TestKeys(t).Options(natsauth.Operator)...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	r.NATS = &NATS{Server: ns, Conn: nc, JS: js, Dir: r.opts.StoreDir, Keys: TestKeys(t)}
	if ns != nil {
		t.Cleanup(r.NATS.Stop)
	} else {
		t.Cleanup(nc.Close)
	}
}

// leafLinks is how many leaf links the region's server has (-1: a
// process that did not answer).
func (r *Region) leafLinks() int {
	if r.proc == nil {
		return r.Server.NumLeafNodes()
	}
	resp, err := monitorClient.Get(r.proc.node.MonitorURL + "/varz")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v server.Varz
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return -1
	}
	return v.Leafs
}

// regionProc is a region's nats-server run as a process on its file. A
// file's leaf remote names the hub's address, which a test cannot use, so
// the process reads a file of the test's that includes the region's file
// and states its remote again, with the link's proxy as its URL and the
// region's own leaf.inc; its client and monitoring ports are flags, the
// same ones again after a crash, and it runs in a temp dir, where the
// file's relative store_dir puts its data.
type regionProc struct {
	bin, dir string
	args     []string
	node     *Node
}

func startRegionProc(t testing.TB, file, link string) *regionProc {
	t.Helper()
	dir := t.TempDir()
	rel := func(path string) string {
		r, err := filepath.Rel(dir, path)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	conf := filepath.Join(dir, "region.conf")
	text := fmt.Sprintf("include %q\nleafnodes {\n  remotes: [\n    {\n      url: %q\n      include %q\n    }\n  ]\n}\n",
		rel(file), "nats-leaf://"+link, rel(filepath.Join(filepath.Dir(file), "leaf.inc")))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	monitor, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, cport, _ := net.SplitHostPort(client)
	_, mport, _ := net.SplitHostPort(monitor)
	p := &regionProc{bin: NATSServer(t), dir: dir,
		args: []string{"-c", conf, "-a", "127.0.0.1", "-p", cport, "-m", mport}}
	p.start(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("region process log:\n%s", p.node.logTail(30))
		}
		p.node.Kill()
	})
	return p
}

// start runs the process and waits until it listens.
func (p *regionProc) start(t testing.TB) {
	t.Helper()
	n, err := startNode(p.bin, "region", p.dir, p.args)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(20 * time.Second); err != nil {
		n.Kill()
		t.Fatal(err)
	}
	p.node = n
}
