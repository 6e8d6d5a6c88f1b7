package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/functions/receipts"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// An operator sees every worker function with the nats CLI: the ones the
// all-in-one runs and one started alone with "switchboard function".
func TestFunctionsAreVisibleWithTheNATSCLI(t *testing.T) {
	cli := tk.NATSCLI(t)
	var pushes atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		pushes.Add(1)
	}))
	defer hook.Close()

	data := t.TempDir()
	core := start(t, "--data", data, "--nats-listen", "127.0.0.1:0", "--push-webhook", hook.URL)
	startFunction(t, "receipts", "--nats", core.NATSURL, "--data", data)
	// The nats CLI as the operator, with the key the all-in-one made.
	op := filepath.Join(data, "nats", "operator.nk")

	ls := tk.Run(t, cli, "-s", core.NATSURL, "--nkey", op, "micro", "ls")
	for _, name := range []string{"receipts", "presence", "push", "media", "groups"} {
		if !strings.Contains(ls, name) {
			t.Errorf("nats micro ls lacks %s:\n%s", name, ls)
		}
	}
	var instances []struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	}
	out := tk.Run(t, cli, "-s", core.NATSURL, "--nkey", op, "micro", "ls", "receipts", "--json")
	if err := json.Unmarshal([]byte(out), &instances); err != nil || len(instances) != 2 {
		t.Errorf("nats micro ls receipts --json: %d instances (%v), want 2:\n%s", len(instances), err, out)
	}
	info := tk.Run(t, cli, "-s", core.NATSURL, "--nkey", op, "micro", "info", "receipts")
	for _, want := range []string{"sb.fn.receipts.status", "sb.fn.receipts.delivered", "sb.fn.receipts.read", receipts.Version} {
		if !strings.Contains(info, want) {
			t.Errorf("nats micro info receipts lacks %q:\n%s", want, info)
		}
	}
	info = tk.Run(t, cli, "-s", core.NATSURL, "--nkey", op, "micro", "info", "presence")
	if !strings.Contains(info, "sb.fn.presence.get") {
		t.Errorf("nats micro info presence lacks its subject:\n%s", info)
	}

	// Chat through it: the receipts instances share the work, so the
	// sender gets each tick once whichever applied it.
	alice := tk.DialToken(t, core.WSURL, token(t, data, "alice", "phone"))
	bob := tk.DialToken(t, core.WSURL, token(t, data, "bob", "phone"))
	for i := range 20 {
		id := "m" + string(rune('a'+i))
		if _, err := alice.Send(t.Context(), "bob", id, tk.Body("hi")); err != nil {
			t.Fatal(err)
		}
		m := tk.RecvMsg(t, bob, 10*time.Second)
		bob.Ack(m.Seq)
		if r := tk.RecvReceipt(t, alice, 10*time.Second); r.ID != id || r.Status != "delivered" {
			t.Fatalf("receipt %+v, want delivered %s", r, id)
		}
	}
	stats := tk.Run(t, cli, "-s", core.NATSURL, "--nkey", op, "micro", "stats", "receipts", "--json")
	if !strings.Contains(stats, "stored") {
		t.Errorf("nats micro stats receipts shows no counters:\n%s", stats)
	}
}

// A gateway process is killed with kill -9: it never reports its devices
// offline, and their leases expire. A follower on another gateway sees the
// user go offline within the TTL.
func TestKilledGatewaysDevicesGoOfflineWithinTheTTL(t *testing.T) {
	data := t.TempDir()
	core := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	gw := start(t, "gateway", "--nats", core.NATSURL, "--data", data, "--presence-ttl", "2s")

	alice := tk.DialToken(t, core.WSURL, token(t, data, "alice", "phone"))
	if err := alice.SubscribePresence("bob"); err != nil {
		t.Fatal(err)
	}
	if p := nextPresence(t, alice); p.Online {
		t.Fatalf("bob online before connecting: %+v", p)
	}
	tk.DialToken(t, gw.WSURL, token(t, data, "bob", "phone"), func(o *client.Options) {
		o.MaxBackoff = time.Hour // stay down once the gateway is gone
		o.MinBackoff = time.Hour
	})
	if p := nextPresence(t, alice); !p.Online {
		t.Fatalf("bob connected: %+v", p)
	}
	killed := time.Now()
	gw.kill()
	p := nextPresence(t, alice)
	if p.Online || p.LastSeen.IsZero() {
		t.Fatalf("after the kill: %+v, want offline with a last seen", p)
	}
	t.Logf("offline %s after kill -9 (TTL 2s)", time.Since(killed).Round(10*time.Millisecond))
}

func nextPresence(t *testing.T, c *client.Client) client.Presence {
	t.Helper()
	select {
	case p := <-c.PresenceEvents():
		return p
	case <-time.After(15 * time.Second):
		t.Fatal("no presence event within 15s")
	}
	return client.Presence{}
}

// startFunction runs "switchboard function NAME args..." and waits until
// it has started.
func startFunction(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"function", name, "--log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"msg":"function started"`) {
				close(started)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatalf("function %s did not start within 30s", name)
	}
	return cmd
}

// The README's media example runs as written, with curl and jq, against
// the all-in-one's embedded store: upload through the ticket's URL, then
// download, and the bytes match.
func TestReadmeMediaExample(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq", "sha256sum", "stat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's media example needs %s, which is not installed", tool)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- media-example -->\n```sh\n")
	block, _, ok2 := strings.Cut(block, "```\n<!-- /media-example -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no media example block")
	}

	dir := t.TempDir()
	p := start(t, "--data", filepath.Join(dir, "data"), "--nats-listen", "127.0.0.1:0")
	if err := os.Symlink(binary, filepath.Join(dir, "switchboard")); err != nil {
		t.Fatal(err)
	}
	photo := make([]byte, 70_000)
	copy(photo, "\x89PNG\r\n\x1a\n")
	for i := 8; i < len(photo); i++ {
		photo[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dir, "photo.png"), photo, 0o644); err != nil {
		t.Fatal(err)
	}
	script := strings.ReplaceAll(block, "http://localhost:8080", p.HTTP)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's media example failed: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "copy.png"))
	if err != nil || !bytes.Equal(got, photo) {
		t.Fatalf("copy.png differs from photo.png (%v)\n%s", err, out)
	}
	for _, want := range []string{`"key":"u/alice/`, `"mime":"image/png"`, "photo.png", "copy.png"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the example's output lacks %q:\n%s", want, out)
		}
	}
}

// A media function running alone serves the embedded store's signed URLs
// on its own listener: a gateway never holds the store or its key, and
// only forwards the token-checked requests to the function.
func TestStandaloneMediaFunctionServesItsURLs(t *testing.T) {
	data := t.TempDir()
	core := start(t, "--data", data, "--nats-listen", "127.0.0.1:0", "--functions", "receipts,presence")
	startFunction(t, "media", "--nats", core.NATSURL, "--data", data, "--media-listen", "127.0.0.1:0")
	tok := token(t, data, "alice", "phone")

	photo := []byte("not really a png, but its bytes")
	auth := http.Header{"Authorization": {"Bearer " + tok}}
	code, b := httpDo(t, "POST", core.HTTP+"/v1/media/uploads", auth, fmt.Appendf(nil, `{"mime":"image/png","size":%d}`, len(photo)))
	var ticket struct {
		Key, URL string
		Headers  map[string]string
	}
	if code != http.StatusCreated || json.Unmarshal(b, &ticket) != nil {
		t.Fatalf("upload ticket through the gateway: %d %s", code, b)
	}
	if strings.HasPrefix(ticket.URL, core.HTTP) {
		t.Fatalf("the ticket points at the gateway (%s), which cannot verify it", ticket.URL)
	}
	put := http.Header{}
	for k, v := range ticket.Headers {
		put.Set(k, v)
	}
	if code, b := httpDo(t, "PUT", ticket.URL, put, photo); code != http.StatusCreated {
		t.Fatalf("upload to the function: %d %s", code, b)
	}
	code, b = httpDo(t, "GET", core.HTTP+"/v1/media/download?key="+ticket.Key, auth, nil)
	var dl struct{ URL string }
	if code != http.StatusOK || json.Unmarshal(b, &dl) != nil {
		t.Fatalf("download URL: %d %s", code, b)
	}
	if code, b := httpDo(t, "GET", dl.URL, nil, nil); code != http.StatusOK || !bytes.Equal(b, photo) {
		t.Fatalf("download from the function: %d %q", code, b)
	}
	// The gateway's own blob route serves nothing: it has no key.
	if code, _ := httpDo(t, "GET", core.HTTP+dl.URL[strings.Index(dl.URL, "/v1/"):], nil, nil); code != http.StatusNotFound {
		t.Fatalf("the gateway served a blob URL: %d", code)
	}
}

// The README's nats CLI example runs as written, as the operator with the
// key the all-in-one made, against a system with a device in it.
func TestReadmeNATSCLIExample(t *testing.T) {
	cli := tk.NATSCLI(t)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- nats-cli-example -->\n```sh\n")
	block, _, ok2 := strings.Cut(block, "```\n<!-- /nats-cli-example -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no nats CLI example block")
	}
	dir := t.TempDir()
	p := start(t, "--data", filepath.Join(dir, "data"), "--nats-listen", "127.0.0.1:0")
	bob := tk.DialToken(t, p.WSURL, token(t, filepath.Join(dir, "data"), "bob", "phone"))
	alice := tk.DialToken(t, p.WSURL, token(t, filepath.Join(dir, "data"), "alice", "phone"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("hi")); err != nil {
		t.Fatal(err)
	}
	bob.Ack(tk.RecvMsg(t, bob, 10*time.Second).Seq)
	_ = bob.Close() // its cursor is saved as its session ends

	script := strings.ReplaceAll(block, "nats://127.0.0.1:4222", p.NATSURL)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(cli)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's nats CLI example failed: %v\n%s", err, out)
	}
	for _, want := range []string{"Republishing: inbox.* to sb.live.{{wildcard(1)}}", "bob.phone", "receipts", "presence", "media"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the example's output lacks %q:\n%s", want, out)
		}
	}
	// And without the key, the server refuses the CLI.
	if out, err := exec.Command(cli, "-s", p.NATSURL, "stream", "ls").CombinedOutput(); err == nil {
		t.Fatalf("the nats CLI got in without a key:\n%s", out)
	}
}
