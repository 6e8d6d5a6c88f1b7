package main_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
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
	startFunction(t, "receipts", "--nats", core.NATSURL)

	ls := tk.Run(t, cli, "-s", core.NATSURL, "micro", "ls")
	for _, name := range []string{"receipts", "presence", "push"} {
		if !strings.Contains(ls, name) {
			t.Errorf("nats micro ls lacks %s:\n%s", name, ls)
		}
	}
	var instances []struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	}
	out := tk.Run(t, cli, "-s", core.NATSURL, "micro", "ls", "receipts", "--json")
	if err := json.Unmarshal([]byte(out), &instances); err != nil || len(instances) != 2 {
		t.Errorf("nats micro ls receipts --json: %d instances (%v), want 2:\n%s", len(instances), err, out)
	}
	info := tk.Run(t, cli, "-s", core.NATSURL, "micro", "info", "receipts")
	for _, want := range []string{"sb.fn.receipts.status", "1.0.0"} {
		if !strings.Contains(info, want) {
			t.Errorf("nats micro info receipts lacks %q:\n%s", want, info)
		}
	}
	info = tk.Run(t, cli, "-s", core.NATSURL, "micro", "info", "presence")
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
	stats := tk.Run(t, cli, "-s", core.NATSURL, "micro", "stats", "receipts", "--json")
	if !strings.Contains(stats, "applied") {
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
