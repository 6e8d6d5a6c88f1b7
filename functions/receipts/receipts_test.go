package receipts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// env is a bare server with the streams applied and no function running,
// so each test starts the instances it needs.
type env struct {
	n  *tk.NATS
	js jetstream.JetStream
}

func newEnv(t testing.TB) *env {
	t.Helper()
	n := tk.StartStreams(t, t.TempDir())
	return &env{n: n, js: n.JS}
}

// instance starts a receipts function on its own connection; kill closes
// that connection as a crash would.
func (e *env) instance(t testing.TB) (s *receipts.Service, kill func()) {
	t.Helper()
	nc, err := nats.Connect(e.n.Server.ClientURL(), e.n.Keys.Options(natsauth.Receipts)...)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	cfg := receipts.DefaultConfig()
	cfg.AckWait = time.Second
	cfg.MaxAttempts = 3
	s, err = receipts.Start(context.Background(), nc, js, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop()
		}
		nc.Close()
	})
	return s, func() { stopped = true; nc.Close(); s.Stop() }
}

// event stores a receipt event as a gateway does.
func (e *env) event(t testing.TB, status, sender, id, by, device string, ts int64) {
	t.Helper()
	m := &nats.Msg{Subject: contract.ReceiptsSubject(sender), Header: nats.Header{
		contract.HdrMsgID:  {contract.ReceiptEventDedupID(status, sender, id, by, device) + ":" + strconv.FormatInt(ts, 10)},
		contract.HdrKind:   {contract.KindReceipt},
		contract.HdrStatus: {status},
		contract.HdrFrom:   {by},
		contract.HdrDevice: {device},
		contract.HdrID:     {id},
		contract.HdrTS:     {strconv.FormatInt(ts, 10)},
	}}
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// forwarded returns the receipts stored in user's inbox, as
// "status:id:by".
func (e *env) forwarded(t testing.TB, user string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.js.OrderedConsumer(ctx, contract.Inbox, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.InboxSubject(user)}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for range info.NumPending {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		h := m.Headers()
		out = append(out, h.Get(contract.HdrStatus)+":"+h.Get(contract.HdrID)+":"+h.Get(contract.HdrFrom))
	}
	return out
}

// drained waits until every event was acked by some instance.
func (e *env) drained(t testing.TB) {
	t.Helper()
	tk.WaitFor(t, 20*time.Second, func() error {
		st, err := e.js.Stream(context.Background(), contract.Receipts)
		if err != nil {
			return err
		}
		info, err := st.Info(context.Background())
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d events not applied", info.State.Msgs)
		}
		return nil
	})
}

func (e *env) status(t testing.TB, user, id string) (contract.StatusReply, string) {
	t.Helper()
	req, _ := json.Marshal(contract.StatusRequest{User: user, ID: id})
	m, err := e.n.Conn.Request(contract.StatusSubject, req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r contract.StatusReply
	if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
		return r, code
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	return r, ""
}

func setSettings(t testing.TB, e *env, user string, s contract.Settings) {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), contract.SettingsKV)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	if _, err := kv.Put(context.Background(), user, b); err != nil {
		t.Fatal(err)
	}
}

// equal compares as sets: events about different messages are applied in
// any order.
func equal(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Delivered then read forward one receipt each; repeats, and a delivered
// from another device or after the read, forward nothing and leave the
// first times in place.
func TestStatusNeverGoesBackAndDuplicatesChangeNothing(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	e.event(t, "delivered", "alice", "m1", "bob", "phone", 1000)
	e.event(t, "delivered", "alice", "m1", "bob", "laptop", 1100)
	e.event(t, "read", "alice", "m1", "bob", "laptop", 2000)
	e.event(t, "read", "alice", "m1", "bob", "phone", 2100)
	e.event(t, "delivered", "alice", "m1", "bob", "tablet", 3000)
	e.drained(t)

	if got, want := e.forwarded(t, "alice"), []string{"delivered:m1:bob", "read:m1:bob"}; !equal(got, want) {
		t.Fatalf("alice's inbox has %v, want %v", got, want)
	}
	r, code := e.status(t, "alice", "m1")
	if code != "" {
		t.Fatalf("status: error %s", code)
	}
	if tick := r.To["bob"]; tick == nil || tick.Delivered != 1000 || tick.Read != 2000 {
		t.Fatalf("status of m1 = %+v, want delivered 1000 read 2000", tick)
	}
}

// A read that arrives before its delivered implies delivered; the late
// delivered changes nothing.
func TestReadBeforeDeliveredImpliesDelivered(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	e.event(t, "read", "alice", "m1", "bob", "phone", 5000)
	e.event(t, "delivered", "alice", "m1", "bob", "phone", 4000)
	e.drained(t)
	if got, want := e.forwarded(t, "alice"), []string{"read:m1:bob"}; !equal(got, want) {
		t.Fatalf("alice's inbox has %v, want %v", got, want)
	}
	r, _ := e.status(t, "alice", "m1")
	if tick := r.To["bob"]; tick == nil || tick.Delivered != 5000 || tick.Read != 5000 {
		t.Fatalf("status = %+v, want delivered = read = 5000", tick)
	}
}

// Read receipts go only when both reader and sender have them on; a read
// still counts as delivered.
func TestReadReceiptsOffForReaderOrSender(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	off := contract.DefaultSettings()
	off.ReadReceipts = false
	setSettings(t, e, "bob", off)   // bob hides his reads
	setSettings(t, e, "carol", off) // carol sees nobody's

	e.event(t, "read", "alice", "m1", "bob", "phone", 1000) // bob reads alice's
	e.event(t, "read", "carol", "m2", "dave", "phone", 1000)
	e.event(t, "delivered", "alice", "m3", "dave", "phone", 1000)
	e.event(t, "read", "alice", "m3", "dave", "phone", 2000) // both on: goes
	e.drained(t)

	if got, want := e.forwarded(t, "alice"), []string{"delivered:m1:bob", "delivered:m3:dave", "read:m3:dave"}; !equal(got, want) {
		t.Fatalf("alice's inbox has %v, want %v", got, want)
	}
	if got, want := e.forwarded(t, "carol"), []string{"delivered:m2:dave"}; !equal(got, want) {
		t.Fatalf("carol's inbox has %v, want %v", got, want)
	}
	r, _ := e.status(t, "alice", "m1")
	if tick := r.To["bob"]; tick == nil || tick.Delivered != 1000 || tick.Read != 0 {
		t.Fatalf("status of m1 = %+v, want delivered only", tick)
	}
}

// The status endpoint answers only the sender: the key is built from the
// asking user, so another user asking about the same id finds nothing.
func TestStatusEndpointAnswersOnlyTheSender(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	e.event(t, "delivered", "alice", "m1", "bob", "phone", 1000)
	e.drained(t)
	if _, code := e.status(t, "alice", "m1"); code != "" {
		t.Fatalf("sender asking: %s", code)
	}
	if _, code := e.status(t, "eve", "m1"); code != "404" {
		t.Fatalf("another user asking: code %q, want 404", code)
	}
	for _, bad := range []string{`{`, `{"user":"a.b","id":"m1"}`, `{"user":"alice","id":""}`} {
		m, err := e.n.Conn.Request(contract.StatusSubject, []byte(bad), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code := m.Header.Get("Nats-Service-Error-Code"); code != "400" {
			t.Errorf("request %s: code %q, want 400", bad, code)
		}
	}
}

// Events the function cannot apply are dead-lettered with a reason, once,
// and never block the ones behind them.
func TestPoisonEventsAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	ctx := context.Background()
	bad := []*nats.Msg{
		{Subject: "receipts.alice", Header: nats.Header{contract.HdrKind: {"receipt"}}},                                                 // no fields
		{Subject: "receipts.alice", Header: nats.Header{contract.HdrKind: {"msg"}}, Data: []byte("hi")},                                 // not an event
		{Subject: "receipts.alice", Header: nats.Header{contract.HdrKind: {"receipt"}, contract.HdrStatus: {"seen"}}},                   // bad status
		{Subject: "receipts.alice", Header: nats.Header{contract.HdrKind: {"receipt"}, contract.HdrStatus: {"read"}, "Sb-Id": {"x y"}}}, // bad id
	}
	for _, m := range bad {
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	e.event(t, "delivered", "alice", "m1", "bob", "phone", 1000)
	e.drained(t)
	if got := e.forwarded(t, "alice"); !equal(got, []string{"delivered:m1:bob"}) {
		t.Fatalf("alice's inbox has %v", got)
	}
	dlq, err := e.js.Stream(ctx, contract.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx, jetstream.WithSubjectFilter("dlq.receipts.>"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(bad)) {
		t.Fatalf("DLQ holds %d, want %d", info.State.Msgs, len(bad))
	}
	m, err := dlq.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "dlq.receipts.alice" || m.Header.Get(contract.HdrReason) == "" || m.Header.Get(contract.HdrOrigSeq) == "" {
		t.Fatalf("dead letter %s lacks its reason or origin: %v", m.Subject, m.Header)
	}
}

// Two instances share the work; one is killed mid-stream. Every message
// ends up delivered and read, and the sender's inbox holds exactly one
// receipt per message and status.
func TestInstanceKilledMidStreamLosesNothingAppliesOnce(t *testing.T) {
	e := newEnv(t)
	_, kill := e.instance(t)
	e.instance(t)
	const n = 300
	for i := range n {
		id := "m" + strconv.Itoa(i)
		e.event(t, "delivered", "alice", id, "bob", "phone", int64(1000+i))
		e.event(t, "read", "alice", id, "bob", "phone", int64(5000+i))
		if i == n/3 {
			kill()
		}
	}
	e.drained(t)
	got := e.forwarded(t, "alice")
	seen := map[string]int{}
	for _, r := range got {
		seen[r]++
	}
	for i := range n {
		if k := "read:m" + strconv.Itoa(i) + ":bob"; seen[k] != 1 {
			t.Fatalf("%s forwarded %d times", k, seen[k])
		}
		r, code := e.status(t, "alice", "m"+strconv.Itoa(i))
		if tick := r.To["bob"]; code != "" || tick == nil || tick.Read != int64(5000+i) || tick.Delivered == 0 {
			t.Fatalf("m%d status %+v (%s)", i, tick, code)
		}
	}
	for r, c := range seen {
		if c != 1 {
			t.Fatalf("%s forwarded %d times", r, c)
		}
	}
}

// BenchmarkReceipts measures events applied per second by 1 and 2
// instances: each event is a KV read, a stored forward and a KV write.
func BenchmarkReceipts(b *testing.B) {
	for _, instances := range []int{1, 2} {
		b.Run(fmt.Sprintf("instances=%d", instances), func(b *testing.B) {
			e := newEnv(b)
			for range instances {
				e.instance(b)
			}
			b.ResetTimer()
			for i := range b.N {
				m := &nats.Msg{Subject: contract.ReceiptsSubject("alice"), Header: nats.Header{
					contract.HdrMsgID:  {"bench:" + strconv.Itoa(i)},
					contract.HdrKind:   {contract.KindReceipt},
					contract.HdrStatus: {"delivered"},
					contract.HdrFrom:   {"bob"},
					contract.HdrDevice: {"phone"},
					contract.HdrID:     {"m" + strconv.Itoa(i)},
					contract.HdrTS:     {"1000"},
				}}
				if _, err := e.js.PublishMsgAsync(m); err != nil {
					b.Fatal(err)
				}
			}
			<-e.js.PublishAsyncComplete()
			e.drained(b)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
