package presence_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

type env struct {
	n  *tk.NATS
	js jetstream.JetStream
	kv jetstream.KeyValue
}

func newEnv(t testing.TB) *env {
	t.Helper()
	n := tk.StartStreams(t, t.TempDir())
	kv, err := n.JS.KeyValue(context.Background(), contract.PresenceKV)
	if err != nil {
		t.Fatal(err)
	}
	return &env{n: n, js: n.JS, kv: kv}
}

func (e *env) instance(t testing.TB) { e.stoppable(t, 0) }

// stoppable starts an instance whose durable redelivers after ackWait
// (0: its default), and returns its stop.
func (e *env) stoppable(t testing.TB, ackWait time.Duration) (stop func()) {
	t.Helper()
	nc, err := nats.Connect(e.n.Server.ClientURL(), e.n.Keys.Options(natsauth.Presence)...)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	cfg := presence.DefaultConfig()
	cfg.AckWait = ackWait
	s, err := presence.Start(context.Background(), nc, js, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.WaitSweep() // a first start's, over what the test has not written yet
	var once sync.Once
	stop = func() { once.Do(func() { s.Stop(); nc.Close() }) }
	t.Cleanup(stop)
	return stop
}

// lease writes a device's lease as a gateway does, with a TTL.
func (e *env) lease(t testing.TB, user, device string, ttl time.Duration) {
	t.Helper()
	val, _ := json.Marshal(contract.Lease{Gateway: "gw", Session: "s", Since: time.Now().UnixMilli()})
	if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: contract.LeaseSubject(user, device), Data: val},
		jetstream.WithMsgTTL(ttl)); err != nil {
		t.Fatal(err)
	}
}

func (e *env) unlease(t testing.TB, user, device string) {
	t.Helper()
	if err := e.kv.Delete(context.Background(), contract.LeaseKey(user, device)); err != nil {
		t.Fatal(err)
	}
}

// updates collects the updates published for user.
func (e *env) updates(t testing.TB, user string) chan contract.PresenceUpdate {
	t.Helper()
	ch := make(chan contract.PresenceUpdate, 100)
	sub, err := e.n.Conn.Subscribe(contract.PresenceSubject(user), func(m *nats.Msg) {
		var u contract.PresenceUpdate
		if err := json.Unmarshal(m.Data, &u); err != nil {
			t.Errorf("bad update %q", m.Data)
		}
		ch <- u
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = e.n.Conn.Flush()
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return ch
}

func next(t testing.TB, ch chan contract.PresenceUpdate, timeout time.Duration) contract.PresenceUpdate {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(timeout):
		t.Fatalf("no presence update within %s", timeout)
	}
	return contract.PresenceUpdate{}
}

func (e *env) get(t testing.TB, viewer string, users ...string) []contract.PresenceView {
	t.Helper()
	req, _ := json.Marshal(contract.PresenceRequest{Viewer: viewer, Users: users})
	m, err := e.n.Conn.Request(contract.PresenceGetSubject, req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
		t.Fatalf("get: error %s %s", code, m.Header.Get("Nats-Service-Error"))
	}
	var r contract.PresenceReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	return r.Users
}

// A user is online while any device holds a lease, and goes offline with
// a last seen time when the last one is released. Only the two changes
// are published, not the second device or a refresh.
func TestOnlineWhileAnyDeviceHoldsALease(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	e.instance(t) // two instances: still one update per change
	ups := e.updates(t, "bob")

	e.lease(t, "bob", "phone", time.Minute)
	if u := next(t, ups, 10*time.Second); !u.Online || u.Visibility != contract.VisibleEveryone {
		t.Fatalf("first update %+v, want online", u)
	}
	e.lease(t, "bob", "laptop", time.Minute)
	e.lease(t, "bob", "phone", time.Minute) // a refresh
	e.unlease(t, "bob", "phone")
	before := time.Now().UnixMilli()
	e.unlease(t, "bob", "laptop")
	u := next(t, ups, 10*time.Second)
	if u.Online || u.LastSeen < before-1000 {
		t.Fatalf("second update %+v, want offline with last seen about now", u)
	}
	if v := e.get(t, "alice", "bob"); v[0].Online || v[0].LastSeen != u.LastSeen {
		t.Fatalf("get says %+v, update said %+v", v[0], u)
	}
	// Barrier: carol's change is published after every change of bob's
	// above was applied; nothing about bob may come in between.
	carol := e.updates(t, "carol")
	e.lease(t, "carol", "phone", time.Minute)
	next(t, carol, 10*time.Second)
	select {
	case extra := <-ups:
		t.Fatalf("an extra update %+v", extra)
	default:
	}
}

// A lease that is not refreshed (its gateway died) expires, and the user
// goes offline within the TTL.
func TestExpiredLeaseTurnsUserOffline(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	ups := e.updates(t, "bob")
	e.lease(t, "bob", "phone", time.Second)
	if u := next(t, ups, 10*time.Second); !u.Online {
		t.Fatalf("update %+v, want online", u)
	}
	start := time.Now()
	u := next(t, ups, 10*time.Second)
	if u.Online || u.LastSeen == 0 {
		t.Fatalf("update %+v, want offline", u)
	}
	t.Logf("offline %s after the online update (TTL 1s)", time.Since(start).Round(time.Millisecond))
}

// A device whose lease expired while no instance ran long enough for its
// expiry marker to go too stays in bob's record, and no change will take
// it out. When his last real device goes, he is still announced offline.
func TestADeviceWhoseExpiryWasMissedDoesNotKeepTheUserOnline(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	ups := e.updates(t, "bob")
	e.lease(t, "bob", "phone", time.Minute)
	if u := next(t, ups, 10*time.Second); !u.Online {
		t.Fatalf("update %+v, want online", u)
	}
	// The missed expiry: "tablet" is in the record, its lease nowhere.
	ctx := context.Background()
	entry, err := e.kv.Get(ctx, contract.PresenceUserKey("bob"))
	if err != nil {
		t.Fatal(err)
	}
	var rec contract.PresenceRecord
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	rec.Devices["tablet"], rec.Applied["tablet"] = 1, 1
	b, _ := json.Marshal(&rec)
	if _, err := e.kv.Update(ctx, contract.PresenceUserKey("bob"), b, entry.Revision()); err != nil {
		t.Fatal(err)
	}

	e.unlease(t, "bob", "phone")
	if u := next(t, ups, 10*time.Second); u.Online || u.LastSeen == 0 {
		t.Fatalf("update %+v, want offline with a last seen", u)
	}
	if v := e.get(t, "alice", "bob"); v[0].Online {
		t.Fatalf("get says %+v, want offline", v[0])
	}
}

// Every answer honours the owner's last-seen privacy: everyone, contacts
// (their own list) or nobody. A user always sees their own.
func TestGetHonoursLastSeenPrivacy(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	settings, err := e.js.KeyValue(context.Background(), contract.SettingsKV)
	if err != nil {
		t.Fatal(err)
	}
	set := func(user, vis string, contacts ...string) {
		s := contract.DefaultSettings()
		s.LastSeen, s.Contacts = vis, contacts
		b, _ := json.Marshal(s)
		if _, err := settings.Put(context.Background(), user, b); err != nil {
			t.Fatal(err)
		}
	}
	set("bob", contract.VisibleContacts, "carol")
	set("dave", contract.VisibleNobody)
	for _, u := range []string{"bob", "dave", "erin"} {
		e.lease(t, u, "phone", time.Minute)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		for _, v := range e.get(t, "dave", "dave", "erin") {
			if !v.Online {
				return fmt.Errorf("%s not online yet", v.User)
			}
		}
		if !e.get(t, "carol", "bob")[0].Online {
			return fmt.Errorf("bob not online yet")
		}
		return nil
	})
	cases := []struct {
		viewer, user string
		hidden       bool
	}{
		{"carol", "bob", false}, // a contact
		{"alice", "bob", true},  // not one
		{"bob", "bob", false},   // themselves
		{"alice", "dave", true}, // nobody
		{"bob", "dave", true},
		{"alice", "erin", false}, // default: everyone
	}
	for _, c := range cases {
		v := e.get(t, c.viewer, c.user)[0]
		if v.Hidden != c.hidden || (c.hidden && (v.Online || v.LastSeen != 0)) {
			t.Errorf("%s viewing %s: %+v, want hidden=%v and nothing else shown when hidden", c.viewer, c.user, v, c.hidden)
		}
	}
}

func TestGetRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	many, _ := json.Marshal(contract.PresenceRequest{Viewer: "a", Users: make([]string, contract.MaxPresenceGet+1)})
	for _, bad := range []string{`{`, `{"viewer":"a.b","users":["x"]}`, `{"viewer":"a","users":[]}`,
		`{"viewer":"a","users":["*"]}`, string(many)} {
		m, err := e.n.Conn.Request(contract.PresenceGetSubject, []byte(bad), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code := m.Header.Get("Nats-Service-Error-Code"); code != "400" {
			t.Errorf("request %.60s: code %q, want 400", bad, code)
		}
	}
}

// BenchmarkPresence measures online/offline changes applied per second:
// each is a lease write, a lease read and a compare-and-set of the record.
func BenchmarkPresence(b *testing.B) {
	e := newEnv(b)
	e.instance(b)
	done := make(chan struct{}, 1024)
	sub, _ := e.n.Conn.Subscribe("sb.presence.*", func(*nats.Msg) { done <- struct{}{} })
	defer func() { _ = sub.Unsubscribe() }()
	_ = e.n.Conn.Flush()
	b.ResetTimer()
	go func() {
		for i := range b.N {
			val := []byte(`{"gateway":"gw","session":"s","since":1}`)
			if _, err := e.js.PublishMsgAsync(&nats.Msg{Subject: contract.LeaseSubject(fmt.Sprintf("u%d", i), "phone"), Data: val},
				jetstream.WithMsgTTL(time.Minute)); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	for range b.N {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.Fatal("updates stopped")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
}
