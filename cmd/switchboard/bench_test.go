package main_test

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboard-im/switchboard/internal/load"
)

// benchJSON runs `switchboard bench` (the race-built binary) against p at
// tiny sizes and returns its JSON report, both as a generic tree (to check
// that each field is present) and decoded.
func benchJSON(t *testing.T, p *proc, data string, args ...string) (map[string]any, *load.Report) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "report.json")
	full := append([]string{"bench", "--url", p.WSURL, "--metrics", p.Metrics, "--nats", p.NATSURL, "--data", data,
		"--pids", strconv.Itoa(p.cmd.Process.Pid), "--json", out, "--quiet",
		"--settle", "200ms", "--baseline-msgs", "5000", "--baseline-duration", "500ms", "--drain-timeout", "30s"}, args...)
	return runBenchJSON(t, out, full...)
}

func runBenchJSON(t *testing.T, out string, args ...string) (map[string]any, *load.Report) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("bench %v: %v\n%s\n%s", args, err, stdout, stderr)
	}
	if !strings.Contains(string(stdout), "raw JetStream") {
		t.Fatalf("no table on stdout:\n%s", stdout)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	var rep load.Report
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Schema != load.Schema {
		t.Fatalf("schema %q", rep.Schema)
	}
	return tree, &rep
}

// benchNum returns the number at a dotted path of the JSON tree, failing the
// test when it is absent.
func benchNum(t *testing.T, tree map[string]any, path string) float64 {
	t.Helper()
	var cur any = tree
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: %q is not an object", path, k)
		}
		if cur, ok = m[k]; !ok {
			t.Fatalf("%s: no field %q", path, k)
		}
	}
	v, ok := cur.(float64)
	if !ok {
		t.Fatalf("%s = %v, not a number", path, cur)
	}
	return v
}

func benchPositive(t *testing.T, tree map[string]any, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if v := benchNum(t, tree, p); v <= 0 {
			t.Errorf("%s = %v, want > 0", p, v)
		}
	}
}

func benchZero(t *testing.T, tree map[string]any, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if v := benchNum(t, tree, p); v != 0 {
			t.Errorf("%s = %v, want 0", p, v)
		}
	}
}

// benchOrdered checks p50 ≤ p90 ≤ p99 ≤ p99.9 ≤ max of a latency.
func benchOrdered(t *testing.T, tree map[string]any, path string) {
	t.Helper()
	benchPositive(t, tree, path+".count", path+".p50_ms")
	prev := 0.0
	for _, q := range []string{"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"} {
		v := benchNum(t, tree, path+"."+q)
		if v < prev {
			t.Errorf("%s.%s = %v is below the lower quantile %v", path, q, v, prev)
		}
		prev = v
	}
}

// benchClean checks the queue checker's verdict and the baseline.
func benchClean(t *testing.T, tree map[string]any, rep *load.Report) {
	t.Helper()
	benchZero(t, tree, "messages.lost", "messages.duplicated", "messages.reordered", "messages.missing_receipts")
	benchPositive(t, tree, "baseline.msgs_per_sec", "baseline.messages", "baseline.stream_bytes_per_msg")
	benchOrdered(t, tree, "baseline.publish_ack")
	benchOrdered(t, tree, "baseline.publish_consume")
	if len(rep.Errors) != 0 {
		t.Errorf("errors %v: %v", rep.Errors, rep.ErrorExamples)
	}
	var serve *load.ProcStat
	for i, p := range rep.Processes {
		if p.Role == "serve" {
			serve = &rep.Processes[i]
		}
	}
	if serve == nil || serve.Error != "" || serve.RSSAfter <= 0 {
		t.Errorf("no /proc figures for the all-in-one: %+v", rep.Processes)
	}
}

func startForBench(t *testing.T) (*proc, string) {
	data := t.TempDir()
	args := append([]string{"--data", data, "--nats-listen", "127.0.0.1:0"}, load.LiftedLimits...)
	return start(t, args...), data
}

func TestBenchPairsFlatOut(t *testing.T) {
	t.Parallel()
	p, data := startForBench(t)
	tree, rep := benchJSON(t, p, data, "--scenario", "pairs", "--pairs", "10", "--duration", "2s", "--inflight", "4")
	benchClean(t, tree, rep)
	benchPositive(t, tree, "pairs.throughput.sent_per_sec", "pairs.throughput.delivered_per_sec",
		"pairs.throughput.receipts_per_sec", "ratios.throughput", "messages.sent", "pairs.connects.per_sec")
	for _, l := range []string{"send_sent", "send_deliver", "send_receipt"} {
		benchOrdered(t, tree, "pairs."+l)
	}
	m := rep.Messages
	if m.Delivered != m.Sent || m.Receipts != m.Sent || !rep.Pairs.Complete {
		t.Fatalf("not everything came back: %+v", m)
	}
}

func TestBenchPairsAtFixedRate(t *testing.T) {
	t.Parallel()
	p, data := startForBench(t)
	tree, rep := benchJSON(t, p, data, "--scenario", "pairs", "--pairs", "20", "--rate", "200", "--duration", "2s")
	benchClean(t, tree, rep)
	benchOrdered(t, tree, "pairs.send_deliver")
	benchOrdered(t, tree, "baseline.paced.publish_consume")
	benchPositive(t, tree, "baseline.paced.rate", "ratios.send_deliver_p99")
	// 200/s for 2s, give or take the last tick.
	if s := rep.Messages.Sent; s < 380 || s > 400 {
		t.Fatalf("sent %d at 200/s for 2s", s)
	}
}

func TestBenchIdle(t *testing.T) {
	t.Parallel()
	p, data := startForBench(t)
	tree, rep := benchJSON(t, p, data, "--scenario", "idle", "--devices", "40", "--baseline-consumers", "20")
	benchClean(t, tree, rep)
	benchPositive(t, tree, "idle.bytes_per_device", "idle.connects.per_sec", "idle.rss_after_bytes",
		"baseline.consumers.per_sec", "ratios.connect_rate")
	// A few raw consumers may fit in heap the devices' churn freed: only
	// present, not necessarily above zero.
	benchNum(t, tree, "baseline.consumers.rss_bytes_each")
	benchOrdered(t, tree, "idle.connects.latency")
	if c := rep.Idle.Connects; c.Connected != 40 {
		t.Fatalf("connected %d of 40", c.Connected)
	}
}

// Devices held by child processes (for more than one process has sockets
// for) are all connected at once while memory is read, counted by the
// parent, and closed by their children when it is done. The parent's
// settings from the environment are its own, not its children's.
func TestBenchIdleInChildProcesses(t *testing.T) {
	t.Setenv("SWITCHBOARD_CLIENTS", "3") // --clients, for the parent only
	p, data := startForBench(t)
	tree, rep := benchJSON(t, p, data, "--scenario", "idle", "--devices", "40", "--baseline-consumers", "-1")
	benchClean(t, tree, rep)
	benchPositive(t, tree, "idle.bytes_per_device", "idle.connects.per_sec")
	benchOrdered(t, tree, "idle.connects.latency")
	if c := rep.Idle.Connects; c.Connected != 40 || c.Latency.Count != 40 {
		t.Fatalf("connected %d of 40, %d connect latencies", c.Connected, c.Latency.Count)
	}
	// Each child closed its devices (1000) when the parent was done.
	if got := rep.Server.Closes["1000"]; got != 40 {
		t.Fatalf("closes %v, want 40 normal closes", rep.Server.Closes)
	}
}

func TestBenchStorm(t *testing.T) {
	t.Parallel()
	p, data := startForBench(t)
	tree, rep := benchJSON(t, p, data, "--scenario", "storm", "--devices", "20", "--pending", "5", "--senders", "4")
	benchClean(t, tree, rep)
	benchPositive(t, tree, "storm.storm_seconds", "storm.reconnect_seconds", "storm.delivered_per_sec", "storm.feed_per_sec")
	benchOrdered(t, tree, "storm.reconnect")
	benchOrdered(t, tree, "storm.backlog_done")
	s := rep.Storm
	if !s.Complete || s.Reconnected != 20 || s.Backlog != 100 || rep.Messages.Delivered != 100 {
		t.Fatalf("storm %+v, messages %+v", s, rep.Messages)
	}
	if len(rep.Server.Unreachable) != 0 || rep.Server.SendsStored < 100 {
		t.Fatalf("server counters %+v, want 100 sends stored, read from --metrics", rep.Server)
	}
}

func TestBenchOffline(t *testing.T) {
	t.Parallel()
	p, data := startForBench(t)
	tree, rep := benchJSON(t, p, data, "--scenario", "offline", "--users", "20", "--messages", "3", "--sample", "5", "--senders", "4")
	benchClean(t, tree, rep)
	benchPositive(t, tree, "offline.stored_messages", "offline.rss_before_bytes", "offline.rss_after_bytes",
		"offline.rss_after_drain_bytes", "offline.stream_bytes_per_msg", "offline.drain_per_sec", "ratios.drain_rate")
	benchNum(t, tree, "offline.bytes_per_user") // present; its sign is the server's business
	o := rep.Offline
	if !o.Drained || o.Stored != 60 || rep.Messages.Delivered != 15 || rep.Messages.Checked != 15 {
		t.Fatalf("offline %+v, messages %+v", o, rep.Messages)
	}
}

// --spawn needs nothing running: the binary starts its own all-in-one and
// an extra gateway, spreads devices over both and stops them afterwards.
func TestBenchSpawnWithTwoGateways(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "report.json")
	tree, rep := runBenchJSON(t, out, "bench", "--spawn", "--gateways", "1", "--scenario", "pairs", "--pairs", "6",
		"--duration", "1s", "--json", out, "--quiet", "--baseline-msgs", "5000")
	benchClean(t, tree, rep)
	if len(rep.Target.URLs) != 2 {
		t.Fatalf("urls %v", rep.Target.URLs)
	}
	// Each spawned gateway's counters come from its own metrics listener.
	if len(rep.Target.MetricsURLs) != 2 || len(rep.Server.Unreachable) != 0 || rep.Server.SendsStored != rep.Messages.Sent {
		t.Fatalf("metrics %v, server counters %+v, %d sent", rep.Target.MetricsURLs, rep.Server, rep.Messages.Sent)
	}
	roles := map[string]bool{}
	for _, p := range rep.Processes {
		roles[p.Role] = p.Error == ""
		if p.Role != "bench" {
			if err := exec.Command("kill", "-0", strconv.Itoa(p.PID)).Run(); err == nil {
				t.Errorf("spawned %s (pid %d) still runs after bench exited", p.Role, p.PID)
			}
		}
	}
	if !roles["serve"] || !roles["gateway"] || !roles["bench"] {
		t.Fatalf("processes %+v", rep.Processes)
	}
}

// Members in several groups each go away, their groups' senders send,
// and all come back at once: each gets every message of every group it
// is in, on copies as on the log.
func TestBenchGroupStorm(t *testing.T) {
	t.Parallel()
	const groups, size, memberships, pending = 6, 4, 2, 5
	users := groups * (size - 1) / memberships
	for _, run := range []struct {
		logMembers string
		away       bool // the senders go away too
	}{{"0", false}, {"2", false}, {"2", true}} {
		data := t.TempDir()
		args := append([]string{"--data", data, "--nats-listen", "127.0.0.1:0", "--group-log-members", run.logMembers}, load.LiftedLimits...)
		p := start(t, args...)
		tree, rep := benchJSON(t, p, data, "--scenario", "groupstorm", "--groups", strconv.Itoa(groups), "--group-size", strconv.Itoa(size),
			"--memberships", strconv.Itoa(memberships), "--pending", strconv.Itoa(pending), "--senders-away="+strconv.FormatBool(run.away))
		benchClean(t, tree, rep)
		benchPositive(t, tree, "group_storm.storm_seconds", "group_storm.delivered_per_sec", "ratios.group_storm_delivered_rate")
		s, m := rep.GroupStorm, rep.Messages
		want := int64(groups * pending * (size - 1))
		if !s.Complete || s.Users != users || s.Reconnected != users || s.Backlog != want || m.Delivered != want || s.Foreign != 0 || s.BacklogDone.Count != int64(users) || s.SendersAway != run.away {
			t.Fatalf("log from %s members, senders away %v: group storm %+v, messages %+v", run.logMembers, run.away, s, m)
		}
		p.kill()
	}
}

// readCSV reads a CSV file the test made.
func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) == 0 {
		t.Fatalf("%s: %d rows, %v", path, len(rows), err)
	}
	return rows
}

func TestBenchGroups(t *testing.T) {
	t.Parallel()
	p, data := startForBench(t)
	// 260 members: the create names 256 of them and an add the rest, and
	// the clock starts once every member has that add.
	const size = 260
	trace := filepath.Join(t.TempDir(), "trace.csv")
	tree, rep := benchJSON(t, p, data, "--scenario", "groups", "--groups", "2", "--group-size", strconv.Itoa(size), "--duration", "2s", "--inflight", "2", "--trace", trace)
	benchClean(t, tree, rep)
	benchPositive(t, tree, "groups.deliveries_per_sec", "groups.sent_per_sec", "ratios.fanout_throughput",
		"groups.groups_bytes_per_msg", "groups.setup_seconds")
	// Past the default size a group is read from its log: no copy per
	// member (its inbox bytes are the sender's receipts at most, a copy
	// per member would be about size-1 times the log's).
	if in, log := rep.Groups.InboxBytesPerMsg, rep.Groups.GroupsBytesPerMsg; in*10 >= log*float64(size-1) {
		t.Fatalf("inbox bytes per message %.0f against %.0f in the log: copies for a group of %d", in, log, size)
	}
	benchOrdered(t, tree, "groups.send_deliver")
	benchOrdered(t, tree, "groups.send_all_delivered")
	g, m := rep.Groups, rep.Messages
	if !g.Complete || m.Sent == 0 || m.Delivered != (size-1)*m.Sent || m.Checked != m.Delivered || g.Foreign != 0 {
		t.Fatalf("groups %+v, messages %+v", g, m)
	}
	// The trace has a line per message sent to a group, each got by
	// every member, with the time until the last one had it.
	rows := readCSV(t, trace)
	if len(rows) != int(m.Attempted)+1 || strings.Join(rows[0], ",") != "group,message,sent_unix_ms,members_got,last_member_ms" {
		t.Fatalf("trace has %d rows for %d messages; header %q", len(rows), m.Attempted, rows[0])
	}
	full := 0
	for _, r := range rows[1:] {
		if r[3] != strconv.Itoa(size-1) {
			continue // never "sent": owed to no one
		}
		full++
		if ms, err := strconv.ParseFloat(r[4], 64); err != nil || ms <= 0 {
			t.Fatalf("trace row %q: every member has it, so the time until the last did", r)
		}
	}
	if full != int(m.Sent) {
		t.Fatalf("trace: %d messages every member got, %d sent", full, m.Sent)
	}
	help, _ := exec.Command(binary, "bench", "-h").CombinedOutput()
	for _, want := range []string{"idle", "pairs", "storm", "offline", "groups", "--group-size", "--json", "-trace"} {
		if !strings.Contains(string(help), want) {
			t.Errorf("bench -h lacks %q:\n%s", want, help)
		}
	}
}
