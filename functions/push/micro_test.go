package push

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// notify sends a test push to every device now, bypassing presence and
// coalescing, and answers with the count; bad requests get micro error 400.
func TestNotifyEndpoint(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone", "tablet")
	setOnline(t, n.JS, "bob", "phone") // presence does not matter here

	for round := 1; round <= 2; round++ { // and neither does the window
		resp, err := n.Conn.Request(NotifySubject, []byte(`{"user":"bob"}`), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(resp.Data); got != `{"sent":2}` || resp.Header.Get(micro.ErrorCodeHeader) != "" {
			t.Fatalf("round %d: reply %s, error %q", round, got, resp.Header.Get(micro.ErrorHeader))
		}
	}
	calls := h.Calls()
	if len(calls) != 4 {
		t.Fatalf("%d calls, want 4", len(calls))
	}
	for _, c := range calls {
		if c.N.User != "bob" || c.N.Seq != 0 || c.N.MessageID != "" || c.N.Pending != 1 || c.N.TS == 0 || c.Auth != "Bearer hook-secret" {
			t.Errorf("test push %s (auth %q)", c.Raw, c.Auth)
		}
	}

	resp, err := n.Conn.Request(NotifySubject, []byte(`{"user":"nobody"}`), 5*time.Second)
	if err != nil || string(resp.Data) != `{"sent":0}` {
		t.Errorf("user with no devices: %v %s", err, resp.Data)
	}
	for _, bad := range []string{`{"user":`, `not json`, `{"user":"a.b"}`, `{}`} {
		resp, err := n.Conn.Request(NotifySubject, []byte(bad), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code, desc := resp.Header.Get(micro.ErrorCodeHeader), resp.Header.Get(micro.ErrorHeader); code != "400" || !strings.Contains(desc, "bad request") {
			t.Errorf("%s: code %q description %q", bad, code, desc)
		}
	}
}

// A webhook that refuses the test push is reported as an error with the
// count that did go out.
func TestNotifyReportsWebhookFailure(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, func(n Notification, _ int) int {
		if n.Device == "tablet" {
			return 500
		}
		return 200
	})
	startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone", "tablet")
	resp, err := n.Conn.Request(NotifySubject, []byte(`{"user":"bob"}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code, desc := resp.Header.Get(micro.ErrorCodeHeader), resp.Header.Get(micro.ErrorHeader); code != "502" || !strings.Contains(desc, "tablet") || string(resp.Data) != `{"sent":1}` {
		t.Errorf("code %q description %q data %s", code, desc, resp.Data)
	}
}

// The function is a micro service operators can find: it answers PING,
// INFO and STATS (with its counters), and `nats micro ls` lists it.
func TestServiceDiscovery(t *testing.T) {
	cli := tk.NATSCLI(t)
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone")
	publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)

	resp, err := n.Conn.Request("$SRV.PING.push", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(resp.Data, &ping); err != nil || ping.Name != "push" || ping.Version != Version {
		t.Errorf("ping: %v %s", err, resp.Data)
	}

	resp, err = n.Conn.Request("$SRV.INFO.push", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(resp.Data, &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Endpoints) != 1 || info.Endpoints[0].Subject != NotifySubject || info.Endpoints[0].QueueGroup != micro.DefaultQueueGroup {
		t.Errorf("info endpoints %+v", info.Endpoints)
	}

	resp, err = n.Conn.Request("$SRV.STATS.push", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(resp.Data, &stats); err != nil || len(stats.Endpoints) != 1 {
		t.Fatalf("stats: %v %s", err, resp.Data)
	}
	var counters Stats
	if err := json.Unmarshal(stats.Endpoints[0].Data, &counters); err != nil || counters.Pushed != 1 {
		t.Errorf("stats data %s (%v)", stats.Endpoints[0].Data, err)
	}

	flags := n.CLIFlags(t)
	if out := tk.Run(t, cli, append(flags, "micro", "ls")...); !strings.Contains(out, "push") || !strings.Contains(out, Version) {
		t.Errorf("nats micro ls:\n%s", out)
	}
	if out := tk.Run(t, cli, append(flags, "micro", "stats", "push", "--json")...); !strings.Contains(out, `"pushed": 1`) {
		t.Errorf("nats micro stats push --json lacks the counters:\n%s", out)
	}
}
