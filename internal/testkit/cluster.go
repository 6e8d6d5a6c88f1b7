package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/functions/receipts"
	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/natsauth"
)

// Cluster is a JetStream cluster of nats-server processes started from
// config files, so that tests run the files operators run. Each node is
// its own process because a crash must be a crash: an embedded server's
// Shutdown hands its leaderships over first, as a stopping process does,
// which is the one thing a test of losing a leader must not get.
type Cluster struct {
	Nodes []*Node
}

// Node is one nats-server process of a Cluster.
type Node struct {
	// Name is the server_name from the node's file.
	Name       string
	ClientURL  string
	MonitorURL string

	cmd  *exec.Cmd
	dir  string        // its working dir: the file's relative store_dir lands here
	done chan struct{} // closed once the process has exited
}

// StartCluster starts one nats-server per file and waits until every node
// reports healthy, which includes following an elected JetStream meta
// leader. The nodes are killed at the end of the test.
//
// Each file is first parsed as `nats-server -t` parses it (a warning fails
// too) and checked to describe nodes of one cluster. Then only what nodes
// on one shared test machine cannot share is replaced, on the command line:
// the client and monitoring ports become random ones, and each cluster port
// becomes a free one, with every route rewritten through the same map (a
// route cannot dial port 0, so it must know the port in advance). A route
// to anything but a node's cluster port fails the test. Each node runs in a
// temp dir, where the file's relative store_dir puts its data.
func StartCluster(t testing.TB, files ...string) *Cluster {
	t.Helper()
	bin := NATSServer(t)
	DeployEnv(t)
	opts := make([]*server.Options, len(files))
	for i, f := range files {
		o, err := server.ProcessConfigFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if filepath.IsAbs(o.StoreDir) {
			t.Fatalf("%s: store dir %s is absolute; tests can move only a relative one", f, o.StoreDir)
		}
		opts[i] = o
	}
	checkClusterFiles(t, files, opts)
	// Another process may take a free port between its choice and the
	// node's bind; the node then exits, and the cluster is tried afresh.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var c *Cluster
		if c, err = startCluster(t, bin, files, opts); err == nil {
			return c
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatal(err)
	return nil
}

func startCluster(t testing.TB, bin string, files []string, opts []*server.Options) (_ *Cluster, err error) {
	ports := map[string]string{} // the file's cluster host:port -> the test's
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for _, o := range opts {
		ln, err := net.Listen("tcp", net.JoinHostPort(o.Cluster.Host, "0"))
		if err != nil {
			return nil, err
		}
		held = append(held, ln)
		ports[net.JoinHostPort(o.Cluster.Host, strconv.Itoa(o.Cluster.Port))] = ln.Addr().String()
	}
	var args [][]string
	for i, o := range opts {
		routes := make([]string, 0, len(o.Routes))
		for _, r := range o.Routes {
			to, ok := ports[r.Host]
			if !ok {
				t.Fatalf("%s: route %s names no node's cluster listen address", files[i], r)
			}
			u := *r
			u.Host = to
			routes = append(routes, u.String())
		}
		file, err := filepath.Abs(files[i])
		if err != nil {
			return nil, err
		}
		// The flag replaces the whole cluster listen, credentials too.
		listen := url.URL{Scheme: "nats", Host: held[i].Addr().String()}
		if o.Cluster.Username != "" {
			listen.User = url.UserPassword(o.Cluster.Username, o.Cluster.Password)
		}
		args = append(args, []string{"-c", file, "-p", "-1", "-m", "-1",
			"--cluster", listen.String(), "--routes", strings.Join(routes, ",")})
	}
	for _, ln := range held {
		ln.Close()
	}

	// Made before the cleanup that kills the nodes is registered, so they
	// are removed after it runs, not under running servers.
	dirs := make([]string, len(opts))
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	c := &Cluster{}
	t.Cleanup(func() {
		if t.Failed() {
			c.logTails(t)
		}
		c.stop()
	})
	defer func() {
		if err != nil {
			c.stop() // free its ports for the next attempt
		}
	}()
	for i, o := range opts {
		n, err := startNode(bin, o.ServerName, dirs[i], args[i])
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := n.waitReady(10 * time.Second); err != nil {
			return nil, err
		}
	}
	if err := c.awaitHealthy(30 * time.Second); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		if !n.Running() {
			return nil, fmt.Errorf("node %s exited: %s", n.Name, n.logTail(5))
		}
	}
	return c, nil
}

// WaitHealthy waits until every running node reports healthy: it follows
// the meta leader and each stream and consumer replica it holds is
// current. Streams just created answer direct gets (KV reads) only from
// then on.
func (c *Cluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := c.awaitHealthy(timeout); err != nil {
		t.Fatal(err)
	}
}

// WaitKVReadable waits until each bucket answers a read through every
// running node. A node can report healthy before its replicas' read
// subscriptions, or the other nodes' interest in them, are in place; a
// read then gets "no responders", and a gateway session that starts on it
// fails.
func (c *Cluster) WaitKVReadable(t testing.TB, timeout time.Duration, buckets ...string) {
	t.Helper()
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		_, js := n.Connect(t)
		for _, b := range buckets {
			WaitFor(t, timeout, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				kv, err := js.KeyValue(ctx, b)
				if err != nil {
					return err
				}
				if _, err := kv.Get(ctx, "readable"); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
					return fmt.Errorf("bucket %s through %s: %w", b, n.Name, err)
				}
				return nil
			})
		}
	}
}

func (c *Cluster) awaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range c.Nodes {
		for n.Running() {
			err := n.healthy()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (c *Cluster) stop() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// checkClusterFiles fails the test unless the parsed files describe nodes
// of one cluster that can share one machine.
func checkClusterFiles(t testing.TB, files []string, opts []*server.Options) {
	t.Helper()
	names, dirs, listens := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i, o := range opts {
		f := filepath.Base(files[i])
		switch {
		case o.ServerName == "" || names[o.ServerName]:
			t.Fatalf("%s: server_name %q missing or not unique", f, o.ServerName)
		case !o.JetStream:
			t.Fatalf("%s: JetStream is not enabled", f)
		case o.StoreDir == "" || dirs[o.StoreDir]:
			t.Fatalf("%s: store dir %q missing or shared with another node", f, o.StoreDir)
		case o.Cluster.Name == "" || o.Cluster.Name != opts[0].Cluster.Name:
			t.Fatalf("%s: cluster name %q, want one name on every node (%q)", f, o.Cluster.Name, opts[0].Cluster.Name)
		case o.Cluster.Port <= 0:
			t.Fatalf("%s: cluster listen needs a fixed port for routes, got %d", f, o.Cluster.Port)
		case o.HTTPPort == 0:
			t.Fatalf("%s: no http (monitoring) listen, which health checks and tests read", f)
		}
		names[o.ServerName], dirs[o.StoreDir] = true, true
		for _, hp := range []string{
			net.JoinHostPort(o.Host, strconv.Itoa(o.Port)),
			net.JoinHostPort(o.HTTPHost, strconv.Itoa(o.HTTPPort)),
			net.JoinHostPort(o.Cluster.Host, strconv.Itoa(o.Cluster.Port)),
		} {
			if strings.HasSuffix(hp, ":0") {
				continue
			}
			if listens[hp] {
				t.Fatalf("%s: %s is also another node's listen address", f, hp)
			}
			listens[hp] = true
		}
	}
	for i, o := range opts {
		routed := map[string]bool{}
		for _, r := range o.Routes {
			routed[r.Host] = true
		}
		for j, p := range opts {
			if hp := net.JoinHostPort(p.Cluster.Host, strconv.Itoa(p.Cluster.Port)); i != j && !routed[hp] {
				t.Fatalf("%s: no route to %s (%s)", filepath.Base(files[i]), p.ServerName, hp)
			}
		}
	}
}

func startNode(bin, name, dir string, args []string) (*Node, error) {
	n := &Node{Name: name, dir: dir, done: make(chan struct{})}
	logf, err := os.Create(filepath.Join(n.dir, "nats-server.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	n.cmd = exec.Command(bin, append(args, "--ports_file_dir", n.dir)...)
	n.cmd.Dir = n.dir
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = n.cmd.Wait()
		close(n.done)
	}()
	return n, nil
}

// waitReady waits for the ports file the node writes once it listens.
func (n *Node) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	file := filepath.Join(n.dir, fmt.Sprintf("%s_%d.ports", filepath.Base(n.cmd.Path), n.cmd.Process.Pid))
	for {
		var ports server.Ports
		b, err := os.ReadFile(file)
		if err == nil && json.Unmarshal(b, &ports) == nil && len(ports.Nats) > 0 {
			n.ClientURL = ports.Nats[0]
			if len(ports.Monitoring) > 0 {
				n.MonitorURL = ports.Monitoring[0]
			}
			return nil
		}
		select {
		case <-n.done:
			return fmt.Errorf("node %s exited: %s", n.Name, n.logTail(5))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not listening within %s: %s", n.Name, timeout, n.logTail(5))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var monitorClient = &http.Client{Timeout: 2 * time.Second}

// healthy asks the node's /healthz, which is ok once the node follows a
// meta leader and every stream and consumer it holds is current.
func (n *Node) healthy() error {
	if n.MonitorURL == "" {
		return errors.New("no monitoring port: the file sets no http")
	}
	resp, err := monitorClient.Get(n.MonitorURL + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz %d: %s", resp.StatusCode, strings.TrimSpace(b.String()))
	}
	return nil
}

// jsz reads the node's /jsz with its streams.
func (n *Node) jsz() (*server.JSInfo, error) {
	resp, err := monitorClient.Get(n.MonitorURL + "/jsz?accounts=true&streams=true")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var info server.JSInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Kill ends the node's process with SIGKILL, as a crash or the OOM killer
// would: nothing is handed over, the other nodes see its connections drop.
// Idempotent.
func (n *Node) Kill() {
	if n.Running() {
		_ = n.cmd.Process.Kill()
	}
	<-n.done
}

// StreamState is the state of this node's own replica of stream in the
// global account, from the node rather than from the stream's leader;
// false if the node holds none or cannot be asked.
func (n *Node) StreamState(stream string) (server.StreamState, bool) {
	info, err := n.jsz()
	if err != nil {
		return server.StreamState{}, false
	}
	for _, a := range info.AccountDetails {
		for _, s := range a.Streams {
			if a.Name == server.DEFAULT_GLOBAL_ACCOUNT && s.Name == stream {
				return s.State, true
			}
		}
	}
	return server.StreamState{}, false
}

func (n *Node) logTail(lines int) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "nats-server.log"))
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

func (c *Cluster) logTails(t testing.TB) {
	for _, n := range c.Nodes {
		t.Logf("last lines of %s's log:\n%s", n.Name, n.logTail(30))
	}
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Others returns the nodes other than n.
func (c *Cluster) Others(n *Node) []*Node {
	var others []*Node
	for _, o := range c.Nodes {
		if o != n {
			others = append(others, o)
		}
	}
	return others
}

// MetaLeader names the JetStream meta leader as a running node sees it
// ("" if none does).
func (c *Cluster) MetaLeader() string {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		if info, err := n.jsz(); err == nil && info.Meta != nil && info.Meta.Leader != "" {
			return info.Meta.Leader
		}
	}
	return ""
}

// WaitForLeader polls info (a stream's or a consumer's cluster info) until
// a running node other than not (nil: any) leads the group, and returns
// that node.
func (c *Cluster) WaitForLeader(t testing.TB, timeout time.Duration, not *Node,
	info func(ctx context.Context) (*jetstream.ClusterInfo, error)) *Node {
	t.Helper()
	var leader *Node
	WaitFor(t, timeout, func() error {
		var err error
		leader, err = c.leader(not, info)
		return err
	})
	return leader
}

// AwaitNewLeader is WaitForLeader for a goroutine beside the test: it
// reports rather than fails.
func (c *Cluster) AwaitNewLeader(timeout time.Duration, not *Node,
	info func(ctx context.Context) (*jetstream.ClusterInfo, error)) (*Node, error) {
	deadline := time.Now().Add(timeout)
	for {
		n, err := c.leader(not, info)
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no new leader within %s: %w", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Cluster) leader(not *Node, info func(ctx context.Context) (*jetstream.ClusterInfo, error)) (*Node, error) {
	// Short: while a group has no leader its info requests go unanswered.
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	ci, err := info(ctx)
	if err != nil {
		return nil, err
	}
	if ci == nil || ci.Leader == "" {
		return nil, errors.New("no leader")
	}
	leader := c.Node(ci.Leader)
	switch {
	case leader == nil:
		return nil, fmt.Errorf("leader %q is not a node of this cluster", ci.Leader)
	case leader == not || !leader.Running():
		return nil, fmt.Errorf("still led by %s", ci.Leader)
	}
	return leader, nil
}

// StreamInfo adapts a stream's info to WaitForLeader.
func StreamInfo(js jetstream.JetStream, stream string) func(context.Context) (*jetstream.ClusterInfo, error) {
	return func(ctx context.Context) (*jetstream.ClusterInfo, error) {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, err
		}
		return s.CachedInfo().Cluster, nil
	}
}

// StepDown asks the leader of a stream (consumer "") or of one of its
// consumers to hand over, to preferred if not nil, as
// `nats stream cluster step-down` does.
func StepDown(nc *nats.Conn, stream, consumer string, preferred *Node) error {
	subj := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	if consumer != "" {
		subj = "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + consumer
	}
	var req []byte
	if preferred != nil {
		req, _ = json.Marshal(server.JSApiLeaderStepdownRequest{Placement: &server.Placement{Preferred: preferred.Name}})
	}
	m, err := nc.Request(subj, req, 5*time.Second)
	if err != nil {
		return fmt.Errorf("step down %s: %w", subj, err)
	}
	var resp server.JSApiLeaderStepDownResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return fmt.Errorf("step down %s: %w", subj, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("step down %s: %v", subj, resp.Error)
	}
	return nil
}

// Connect opens a client connection to n with the JetStream context on
// it. Like any client of a cluster it learns the other nodes from n and
// fails over to them. It closes at the end of the test.
func (n *Node) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js := ConnectAs(t, n.ClientURL, natsauth.Operator)
	t.Cleanup(nc.Close)
	return nc, js
}

// ConnectAs connects to url in role r, reconnecting for ever as a
// component's own process would, with the JetStream context on it. The
// caller closes it.
func ConnectAs(t testing.TB, url string, r natsauth.Role) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	// The components' own policy (contract.ReconnectOptions), with a
	// shorter wait.
	opts := append(append(TestKeys(t).Options(r), contract.ReconnectOptions()...), nats.ReconnectWait(50*time.Millisecond))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	return nc, js
}

// StartGatewayURL is StartGateway for a NATS server that is not embedded
// here, such as a cluster node: the gateway connects to url first.
func StartGatewayURL(t testing.TB, url string, cfg gateway.Config) *Gateway {
	t.Helper()
	return startGateway(t, url, cfg, Logger(t))
}

func startGateway(t testing.TB, url string, cfg gateway.Config, log *slog.Logger) *Gateway {
	t.Helper()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	return startGatewayOn(t, url, cfg, log, ln)
}

// startGatewayOn is startGateway serving on ln, which it closes when the
// gateway stops (or the start fails).
func startGatewayOn(t testing.TB, url string, cfg gateway.Config, log *slog.Logger, ln net.Listener) *Gateway {
	t.Helper()
	t.Cleanup(func() { _ = ln.Close() })
	nc, _ := ConnectAs(t, url, natsauth.Gateway)
	keys, err := gateway.NewHS256Keys(Secret)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := gateway.New(ctx, cfg, keys, nc, log)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{Server: srv, Conn: nc, Addr: ln.Addr().String(), done: make(chan error, 1)}
	g.URL = "ws://" + g.Addr + gateway.PathWS
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			t.Fatal(err)
		}
		g.MetricsURL = "http://" + mln.Addr().String() + gateway.PathMetrics
		go func() { _ = srv.ServeMetrics(mln) }()
	}
	go func() { g.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if g.killed {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		nc.Close()
	})
	return g
}

// StartFunctionsURL is StartFunctions for a NATS server that is not
// embedded here.
func StartFunctionsURL(t testing.TB, url string) *Functions {
	t.Helper()
	// Each function on its own connection with its own role, as separate
	// processes would run them.
	connect := func(r natsauth.Role) (*nats.Conn, jetstream.JetStream) { return ConnectAs(t, url, r) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &Functions{}
	var js jetstream.JetStream
	var err error
	f.Conn, js = connect(natsauth.Receipts)
	if f.Receipts, err = receipts.Start(ctx, f.Conn, js, receipts.DefaultConfig(), Logger(t)); err != nil {
		t.Fatal(err)
	}
	f.PresenceConn, js = connect(natsauth.Presence)
	pc := presence.DefaultConfig()
	pc.AckWait = FunctionAckWait
	if f.Presence, err = presence.Start(ctx, f.PresenceConn, js, pc, Logger(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

var natsServerMu sync.Mutex

// NATSServer returns the path of a nats-server binary of the version in
// go.mod, building it on first use into the tool cache (ToolsDir), so
// process tests run the server the embedded ones run.
func NATSServer(t testing.TB) string {
	t.Helper()
	const mod = "github.com/nats-io/nats-server/v2"
	natsServerMu.Lock()
	defer natsServerMu.Unlock()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}} {{.Replace}}", mod).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", mod, err)
	}
	version, replace, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	dir := filepath.Join(ToolsDir(), "nats-server-"+version)
	if version == "" || replace != "<nil>" {
		dir = t.TempDir() // a replaced module is never cached
	}
	bin := filepath.Join(dir, "nats-server")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Built beside and renamed into place, so a concurrent test process
	// never runs a half-written binary.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(tmp, "nats-server"), mod).CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "nats-server"), bin); err != nil {
		t.Fatal(err)
	}
	return bin
}
