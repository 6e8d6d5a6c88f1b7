package presence_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// takeAndHold pulls the next lease change as an instance that then dies
// would: never acked.
func (e *env) takeAndHold(t *testing.T) {
	t.Helper()
	cons, err := e.js.Consumer(context.Background(), "KV_"+contract.PresenceKV, "presence")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
		return
	}
	t.Fatalf("nothing to take: %v", batch.Error())
}

// noPulls waits until no pull of a stopped instance is left on the durable.
func (e *env) noPulls(t *testing.T) {
	t.Helper()
	tk.WaitFor(t, 10*time.Second, func() error {
		cons, err := e.js.Consumer(context.Background(), "KV_"+contract.PresenceKV, "presence")
		if err != nil {
			return err
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			return err
		}
		if info.NumWaiting > 0 {
			return tk.Errorf("%d pull requests waiting", info.NumWaiting)
		}
		return nil
	})
}

func (e *env) record(t *testing.T, user string) contract.PresenceRecord {
	t.Helper()
	var rec contract.PresenceRecord
	entry, err := e.kv.Get(context.Background(), contract.PresenceUserKey(user))
	if err != nil {
		return rec
	}
	_ = json.Unmarshal(entry.Value(), &rec)
	return rec
}

// Last seen is the latest change's time whatever order the changes are
// applied in: here the phone's going, held by an instance that dies, is
// applied after the laptop's, which came later.
func TestLastSeenIsTheLatestChangeInAnyOrder(t *testing.T) {
	e := newEnv(t)
	stop := e.stoppable(t, 2*time.Second)
	ups := e.updates(t, "bob")
	e.lease(t, "bob", "phone", time.Minute)
	e.lease(t, "bob", "laptop", time.Minute)
	if u := next(t, ups, 10*time.Second); !u.Online {
		t.Fatalf("update %+v, want online", u)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		if n := len(e.record(t, "bob").Devices); n != 2 {
			return tk.Errorf("%d devices in the record", n)
		}
		return nil
	})
	stop()
	e.noPulls(t)

	e.unlease(t, "bob", "phone")
	// The two changes' times must differ for the order to show: this gap
	// is what is under test.
	time.Sleep(300 * time.Millisecond) // the gap between the two changes is what is tested
	before := time.Now().UnixMilli()
	e.unlease(t, "bob", "laptop")
	e.takeAndHold(t) // the phone's change, by an instance that dies

	e.stoppable(t, 2*time.Second)
	u := next(t, ups, 10*time.Second)
	if u.Online || u.LastSeen < before-50 {
		t.Fatalf("update %+v: last seen %d ms before the laptop went (%d)", u, before-u.LastSeen, before)
	}
}

// A device whose expiry was missed (the function was down longer than the
// marker is kept) does not hide the next device's coming online.
func TestMissedExpiryDoesNotHideTheNextOnline(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	ups := e.updates(t, "bob")
	rec := contract.PresenceRecord{Devices: map[string]int64{"tablet": 1}, Applied: map[string]uint64{"tablet": 1}, LastSeen: 1}
	b, _ := json.Marshal(&rec)
	if _, err := e.kv.Create(context.Background(), contract.PresenceUserKey("bob"), b); err != nil {
		t.Fatal(err)
	}
	if v := e.get(t, "alice", "bob"); v[0].Online {
		t.Fatalf("get says %+v, want offline (no lease)", v[0])
	}
	e.lease(t, "bob", "phone", time.Minute)
	if u := next(t, ups, 10*time.Second); !u.Online {
		t.Fatalf("update %+v, want online", u)
	}
	if got := e.record(t, "bob").Devices; len(got) != 1 || got["phone"] == 0 {
		t.Fatalf("devices %v, want the phone alone", got)
	}
}

// A user whose last device's lease expired while no instance ran for
// longer than the bucket keeps expiry markers (so no change will ever
// come for it) goes offline, to followers too, when an instance starts:
// it sweeps the records after such a gap. Here the durable never took a
// change at all.
func TestExpiryMissedWhileDownIsSweptAtStart(t *testing.T) {
	e := newEnv(t)
	ups := e.updates(t, "bob")
	rec := contract.PresenceRecord{Devices: map[string]int64{"tablet": 1}, Applied: map[string]uint64{"tablet": 1}, LastSeen: 1}
	b, _ := json.Marshal(&rec)
	if _, err := e.kv.Create(context.Background(), contract.PresenceUserKey("bob"), b); err != nil {
		t.Fatal(err)
	}
	e.instance(t)
	if u := next(t, ups, 10*time.Second); u.Online || u.User != "bob" {
		t.Fatalf("update %+v, want bob offline", u)
	}
	if got := e.record(t, "bob"); len(got.Devices) != 0 || got.LastSeen != 1 {
		t.Fatalf("record %+v, want no device and last seen kept", got)
	}
}
