package load

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// target is an embedded NATS (with the worker functions) and a gateway
// in this process, rate limits lifted as Spawn lifts them.
func target(t *testing.T) Target {
	t.Helper()
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.SendRate, cfg.SendBurst, cfg.FrameRate, cfg.FrameBurst = 1e6, 1e6, 1e6, 1e6
	g := tk.StartGateway(t, n, cfg)
	tokens, err := HS256Tokens(tk.Secret, gateway.TokenRules{})
	if err != nil {
		t.Fatal(err)
	}
	return Target{URLs: []string{g.URL}, MetricsURLs: []string{g.MetricsURL}, NATSURL: n.Server.ClientURL(), NATSOptions: n.Keys.Options(natsauth.Operator), Token: tokens,
		Procs: []Proc{{Role: "serve", PID: os.Getpid()}}}
}

func tiny(scenario string) Config {
	c := DefaultConfig()
	c.Scenario = scenario
	c.Devices, c.Pairs, c.Users, c.Messages, c.Pending, c.Sample, c.Senders = 12, 6, 12, 3, 4, 4, 3
	c.Duration = time.Second
	c.Settle = 50 * time.Millisecond
	c.DrainTimeout = 20 * time.Second
	c.BaselineMsgs = 3000
	c.BaselineDuration = 500 * time.Millisecond
	c.BaselineConsumers = 5
	return c
}

func checkClean(t *testing.T, r *Report) {
	t.Helper()
	m := r.Messages
	if m.Lost != 0 || m.Duplicated != 0 || m.Reordered != 0 || m.MissingReceipts != 0 {
		t.Fatalf("checker: %+v", m)
	}
	if r.Baseline == nil || r.Baseline.Error != "" || r.Baseline.MsgsPerSec <= 0 {
		t.Fatalf("baseline %+v", r.Baseline)
	}
	if len(r.Errors) != 0 {
		t.Fatalf("errors %v (%v)", r.Errors, r.ErrorExamples)
	}
}

// In process, so the race detector sees the load tool and the SDK
// together; cmd/switchboard's tests run the real binary.
func TestRunPairsAtRate(t *testing.T) {
	tg := target(t)
	cfg := tiny(ScenarioPairs)
	cfg.Rate = 300
	r, err := Run(context.Background(), cfg, tg)
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r)
	p := r.Pairs
	if r.Messages.Sent < 100 || r.Messages.Delivered != r.Messages.Sent || r.Messages.Receipts != r.Messages.Sent {
		t.Fatalf("messages %+v", r.Messages)
	}
	for _, l := range []Latency{p.SendSent, p.SendDeliver, p.SendReceipt} {
		if l.Count == 0 || !(l.P50 <= l.P99 && l.P99 <= l.Max) {
			t.Fatalf("latency %+v", l)
		}
	}
	if r.Baseline.Paced == nil || r.Baseline.Paced.Messages == 0 || r.Ratios["throughput"] <= 0 {
		t.Fatalf("paced baseline %+v, ratios %v", r.Baseline.Paced, r.Ratios)
	}
	if r.Server.SendsStored != r.Messages.Sent {
		t.Fatalf("gateway stored %d, checker saw %d sent", r.Server.SendsStored, r.Messages.Sent)
	}
}

func TestRunStorm(t *testing.T) {
	tg := target(t)
	r, err := Run(context.Background(), tiny(ScenarioStorm), tg)
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r)
	s := r.Storm
	if !s.Complete || s.Reconnected != 12 || s.Backlog != 48 || r.Messages.Delivered != 48 || s.StormSeconds <= 0 {
		t.Fatalf("storm %+v, messages %+v", s, r.Messages)
	}
	if s.BacklogDone.Count != 12 {
		t.Fatalf("backlog done for %d devices, want 12", s.BacklogDone.Count)
	}
}

// Devices that connected once and went away get all their messages when
// they return.
func TestRunOfflineFirstConnect(t *testing.T) {
	tg := target(t)
	cfg := tiny(ScenarioOffline)
	cfg.FirstConnect = true
	r, err := Run(context.Background(), cfg, tg)
	if err != nil {
		t.Fatal(err)
	}
	checkClean(t, r)
	o := r.Offline
	if !o.Drained || o.Stored != 36 || r.Messages.Delivered != 12 || o.RSSAway <= 0 {
		t.Fatalf("offline %+v, messages %+v", o, r.Messages)
	}
}

// Children of an idle run each report once connected and once told to
// close: one that fails to report, or that ends while holding its
// devices, is counted as an error each, and their first device numbers
// start on distinct source addresses.
func TestIdleChildrenThatEndEarlyAreCounted(t *testing.T) {
	tg := target(t)
	var mu sync.Mutex
	var firsts []int
	script := []string{
		`echo '{"connected":4}'; read _; echo '{}'`, // as a child does: holds until told, then its last word
		`echo '{"connected":4}'; exit 3`,            // ends while holding its devices
		`exit 2`,                                    // ends before reporting
	}
	tg.ChildCommand = func(devices, first int) *exec.Cmd {
		mu.Lock()
		defer mu.Unlock()
		firsts = append(firsts, first)
		return exec.Command("sh", "-c", script[len(firsts)-1])
	}
	cfg := tiny(ScenarioIdle)
	cfg.Clients, cfg.Devices, cfg.PerSource, cfg.BaselineConsumers = 3, 12, 3, -1
	rep, err := Run(context.Background(), cfg, tg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Idle.Connects.Connected != 8 {
		t.Fatalf("connected %d, want 8 (two children reported 4 each)", rep.Idle.Connects.Connected)
	}
	if n := rep.Errors["clients"]; n != 2 {
		t.Fatalf("errors %v, want 2 of kind clients (one never reported, one ended while holding)", rep.Errors)
	}
	// 4 devices each, 3 per address: 2 addresses and 1 to spare each.
	if fmt.Sprint(firsts) != "[0 9 18]" {
		t.Fatalf("first devices %v, want [0 9 18]", firsts)
	}
}
