package push

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A webhook that fails twice with 500 and then accepts gets each device
// pushed exactly once, after the retries, and nothing is dead-lettered.
func TestRetriesUntilTheWebhookAccepts(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, func(_ Notification, prior int) int {
		if prior < 2 {
			return 500
		}
		return 200
	})
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone", "tablet")
	publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)

	for _, dev := range []string{"phone", "tablet"} {
		if all, ok := h.count("bob", dev); all != 3 || ok != 1 {
			t.Errorf("%s: %d calls, %d accepted; want 3 and 1", dev, all, ok)
		}
	}
	if st := svc.Stats(); st.Retried != 2 || st.Pushed != 2 || st.DeadLettered != 0 {
		t.Errorf("stats %+v", st)
	}
	if dl := deadLetters(t, n.JS); len(dl) != 0 {
		t.Errorf("%d dead letters", len(dl))
	}
}

// Retries only the devices that failed: one accepted at once is not posted
// again while the other is retried.
func TestRetryDoesNotRepostDoneDevices(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, func(n Notification, prior int) int {
		if n.Device == "tablet" && prior < 2 {
			return 503
		}
		return 200
	})
	startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone", "tablet")
	publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)
	if all, _ := h.count("bob", "phone"); all != 1 {
		t.Errorf("phone posted %d times, want 1", all)
	}
	if all, ok := h.count("bob", "tablet"); all != 3 || ok != 1 {
		t.Errorf("tablet: %d calls, %d accepted", all, ok)
	}
}

// A webhook that always fails dead-letters the notification after
// MaxAttempts, on dlq.push.<user> with its headers, and the nats CLI shows it.
func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	cli := tk.NATSCLI(t)
	n := tk.StartNATS(t)
	h := newHook(t, func(Notification, int) int { return 500 })
	cfg := testConfig(h.URL)
	cfg.MaxAttempts = 3
	svc := startPush(t, n, cfg)
	putDevices(t, n.JS, "bob", "phone", "tablet")
	seq := publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)

	for _, dev := range []string{"phone", "tablet"} {
		if all, _ := h.count("bob", dev); all != 3 {
			t.Errorf("%s: %d calls, want 3", dev, all)
		}
	}
	dl := deadLetters(t, n.JS)
	if len(dl) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dl))
	}
	for i, dev := range []string{"phone", "tablet"} {
		m := dl[i]
		want := wantJSON(Notification{User: "bob", Device: dev, MessageID: "m1", From: "alice", Pending: 1, Seq: seq, TS: testTS})
		if m.Subject != "dlq.push.bob" || string(m.Data) != want {
			t.Errorf("dead letter %d: %s %s, want dlq.push.bob %s", i, m.Subject, m.Data, want)
		}
		if r := m.Header.Get(contract.HdrReason); !strings.Contains(r, "500") {
			t.Errorf("reason %q", r)
		}
		if a, s := m.Header.Get(contract.HdrAttempts), m.Header.Get(HdrSeq); a != "3" || s != strconv.FormatUint(seq, 10) {
			t.Errorf("attempts %q seq %q", a, s)
		}
	}
	if st := svc.Stats(); st.DeadLettered != 2 || st.Retried != 2 || st.Pushed != 0 {
		t.Errorf("stats %+v", st)
	}

	out := tk.Run(t, cli, append(n.CLIFlags(t), "stream", "get", contract.DLQ, "1")...)
	for _, want := range []string{"dlq.push.bob", "Sb-Reason", "Sb-Attempts: 3", "Sb-Seq: " + strconv.FormatUint(seq, 10), `"device":"phone"`} {
		if !strings.Contains(out, want) {
			t.Errorf("nats stream get lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret") {
		t.Errorf("the message body is in the DLQ:\n%s", out)
	}
}

// A webhook that cannot be reached is retried, then dead-lettered, and
// the reason leaves out the URL, which may hold a token.
func TestUnreachableWebhookIsRetriedAndRedacted(t *testing.T) {
	n := tk.StartNATS(t)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	cfg := testConfig(gone.URL + "/hook?token=s3cret")
	cfg.MaxAttempts = 2
	svc := startPush(t, n, cfg)
	putDevices(t, n.JS, "bob", "phone")
	publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)

	dl := deadLetters(t, n.JS)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters", len(dl))
	}
	reason := dl[0].Header.Get(contract.HdrReason)
	if !strings.Contains(reason, "refused") || strings.Contains(reason, "s3cret") || strings.Contains(reason, "/hook") {
		t.Errorf("reason %q", reason)
	}
	if st := svc.Stats(); st.Retried != 1 || st.DeadLettered != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A 4xx answer other than 429 is permanent: dead-lettered at once, while
// the other device is pushed normally.
func TestRejectedNotificationIsDeadLetteredAtOnce(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, func(n Notification, _ int) int {
		if n.Device == "phone" {
			return 400
		}
		return 200
	})
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone", "tablet")
	publish(t, n.JS, "bob", "alice", "m1")
	waitDrained(t, n.JS, 10*time.Second)

	if all, _ := h.count("bob", "phone"); all != 1 {
		t.Errorf("phone: %d calls, want 1", all)
	}
	if _, ok := h.count("bob", "tablet"); ok != 1 {
		t.Errorf("tablet: %d accepted, want 1", ok)
	}
	dl := deadLetters(t, n.JS)
	if len(dl) != 1 || dl[0].Header.Get(contract.HdrAttempts) != "1" || !strings.Contains(dl[0].Header.Get(contract.HdrReason), "400") {
		t.Fatalf("dead letters %+v", dl)
	}
	if st := svc.Stats(); st.DeadLettered != 1 || st.Pushed != 1 || st.Retried != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A malformed INBOX message is dead-lettered with a reason, never retried
// and never posted.
func TestMalformedMessageIsDeadLettered(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "bob", "phone")
	full := func() nats.Header {
		return nats.Header{
			contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {"alice"},
			contract.HdrID: {"m1"}, contract.HdrTS: {"1795582349000"},
		}
	}
	cases := []struct {
		name, subject, drop, set, value, reason, dlq string
	}{
		{"no Sb-From", "inbox.bob", contract.HdrFrom, "", "", "Sb-From", "dlq.push.bob"},
		{"no Sb-Kind", "inbox.bob", contract.HdrKind, "", "", "Sb-Kind", "dlq.push.bob"},
		{"bad Sb-Id", "inbox.bob", "", contract.HdrID, "a.b", "Sb-Id", "dlq.push.bob"},
		{"bad Sb-Ts", "inbox.bob", "", contract.HdrTS, "yesterday", "Sb-Ts", "dlq.push.bob"},
		{"bad user", "inbox.b$b", "", "", "", "does not name a valid user", "dlq.push.b$b"},
	}
	var seqs []string // of each case's message
	for i, c := range cases {
		hdr := full()
		if c.drop != "" {
			hdr.Del(c.drop)
		}
		if c.set != "" {
			hdr.Set(c.set, c.value)
		}
		hdr.Set(contract.HdrMsgID, fmt.Sprint("bad-", i))
		ack, err := n.JS.PublishMsg(context.Background(), &nats.Msg{Subject: c.subject, Header: hdr, Data: []byte(secretBody)})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, strconv.FormatUint(ack.Sequence, 10))
	}
	waitDrained(t, n.JS, 10*time.Second)

	dl := deadLetters(t, n.JS)
	if len(dl) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(cases))
	}
	// Workers run in parallel, so the dead letters come in any order.
	bySeq := map[string]*jetstream.RawStreamMsg{}
	for _, m := range dl {
		bySeq[m.Header.Get(HdrSeq)] = m
	}
	for i, c := range cases {
		m := bySeq[seqs[i]]
		if m == nil {
			t.Errorf("%s: no dead letter with %s %s", c.name, HdrSeq, seqs[i])
			continue
		}
		if m.Subject != c.dlq || !strings.Contains(m.Header.Get(contract.HdrReason), c.reason) || m.Header.Get(contract.HdrAttempts) != "1" {
			t.Errorf("%s: dead letter on %s with reason %q attempts %q", c.name, m.Subject, m.Header.Get(contract.HdrReason), m.Header.Get(contract.HdrAttempts))
		}
		if strings.Contains(string(m.Data), "secret") {
			t.Errorf("%s: the message body is in the DLQ: %s", c.name, m.Data)
		}
	}
	if len(h.Calls()) != 0 {
		t.Errorf("malformed messages were posted: %+v", h.Calls())
	}
	if st := svc.Stats(); st.DeadLettered != uint64(len(cases)) || st.Retried != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestBackoff(t *testing.T) {
	base, limit := time.Second, 5*time.Minute
	for attempt, full := range map[uint64]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 9: 256 * time.Second, 10: limit, 60: limit} {
		for range 50 {
			d := backoff(attempt, base, limit, 0)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: %s not in [%s, %s]", attempt, d, full/2, full)
			}
		}
	}
	if d := backoff(1, base, limit, 90*time.Second); d != 90*time.Second {
		t.Errorf("Retry-After 90s gave %s", d)
	}
	if d := backoff(1, base, limit, time.Hour); d != limit {
		t.Errorf("Retry-After 1h gave %s, want the cap", d)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		"-1":                            0,
		"soon":                          0,
		"Wed, 25 Nov 2026 12:00:30 GMT": 30 * time.Second,
		"Wed, 25 Nov 2026 11:00:00 GMT": 0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q = %s, want %s", v, got, want)
		}
	}
}
