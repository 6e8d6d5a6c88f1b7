package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

var binary string

// TestMain builds the switchboard binary once; the tests run it as a user
// would.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchboard-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "switchboard")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building switchboard: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running switchboard process.
type proc struct {
	cmd     *exec.Cmd
	WSURL   string        // ws://host:port/v1/ws
	HTTP    string        // http://host:port
	Metrics string        // http://host:port/metrics, on --metrics-listen
	NATSURL string        // only for the all-in-one
	exited  chan struct{} // closed when the process has exited
	exitErr error         // valid after exited is closed
	// logsDone is closed once every line the process wrote to stderr is
	// in logs: at its exit, or earlier if it closed stderr.
	logsDone chan struct{}

	mu   sync.Mutex
	logs []string
}

// start runs the binary with args and waits until it logs where it listens.
// Its WebSocket and metrics listeners take free loopback ports, unless args
// give --listen or --metrics-listen.
func start(t testing.TB, args ...string) *proc {
	t.Helper()
	return startBinary(t, binary, args...)
}

// startBinary is start with another build of the binary.
func startBinary(t testing.TB, bin string, args ...string) *proc {
	t.Helper()
	args = append(args, "--log-format", "json")
	for _, f := range []string{"--listen", "--metrics-listen"} {
		if !slices.Contains(args, f) {
			args = append(args, f, "127.0.0.1:0")
		}
	}
	cmd := exec.Command(bin, args...)
	// A pipe of our own rather than StderrPipe, whose read end Wait closes
	// at exit, perhaps before the last lines are read.
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		stderr.Close()
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{}), logsDone: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(p.logsDone)
		defer stderr.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 4<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
			var rec struct {
				Msg     string `json:"msg"`
				URL     string `json:"url"`
				Gateway struct {
					Addr string `json:"addr"`
				} `json:"gateway"`
			}
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			switch rec.Msg {
			case "nats listening":
				p.mu.Lock()
				p.NATSURL = rec.URL
				p.mu.Unlock()
			case "metrics":
				p.mu.Lock()
				p.Metrics = rec.URL
				p.mu.Unlock()
			case "listening":
				p.mu.Lock()
				p.WSURL = "ws://" + rec.Gateway.Addr + "/v1/ws"
				p.HTTP = "http://" + rec.Gateway.Addr
				p.mu.Unlock()
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { p.exitErr = cmd.Wait(); close(p.exited) }()
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("switchboard exited before listening: %v\n%s", p.exitErr, p.Logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("switchboard did not listen within 60s\n%s", p.Logs())
	}
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// kill is kill -9: no cleanup of any kind.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
}

func token(t *testing.T, data, user, device string) string {
	t.Helper()
	return strings.TrimSpace(tk.Run(t, binary, "token", "--data", data, "--user", user, "--device", device))
}

func httpGet(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The README quick start: run the binary, mint two tokens, chat.
func TestQuickStart(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	if code := httpGet(t, p.HTTP+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if code := httpGet(t, p.HTTP+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d", code)
	}
	alice := tk.DialToken(t, p.WSURL, token(t, data, "alice", "phone"))
	bob := tk.DialToken(t, p.WSURL, token(t, data, "bob", "laptop"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := alice.Send(ctx, "bob", "hello-1", tk.Body("hello from the quick start")); err != nil {
		t.Fatal(err)
	}
	m := tk.RecvMsg(t, bob, 10*time.Second)
	if m.From != "alice" || string(m.Body) != `"hello from the quick start"` {
		t.Fatalf("bob got %+v", m)
	}
	bob.Ack(m.Seq)
	if r := tk.RecvReceipt(t, alice, 10*time.Second); r.Status != protocol.StatusDelivered {
		t.Fatalf("receipt %+v", r)
	}
	tok := token(t, data, "alice", "phone")
	if logs := p.Logs(); strings.Contains(logs, tok[strings.LastIndex(tok, ".")+1:]) { // the signature
		t.Fatal("a token appears in the logs")
	}
}

// With --jwt-audience and --jwt-issuer the gateway refuses tokens without
// them, and "token" given the same flags mints tokens it accepts. "token"
// mints no token that lives past --jwt-max-ttl, and the gateway refuses
// one minted with a higher bound than its own.
func TestTokenAudienceIssuerAndLifetime(t *testing.T) {
	data := t.TempDir()
	rules := []string{"--jwt-audience", "switchboard", "--jwt-issuer", "ops"}
	p := start(t, append([]string{"--data", data, "--nats-listen", "127.0.0.1:0"}, rules...)...)
	mint := func(extra ...string) string {
		t.Helper()
		args := append([]string{"token", "--data", data, "--user", "alice", "--device", "phone"}, extra...)
		return strings.TrimSpace(tk.Run(t, binary, args...))
	}
	refused := func(tok string) {
		t.Helper()
		ws, resp, err := websocket.DefaultDialer.Dial(p.WSURL, http.Header{"Authorization": {"Bearer " + tok}})
		if err == nil {
			ws.Close()
			t.Fatal("the gateway accepted a token it should refuse")
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("handshake: %v, want 401", err)
		}
	}
	tk.DialToken(t, p.WSURL, mint(rules...))
	refused(mint()) // no aud, no iss
	refused(mint("--jwt-audience", "switchboard", "--jwt-issuer", "someone-else"))

	out, err := exec.Command(binary, "token", "--data", data, "--user", "alice", "--device", "phone", "--ttl", "721h").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "maximum token lifetime") {
		t.Fatalf("token --ttl 721h (past the 720h default bound): want a refusal, got %v:\n%s", err, out)
	}
	refused(mint(append(rules, "--ttl", "721h", "--jwt-max-ttl", "1000h")...))
}

// The all-in-one is killed with kill -9 and restarted on the same data dir:
// messages stored before are still delivered.
func TestAllInOneRestartKeepsPendingMessages(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	alice := tk.DialToken(t, p.WSURL, token(t, data, "alice", "phone"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := alice.Send(ctx, "bob", fmt.Sprintf("m%02d", i), tk.Body("before the crash")); err != nil {
			t.Fatal(err)
		}
	}
	_ = alice.Close()
	p.kill()

	p = start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	bob := tk.DialToken(t, p.WSURL, token(t, data, "bob", "phone"))
	for i := range 20 {
		if m := tk.RecvMsg(t, bob, 10*time.Second); m.ID != fmt.Sprintf("m%02d", i) {
			t.Fatalf("message %d is %s", i, m.ID)
		}
	}
}

// SIGTERM: clients get 1012, the process drains and exits 0.
func TestGracefulShutdownSendsServiceRestart(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	h := http.Header{"Authorization": {"Bearer " + token(t, data, "alice", "phone")}}
	ws, _, err := d.Dial(p.WSURL, h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil { // welcome
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.CloseServiceRestart {
		t.Fatalf("read after SIGTERM: %v, want close 1012", err)
	}
	select {
	case <-p.exited:
		if p.exitErr != nil {
			t.Fatalf("exit: %v\n%s", p.exitErr, p.Logs())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not exit within 20s of SIGTERM")
	}
}

func TestLoggedConfigHidesURLCredentials(t *testing.T) {
	data := t.TempDir()
	core := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	// The server takes only its roles' keys, so this gateway is refused
	// after it has logged its configuration, which is what is checked.
	secretURL := strings.Replace(core.NATSURL, "nats://", "nats://user:hunter2@", 1)
	out, _ := exec.Command(binary, "gateway", "--nats", secretURL, "--data", data,
		"--listen", "127.0.0.1:0", "--log-format", "json").CombinedOutput()
	logs := string(out)
	if strings.Contains(logs, "hunter2") {
		t.Fatalf("password logged:\n%s", logs)
	}
	if !strings.Contains(logs, "redacted@") {
		t.Fatalf("config line missing or not redacted:\n%s", logs)
	}
}

func TestEmbeddedNATSRefusesOpenListenWithoutConfig(t *testing.T) {
	out, err := exec.Command(binary, "--data", t.TempDir(), "--nats-listen", "0.0.0.0:0", "--listen", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not a loopback address") {
		t.Fatalf("want a refusal naming the loopback rule, got %v:\n%s", err, out)
	}
}

// The README's "try it": two chat clients, the way a newcomer runs them.
func TestReadmeChat(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	bobOut := &lockedBuffer{}
	bob := exec.Command(binary, "chat", "--url", p.WSURL, "--token", token(t, data, "bob", "phone"))
	bob.Stdout, bob.Stderr = bobOut, bobOut
	if err := bob.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bob.Process.Kill(); _ = bob.Wait() })
	// Whether or not bob's session is up yet, his first device gets every
	// message sent to him.
	alice := exec.Command(binary, "chat", "--url", p.WSURL, "--token", token(t, data, "alice", "phone"), "--to", "bob")
	aliceIn, err := alice.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	aliceOut := &lockedBuffer{}
	alice.Stdout, alice.Stderr = aliceOut, aliceOut
	if err := alice.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alice.Process.Kill(); _ = alice.Wait() })
	if _, err := io.WriteString(aliceIn, "hello bob\n"); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 15*time.Second, func() error {
		if !strings.Contains(bobOut.String(), "alice/phone: hello bob") {
			return fmt.Errorf("bob's terminal: %q", bobOut.String())
		}
		// bob's terminal acks and reads at once, so the read tick may
		// come first; it covers delivered, and the SDK then shows only
		// the read (a tick never goes back).
		a := aliceOut.String()
		for _, want := range []string{"sent, seq", "read by bob/phone"} {
			if !strings.Contains(a, want) {
				return fmt.Errorf("alice's terminal lacks %q: %q", want, a)
			}
		}
		return nil
	})
	aliceIn.Close()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Metrics are served on --metrics-listen and not on the WebSocket
// listener; a metrics address already taken stops the start with an error
// naming the flag and the address.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	p := start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0")
	if !strings.HasPrefix(p.Metrics, "http://127.0.0.1:") {
		t.Fatalf("metrics URL %q logged, want one on loopback\n%s", p.Metrics, p.Logs())
	}
	if code := httpGet(t, p.Metrics); code != http.StatusOK {
		t.Fatalf("GET %s: %d", p.Metrics, code)
	}
	if code := httpGet(t, p.HTTP+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("GET /metrics on the WebSocket listener: %d, want 404", code)
	}

	taken := strings.TrimSuffix(strings.TrimPrefix(p.Metrics, "http://"), "/metrics")
	out, err := exec.Command(binary, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
		"--metrics-listen", taken).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--metrics-listen "+taken) {
		t.Fatalf("metrics address taken: want an error naming --metrics-listen %s, got %v:\n%s", taken, err, out)
	}
}

// --pprof serves Go's profiles on a loopback address and refuses any other.
func TestPprofOnLoopbackOnly(t *testing.T) {
	out, err := exec.Command(binary, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
		"--pprof", "0.0.0.0:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "loopback addresses only") {
		t.Fatalf("want a refusal naming the loopback rule, got %v:\n%s", err, out)
	}

	p := start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0", "--pprof", "127.0.0.1:0")
	m := regexp.MustCompile(`"msg":"profiles","url":"(http://127\.0\.0\.1:\d+/debug/pprof/)"`).FindStringSubmatch(p.Logs())
	if m == nil {
		t.Fatalf("no profiles URL logged:\n%s", p.Logs())
	}
	if code := httpGet(t, m[1]+"heap?debug=1"); code != http.StatusOK {
		t.Fatalf("GET heap profile: %d", code)
	}
}
