package receipts_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// env is a bare server with the streams applied and no function running,
// so each test starts the instances it needs; gw asks as a gateway does.
type env struct {
	n  *tk.NATS
	gw *contract.Caller
}

func newEnv(t testing.TB) *env {
	t.Helper()
	n := tk.StartStreams(t, t.TempDir())
	return &env{n: n, gw: n.Caller(t, natsauth.Gateway)}
}

// instance starts a receipts function on its own connection in its own
// role; kill closes that connection as a crash would.
func (e *env) instance(t testing.TB) (s *receipts.Service, kill func()) {
	t.Helper()
	return e.instanceWith(t, receipts.DefaultConfig())
}

func (e *env) instanceWith(t testing.TB, cfg receipts.Config) (s *receipts.Service, kill func()) {
	t.Helper()
	nc := e.n.Connect(t, natsauth.Receipts)
	js, _ := jetstream.New(nc)
	s, err := receipts.Start(context.Background(), nc, js, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop()
		}
	})
	return s, func() { stopped = true; nc.Close(); s.Stop() }
}

func (e *env) call(t testing.TB, subject string, req, reply any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return contract.Call(ctx, e.gw, subject, req, reply)
}

// ticks returns the receipts stored in user's inbox, in order.
func (e *env) ticks(t testing.TB, user string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := e.n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(contract.InboxSubject(user)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(contract.HdrKind) == contract.KindReceipt {
			out = append(out, m)
		}
		seq = m.Sequence + 1
	}
}

func tickSays(m *jetstream.RawStreamMsg) string {
	return m.Header.Get(contract.HdrStatus) + " by " + m.Header.Get(contract.HdrFrom) + "/" + m.Header.Get(contract.HdrDevice) +
		" " + m.Header.Get(contract.HdrSeqFrom) + ".." + m.Header.Get(contract.HdrSeqTo)
}

// A device's acked range is one tick per sender, however many messages:
// here 3 writes for 2 senders and a note to self, and none when asked
// again.
func TestDeliveredIsOneTickPerSender(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	req := contract.DeliveredRequest{Reader: "bob", Device: "phone", From: 40, To: 240, Senders: []string{"alice", "carol", "bob"}}
	for range 2 { // the second time, as after a lost answer
		if err := e.call(t, contract.DeliveredSubject, req, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"alice", "carol"} {
		got := e.ticks(t, u)
		if len(got) != 1 || tickSays(got[0]) != "delivered by bob/phone 40..240" {
			t.Fatalf("%s's inbox: %d receipts, first %v", u, len(got), got)
		}
	}
	if got := e.ticks(t, "bob"); len(got) != 0 {
		t.Fatalf("bob got a tick for his note to self: %v", tickSays(got[0]))
	}
	if st := s.Stats(); st.Stored != 4 || st.Delivered != 2 {
		t.Fatalf("stats %+v: want 4 publishes (2 stored, 2 deduped) in 2 requests", st)
	}
}

func setReceipts(t testing.TB, e *env, user string, on bool) {
	t.Helper()
	kv, err := e.n.JS.KeyValue(context.Background(), contract.SettingsKV)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := contract.UpdateSettings(context.Background(), kv, user, func(s *contract.Settings) error {
		s.ReadReceipts = on
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func readPosition(t testing.TB, e *env, reader, peer string) uint64 {
	t.Helper()
	kv, err := e.n.JS.KeyValue(context.Background(), contract.ReadsKV)
	if err != nil {
		t.Fatal(err)
	}
	v, err := kv.Get(context.Background(), contract.ReadKey(reader, peer))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseUint(string(v.Value()), 10, 64)
	return n
}

// A read is a position: it rises, never falls, and each rise is one tick.
// With read receipts off on either side the position still rises (the
// reader's own devices follow it) but the sender is told nothing.
func TestReadIsAPositionAndHonoursPrivacy(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	read := func(reader, sender string, seq uint64) {
		t.Helper()
		if err := e.call(t, contract.ReadSubject, contract.ReadRequest{Reader: reader, Device: "phone", Sender: sender, Seq: seq}, nil); err != nil {
			t.Fatal(err)
		}
	}
	read("bob", "alice", 10)
	read("bob", "alice", 7) // lower: nothing
	read("bob", "alice", 10)
	read("bob", "alice", 12)
	got := e.ticks(t, "alice")
	if len(got) != 2 || tickSays(got[0]) != "read by bob/phone ..10" || tickSays(got[1]) != "read by bob/phone ..12" {
		t.Fatalf("alice's receipts: %d %v", len(got), got)
	}
	if p := readPosition(t, e, "bob", "alice"); p != 12 {
		t.Fatalf("read position %d, want 12", p)
	}

	setReceipts(t, e, "dave", false) // the reader's off
	read("dave", "alice", 20)
	setReceipts(t, e, "erin", false) // the sender's off
	read("bob", "erin", 30)
	if got := e.ticks(t, "alice"); len(got) != 2 {
		t.Fatalf("alice got a read from dave, who has read receipts off: %v", tickSays(got[len(got)-1]))
	}
	if got := e.ticks(t, "erin"); len(got) != 0 {
		t.Fatalf("erin, who has read receipts off, got a read: %v", tickSays(got[0]))
	}
	if readPosition(t, e, "dave", "alice") != 20 || readPosition(t, e, "bob", "erin") != 30 {
		t.Fatal("a hidden read did not move the reader's own position")
	}
}

// Status is answered from positions: bob's phone joined at 5 and settled
// to 20, his laptop joined at 30 and settled to 40; a read position of 15.
func TestStatusFromPositions(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	ctx := context.Background()
	inbox, err := e.n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	created := inbox.CachedInfo().Created
	devs := contract.Devices{Devices: map[string]*contract.Device{
		"phone":  {Start: 5, Stream: created},
		"laptop": {Start: 30, Stream: created},
	}}
	b, _ := json.Marshal(devs)
	kv := func(name string) jetstream.KeyValue {
		k, err := e.n.JS.KeyValue(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	if _, err := kv(contract.DevicesKV).Put(ctx, "bob", b); err != nil {
		t.Fatal(err)
	}
	for dev, floor := range map[string]uint64{"phone": 20, "laptop": 40} {
		if _, err := kv(contract.CursorsKV).Put(ctx, contract.CursorKey("bob", dev), contract.Cursor{Floor: floor, Stream: created.UnixNano()}.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv(contract.ReadsKV).Put(ctx, contract.ReadKey("bob", "alice"), []byte("15")); err != nil {
		t.Fatal(err)
	}
	status := func(seq uint64) contract.Ticks {
		t.Helper()
		var r contract.StatusReply
		if err := e.call(t, contract.StatusSubject, contract.StatusRequest{Sender: "alice", Recipient: "bob", Seq: seq}, &r); err != nil {
			t.Fatal(err)
		}
		return r.Recipients["bob"]
	}
	for seq, want := range map[uint64]contract.Ticks{
		3:  {Delivered: true, Read: true}, // on neither device, but read: a read covers all before it
		10: {Delivered: true, Read: true}, // on the phone, and read
		18: {Delivered: true},             // on the phone
		25: {},                            // between: on neither
		35: {Delivered: true},             // on the laptop
		45: {},                            // past both
	} {
		if got := status(seq); got != want {
			t.Errorf("seq %d: %+v, want %+v", seq, got, want)
		}
	}
	setReceipts(t, e, "bob", false)
	if got := status(10); got != (contract.Ticks{Delivered: true}) {
		t.Errorf("with bob's read receipts off, seq 10: %+v, want delivered only", got)
	}
}

// Bad requests get 400 and change nothing; no function running is
// unavailable, which a gateway answers by asking again later.
func TestBadRequestsAndNoInstance(t *testing.T) {
	e := newEnv(t)
	if err := e.call(t, contract.DeliveredSubject, contract.DeliveredRequest{Reader: "bob", Device: "phone", From: 1, To: 2}, nil); !errors.Is(err, contract.ErrUnavailable) {
		t.Fatalf("with no instance: %v", err)
	}
	e.instance(t)
	for _, req := range []struct {
		subject string
		req     any
	}{
		{contract.DeliveredSubject, contract.DeliveredRequest{Reader: "bob", Device: "phone", From: 5, To: 2, Senders: []string{"alice"}}},
		{contract.DeliveredSubject, contract.DeliveredRequest{Reader: "bob", Device: "phone", From: 0, To: 2, Senders: []string{"alice"}}},
		{contract.DeliveredSubject, contract.DeliveredRequest{Reader: "bob", Device: "phone", From: 1, To: 2, Senders: []string{"a.b"}}},
		{contract.DeliveredSubject, contract.DeliveredRequest{Reader: "b*", Device: "phone", From: 1, To: 2}},
		{contract.ReadSubject, contract.ReadRequest{Reader: "bob", Device: "phone", Sender: "alice"}},
		{contract.ReadSubject, contract.ReadRequest{Reader: "bob", Device: "phone", Sender: ">", Seq: 3}},
		{contract.StatusSubject, contract.StatusRequest{Sender: "alice", Recipient: "", Seq: 3}},
	} {
		var fe *contract.FnError
		if err := e.call(t, req.subject, req.req, nil); !errors.As(err, &fe) || fe.Status != 400 {
			t.Errorf("%s %+v: %v, want a 400", req.subject, req.req, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := e.gw.RequestWithContext(ctx, contract.StatusSubject, []byte("not json"))
	if err != nil || m.Header.Get("Nats-Service-Error-Code") != "400" {
		t.Errorf("a request that is not JSON: %v %v", err, m)
	}
	if got := e.ticks(t, "alice"); len(got) != 0 {
		t.Fatalf("a bad request stored %v", tickSays(got[0]))
	}
}

// Two instances share the requests; one killed mid-stream leaves the
// other answering, and what was asked again stores nothing twice.
func TestInstanceKilledLosesNothingStoresOnce(t *testing.T) {
	e := newEnv(t)
	_, kill := e.instance(t)
	e.instance(t)
	ask := func(i uint64) error {
		return e.call(t, contract.DeliveredSubject, contract.DeliveredRequest{Reader: "bob", Device: "phone", From: i, To: i, Senders: []string{"alice"}}, nil)
	}
	for i := uint64(1); i <= 50; i++ {
		if i == 25 {
			kill()
		}
		// As a gateway does: ask again until answered.
		tk.WaitFor(t, 10*time.Second, func() error { return ask(i) })
	}
	got := e.ticks(t, "alice")
	if len(got) != 50 {
		t.Fatalf("%d receipts for 50 ranges", len(got))
	}
	for i, m := range got {
		if want := strconv.Itoa(i + 1); m.Header.Get(contract.HdrSeqTo) != want || m.Header.Get(contract.HdrStatus) != protocol.StatusDelivered {
			t.Fatalf("receipt %d: %s", i, tickSays(m))
		}
	}
}
