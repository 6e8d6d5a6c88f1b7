package load

import (
	"errors"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHistPercentilesWithinOnePercent(t *testing.T) {
	h := newHist()
	for i := 1; i <= 100000; i++ { // 1µs .. 100ms, uniform
		h.record(time.Duration(i) * time.Microsecond)
	}
	s := h.summary()
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"p50", s.P50, 50}, {"p90", s.P90, 90}, {"p99", s.P99, 99}, {"p99.9", s.P999, 99.9}, {"max", s.Max, 100}} {
		if math.Abs(c.got-c.want)/c.want > 0.01 {
			t.Errorf("%s = %.3f ms, want %.3f ms ±1%%", c.name, c.got, c.want)
		}
	}
	if s.Count != 100000 || !(s.P50 <= s.P99 && s.P99 <= s.Max) {
		t.Fatalf("summary %+v", s)
	}
}

func TestHistKeepsOutliersAtTheTop(t *testing.T) {
	h := newHist()
	h.record(time.Hour)
	h.record(-time.Second)
	s := h.summary()
	if s.Count != 2 || s.Max < 599000 {
		t.Fatalf("an hour-long latency must show as the max (clamped to 10 min): %+v", s)
	}
}

func TestBodyCarriesItsSendTime(t *testing.T) {
	at := time.Unix(1795582349, 123456789)
	for _, size := range []int{MinSize, 256, 4096} {
		b := putBody(make([]byte, size), at)
		if len(b) != size || b[0] != '"' || b[size-1] != '"' {
			t.Fatalf("size %d: %q", size, b)
		}
		ns, ok := bodyTime(b)
		if !ok || ns != at.UnixNano() {
			t.Fatalf("size %d: read %d, %v", size, ns, ok)
		}
	}
	for _, bad := range []string{``, `"hello"`, `{"a":1}`, `"12345678901234567x9"`} {
		if _, ok := bodyTime([]byte(bad)); ok {
			t.Errorf("%q read as a stamped body", bad)
		}
	}
}

// The checker's verdicts, whatever order "sent" and the delivery arrive in.
func TestLedgerCountsLikeAQueueChecker(t *testing.T) {
	l := newLedger(2)
	now := time.Now()
	at := now.UnixNano()
	n0 := l.begin(0, 0, now, true) // delivered before its "sent"
	if known, first := l.deliver(0, n0, 0, at, now); !known || !first {
		t.Fatal("first delivery not recognised")
	}
	l.confirmed(0, n0, 10, now)
	n1 := l.begin(0, 0, now, true) // lost
	l.confirmed(0, n1, 11, now)
	n2 := l.begin(0, 0, now, true) // delivered twice
	l.confirmed(0, n2, 12, now)
	l.deliver(0, n2, 0, at, now)
	if _, first := l.deliver(0, n2, 0, at, now); first {
		t.Fatal("second delivery counted as first")
	}
	n3 := l.begin(1, 0, now, true) // never confirmed, still delivered
	l.deliver(1, n3, 0, at, now)
	n4 := l.begin(1, 5, now, false) // confirmed for a user not checked
	l.confirmed(1, n4, 13, now)
	l.receipt(0, n0, now)
	l.receipt(0, n0, now) // a receipt twice counts once
	if known, _ := l.deliver(1, 99, 0, at, now); known {
		t.Fatal("a message never begun is known")
	}
	if known, _ := l.deliver(7, 0, 0, at, now); known {
		t.Fatal("an unknown sender is known")
	}
	if known, _ := l.deliver(0, n1, 1, at, now); known { // n1 is to recipient 0
		t.Fatal("a message delivered to another recipient is known")
	}

	c := l.count()
	want := Counts{Attempted: 5, Sent: 4, Delivered: 3, Receipts: 1, Checked: 3, Lost: 1, Duplicated: 1,
		Unconfirmed: 1, MissingReceipts: 2}
	if c != want {
		t.Fatalf("counts\n got %+v\nwant %+v", c, want)
	}
	if got := l.owedMsgs.Load(); got != 1 { // n1
		t.Fatalf("owed messages %d, want 1", got)
	}
	if got := l.owedReceipts.Load(); got != 2 { // n1, n2
		t.Fatalf("owed receipts %d, want 2", got)
	}
}

// A sequence lower than one seen before from the same sender is out of
// order; the same sequence again is a duplicate, not a reordering.
func TestInboxFlagsOutOfOrderPerSender(t *testing.T) {
	var in inbox
	for _, c := range []struct {
		sender int
		seq    uint64
		out    bool
	}{{0, 5, false}, {1, 3, false}, {0, 7, false}, {0, 6, true}, {1, 4, false}, {1, 4, false}, {1, 3, true}} {
		if got := in.order(c.sender, c.seq); got != c.out {
			t.Fatalf("sender %d seq %d: out of order = %v", c.sender, c.seq, got)
		}
	}
}

func TestMsgIDRoundTrip(t *testing.T) {
	for _, n := range []int{0, 7, 123456} {
		if got := parseMsgID(msgID(n)); got != n {
			t.Fatalf("%d → %q → %d", n, msgID(n), got)
		}
	}
	for _, bad := range []string{"", "m", "x1", "m1x", "m-1"} {
		if parseMsgID(bad) >= 0 {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestProcParsing(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "1234 (a (b) c) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000000 500"
	ticks, err := parseStatTicks(stat)
	if err != nil || ticks != 300 {
		t.Fatalf("ticks %d, %v; want 300", ticks, err)
	}
	rss, hwm := parseStatus("Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n")
	if rss != 1024<<10 || hwm != 2048<<10 {
		t.Fatalf("rss %d hwm %d", rss, hwm)
	}
	r, w := parseIO("rchar: 10\nwchar: 20\nsyscr: 7\nsyscw: 9\nread_bytes: 0\n")
	if r != 7 || w != 9 {
		t.Fatalf("syscr %d syscw %d; want 7 and 9", r, w)
	}
	if r, w := parseIO("rchar: 10\n"); r != -1 || w != -1 {
		t.Fatalf("missing counts read as %d and %d; want -1", r, w)
	}
	s, err := readProc(os.Getpid())
	if err != nil || s.rss <= 0 || s.hwm < s.rss {
		t.Fatalf("own process: %+v, %v", s, err)
	}
	if s.sysr <= 0 || s.sysw < 0 {
		t.Fatalf("own process's system calls: read %d, write %d", s.sysr, s.sysw)
	}
}

func TestMetricsParsing(t *testing.T) {
	text := `# HELP switchboard_gateway_sessions Connected device sessions.
switchboard_gateway_sessions 3
switchboard_gateway_closes_total{code="4001"} 2
switchboard_gateway_error_frames_total{code="rate_limited"} 5
go_goroutines 42
`
	s, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if s["sessions"] != 3 || s[`closes_total{code="4001"}`] != 2 || len(s) != 3 {
		t.Fatalf("parsed %v", s)
	}
	if got := label(`error_frames_total{code="rate_limited"}`, "code"); got != "rate_limited" {
		t.Fatalf("label %q", got)
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	for _, c := range []struct {
		mod  func(*Config)
		flag string
	}{
		{func(c *Config) { c.Scenario = "rooms" }, "scenario"},
		{func(c *Config) { c.Scenario, c.GroupSize = ScenarioGroups, 1 }, "group-size"},
		{func(c *Config) { c.Scenario, c.Devices = ScenarioIdle, 0 }, "devices"},
		{func(c *Config) { c.Pairs = 0 }, "pairs"},
		{func(c *Config) { c.Size = 10 }, "size"},
		{func(c *Config) { c.Rate = -1 }, "rate"},
	} {
		cfg := DefaultConfig()
		c.mod(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("want an ErrConfig naming %q, got %v", c.flag, err)
		}
	}
	d := DefaultConfig()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoopbackOnlyForLoopbackTargets(t *testing.T) {
	for _, c := range []struct {
		urls []string
		want bool
	}{
		{[]string{"ws://127.0.0.1:1/v1/ws", "ws://localhost:2/v1/ws"}, true},
		{[]string{"ws://127.0.0.1:1/v1/ws", "ws://10.0.0.1:2/v1/ws"}, false},
		{[]string{"ws://[::1]:1/v1/ws"}, false},
	} {
		tg := Target{URLs: c.urls}
		if got := tg.loopback(); got != c.want {
			t.Errorf("%v: loopback %v", c.urls, got)
		}
	}
}

func TestGroupSetupChunks(t *testing.T) {
	for _, n := range []int{1, 255, 256, 257, 512, 513, 1023} {
		rest := make([]string, n)
		for i := range rest {
			rest[i] = strconv.Itoa(i)
		}
		chunks := setupChunks(rest)
		if want := (n + 255) / 256; len(chunks) != want {
			t.Fatalf("%d members: %d chunks, want %d", n, len(chunks), want)
		}
		var all []string
		for _, c := range chunks {
			if len(c) == 0 || len(c) > 256 {
				t.Fatalf("%d members: a chunk of %d", n, len(c))
			}
			all = append(all, c...)
		}
		if !slices.Equal(all, rest) {
			t.Fatalf("%d members: chunks %v do not name each once, in order", n, chunks)
		}
	}
}

func TestFaultsFailTheRun(t *testing.T) {
	clean := &Report{Messages: Counts{Sent: 10, Delivered: 10, Unconfirmed: 2, MissingReceipts: 1}}
	if err := clean.Faults(); err != nil {
		t.Fatalf("a run that kept every promise: %v", err)
	}
	for want, r := range map[string]*Report{
		"lost 1,":        {Messages: Counts{Lost: 1}},
		"duplicated 1,":  {Messages: Counts{Duplicated: 1}},
		"reordered 1,":   {Messages: Counts{Reordered: 1}},
		"misdelivered 1": {Errors: map[string]int64{"foreign_message": 1}},
		"misdelivered 2": {Errors: map[string]int64{"foreign_message": 1}, Groups: &GroupsResult{Foreign: 1}},
	} {
		if err := r.Faults(); !errors.Is(err, ErrFaults) || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q: %v", want, err)
		}
	}
}
