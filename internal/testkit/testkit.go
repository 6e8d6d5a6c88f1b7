// Package testkit holds the helpers every test uses: an embedded JetStream
// server per test, a gateway on a random loopback port, tokens, clients and
// a poller that waits on a condition instead of sleeping.
package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/embednats"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/streams"
)

// Secret is the HS256 secret test gateways verify with.
var Secret = []byte("switchboard-test-secret-0123456789abcdef")

// WaitFor polls fn every 10ms until it returns nil, failing the test with
// fn's last error after timeout.
func WaitFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Logger returns a logger that writes to the test log at debug level when
// SWITCHBOARD_TEST_LOG is set, and discards otherwise.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("SWITCHBOARD_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// LogBuffer keeps everything logged through its Logger, at debug level,
// for tests of what a component logs. It is safe from many goroutines.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Logger returns a text logger at debug level writing to l.
func (l *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// NATS is an embedded JetStream server with Switchboard's streams applied.
type NATS struct {
	Server *server.Server
	Conn   *nats.Conn
	JS     jetstream.JetStream
	Dir    string
	// Keys are the NKeys the server authenticates: Conn is the operator's;
	// a component connects with its own role (Connect).
	Keys *natsauth.Keys
	// Functions are the receipts and presence functions StartNATS runs
	// beside the server (nil for a bare server).
	Functions *Functions
}

// StartNATS starts an embedded JetStream server on a random loopback port
// in a temp dir, applies the streams, and stops it at the end of the test.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	return StartNATSIn(t, t.TempDir())
}

// StartNATSIn is StartNATS with a given store dir (to restart on the same
// data).
func StartNATSIn(t testing.TB, dir string) *NATS {
	t.Helper()
	n := StartStreams(t, dir)
	n.Functions = StartFunctions(t, n)
	return n
}

// StartStreams starts an embedded JetStream server with the streams
// applied and no function running, for tests that start their own
// instances.
func StartStreams(t testing.TB, dir string) *NATS {
	t.Helper()
	n := StartBareNATS(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	return n
}

// StartBareNATS starts an embedded JetStream server with no streams. It
// enforces the roles' permissions (natsauth) as production does, with keys
// of its own, so a component that needs a right its role lacks fails here.
func StartBareNATS(t testing.TB, dir string) *NATS {
	t.Helper()
	keys := TestKeys(t)
	ns, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:0", StoreDir: dir, Users: keys.ServerUsers()})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), keys.Options(natsauth.Operator)...)
	if err != nil {
		ns.Shutdown()
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	n := &NATS{Server: ns, Conn: nc, JS: js, Dir: dir, Keys: keys}
	t.Cleanup(n.Stop)
	return n
}

var (
	testKeysOnce sync.Once
	testKeys     *natsauth.Keys
	testKeysErr  error
)

// TestKeys are the NKeys every test server of this process authenticates,
// made once per process: a restarted server (same dir) and a cluster's
// nodes must know the same keys, and making them is not what tests test.
func TestKeys(t testing.TB) *natsauth.Keys {
	t.Helper()
	testKeysOnce.Do(func() { testKeys, testKeysErr = natsauth.Generate() })
	if testKeysErr != nil {
		t.Fatal(testKeysErr)
	}
	return testKeys
}

// Connect opens a connection to n in role r, closed at the end of the
// test. The options come after the role's own.
func (n *NATS) Connect(t testing.TB, r natsauth.Role, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.Server.ClientURL(), append(n.Keys.Options(r), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Caller asks the worker functions as role r's components do: a
// connection in role r with its answers on r's call prefix.
func (n *NATS) Caller(t testing.TB, r natsauth.Role) *contract.Caller {
	t.Helper()
	c, err := contract.NewCaller(n.Connect(t, r), contract.CallPrefix(string(r)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Stop shuts the server down (idempotent).
func (n *NATS) Stop() {
	n.Conn.Close()
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
}

// Gateway is a gateway on a random loopback port.
type Gateway struct {
	Server *gateway.Server
	Conn   *nats.Conn
	Addr   string
	URL    string
	// MetricsURL is http://host:port/metrics on the gateway's metrics
	// listener (empty when the config sets no MetricsListen).
	MetricsURL string
	done       chan error
	killed     bool
}

// TestConfig is the gateway config tests start from: defaults with short
// timeouts so crash paths resolve quickly.
func TestConfig() gateway.Config {
	c := gateway.DefaultConfig()
	c.Listen = "127.0.0.1:0"
	c.MetricsListen = "127.0.0.1:0"
	c.ShutdownTimeout = 5 * time.Second
	c.KickTimeout = 2 * time.Second
	return c
}

// StartGateway starts a gateway with its own NATS connection to n.
func StartGateway(t testing.TB, n *NATS, cfg gateway.Config) *Gateway {
	t.Helper()
	return StartGatewayURL(t, n.Server.ClientURL(), cfg)
}

// StartGatewayLog is StartGateway with the gateway logging to log, for
// tests of what the gateway writes there.
func StartGatewayLog(t testing.TB, n *NATS, cfg gateway.Config, log *slog.Logger) *Gateway {
	t.Helper()
	return startGateway(t, n.Server.ClientURL(), cfg, log)
}

// Kill drops the gateway as a crash would: every socket is dropped with no
// close frame and its NATS connection is cut, so PubAcks and acks still in
// flight are lost.
func (g *Gateway) Kill() {
	g.killed = true
	g.Server.Abort()
	g.Conn.Close()
}

// Metrics reads the gateway's Prometheus metrics from its metrics
// listener.
func (g *Gateway) Metrics() (string, error) {
	if g.MetricsURL == "" {
		return "", errors.New("testkit: the gateway serves no metrics (no MetricsListen)")
	}
	resp, err := http.Get(g.MetricsURL)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("testkit: GET %s: %s", g.MetricsURL, resp.Status)
	}
	return string(b), err
}

// Token mints a test token.
func Token(t testing.TB, user, device string, ttl time.Duration) string {
	t.Helper()
	keys, err := gateway.NewHS256Keys(Secret)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := keys.Mint(user, device, ttl, time.Now(), gateway.TokenRules{})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Dial connects a client for user/device to the gateway at url, with fast
// reconnects, and closes it at the end of the test.
func Dial(t testing.TB, url, user, device string, mod ...func(*client.Options)) *client.Client {
	t.Helper()
	return DialToken(t, url, Token(t, user, device, time.Hour), mod...)
}

// DialToken is Dial with a given token.
func DialToken(t testing.TB, url, tok string, mod ...func(*client.Options)) *client.Client {
	t.Helper()
	o := client.Options{URL: url, Token: client.WithToken(tok), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	for _, m := range mod {
		m(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Body returns a JSON string body.
func Body(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// RecvMsg waits for the next message on c.
func RecvMsg(t testing.TB, c *client.Client, timeout time.Duration) client.Message {
	t.Helper()
	select {
	case m := <-c.Messages():
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %s", timeout)
	}
	return client.Message{}
}

// RecvReceipt waits for the next receipt on c.
func RecvReceipt(t testing.TB, c *client.Client, timeout time.Duration) client.Receipt {
	t.Helper()
	select {
	case r := <-c.Receipts():
		return r
	case <-time.After(timeout):
		t.Fatalf("no receipt within %s", timeout)
	}
	return client.Receipt{}
}

// NextMsgIs waits for the next message on c and fails unless it is the
// message user from sent with client id id, and returns it.
//
// It is how a test proves that something does not arrive: send a marker
// after the event under test and expect it next. A device gets its
// messages in stored order, so anything stored before the marker that is
// still to come arrives first, however late; a quiet window passes when
// the unwanted message is only slow. Repeats the SDK drops are counted in
// c.Stats().DuplicatesDropped by the time the marker is handed on.
func NextMsgIs(t testing.TB, c *client.Client, from, id string, timeout time.Duration) client.Message {
	t.Helper()
	var m client.Message
	select {
	case m = <-c.Messages():
	case <-time.After(timeout):
		t.Fatalf("the fence (%s from %s) did not arrive within %s", id, from, timeout)
	}
	if m.From != from || m.ID != id {
		t.Fatalf("got %s from %s (seq %d) before the fence (%s from %s)", m.ID, m.From, m.Seq, id, from)
	}
	return m
}

// Errorf is fmt.Errorf, for WaitFor conditions.
var Errorf = fmt.Errorf

var deployEnvOnce sync.Once

// DeployEnv sets, for this whole test process, the environment that
// deploy/*.conf read (natsauth.DeployEnv): the test keys' public keys and a
// route password, with deploy/cluster's default routes. Servers started
// from those files, in-process or as child processes, then authenticate
// the same clients as every other test server.
func DeployEnv(t testing.TB) {
	t.Helper()
	keys := TestKeys(t)
	deployEnvOnce.Do(func() {
		pw, err := natsauth.NewRoutePassword()
		if err != nil {
			panic(err)
		}
		for k, v := range keys.DeployEnv(pw, natsauth.DefaultRoutes) {
			os.Setenv(k, v)
		}
	})
}

// CLIFlags are the nats CLI's flags to reach n as the operator: its URL
// and the operator's seed, written to a file of the test's.
func (n *NATS) CLIFlags(t testing.TB) []string {
	t.Helper()
	return NATSCLIFlags(t, n.Server.ClientURL())
}

// NATSCLIFlags are the nats CLI's flags to reach url, a server that knows
// TestKeys, as the operator.
func NATSCLIFlags(t testing.TB, url string) []string {
	t.Helper()
	seed := filepath.Join(t.TempDir(), "operator.nk")
	if err := TestKeys(t).WriteSeed(seed, natsauth.Operator); err != nil {
		t.Fatal(err)
	}
	return []string{"-s", url, "--nkey", seed}
}
