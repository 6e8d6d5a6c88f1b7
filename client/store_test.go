package client

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

func storeOutbox(t *testing.T, st *localstore.Store) string {
	t.Helper()
	ob, err := st.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range ob {
		ids = append(ids, o.ID)
	}
	return strings.Join(ids, ",")
}

func storedMsg(t *testing.T, st *localstore.Store, from, id string) localstore.Message {
	t.Helper()
	m, ok, err := st.Message(from, id)
	if err != nil || !ok {
		t.Fatalf("message %s from %q not in the store (%v)", id, from, err)
	}
	return m
}

// With a Store, each step of a send, a receipt and a received message is
// in the store when the client acts on it, and a new client resends the
// stored outbox first, in order, and drops what the store has.
func TestStoreRecordsEachStepAndANewClientResumesFromIt(t *testing.T) {
	st, err := localstore.Open(filepath.Join(t.TempDir(), "device.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := newScript(t)
	c := s.dial(t, Options{Store: st}, newWaiter(true))
	sc := s.accept(t)

	m1 := queue(t, c, "m1")
	if got := storeOutbox(t, st); got != "m1" {
		t.Fatalf("outbox once Send queued m1: [%s]", got)
	}
	sc.expectSends(t, "m1")
	queue(t, c, "m2")
	m3 := queueTo(t, c, "carol", "m3")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Send(ctx, "bob", "m4", []byte(`"m4"`)); errc <- err }()
	sc.expectSends(t, "m2", "m3", "m4")
	if got := storeOutbox(t, st); got != "m1,m2,m3,m4" {
		t.Fatalf("outbox: [%s]", got)
	}

	cancel() // m4 withdrawn
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Send m4: %v", err)
	}
	var final protocol.ErrorCode
	for _, e := range protocol.Errors {
		if !e.Retry {
			final = e.Code
			break
		}
	}
	sc.fail(final, "m3", 0) // m3 refused for good
	if _, err := outcome(t, c, m3); err == nil {
		t.Fatal("m3 not refused")
	}
	sc.sent("m1", 10)
	if _, err := outcome(t, c, m1); err != nil {
		t.Fatal(err)
	}
	if m := storedMsg(t, st, "", "m1"); m.Seq != 10 || m.Status != localstore.Sent {
		t.Fatalf("m1 once Send returned: %+v", m)
	}
	if got := storeOutbox(t, st); got != "m2" {
		t.Fatalf("outbox after m1 sent, m3 refused, m4 withdrawn: [%s]", got)
	}
	if m := storedMsg(t, st, "", "m4"); m.Status != localstore.Dropped {
		t.Fatalf("m4: %+v", m)
	}

	sc.receipt(protocol.StatusDelivered, "bob", 10, 10, 30)
	if r := recvReceipt(t, c); r.ID != "m1" {
		t.Fatalf("receipt %+v", r)
	}
	sc.expectAcks(t, 30)
	if m := storedMsg(t, st, "", "m1"); m.Status != localstore.Delivered {
		t.Fatalf("m1 after its receipt was acked: %+v", m)
	}

	sc.msg("a1", "alice", 20)
	sc.msg("a2", "alice", 21)
	if m := recvMsg(t, c); m.ID != "a1" {
		t.Fatalf("got %+v", m)
	}
	if m := storedMsg(t, st, "alice", "a1"); m.Seq != 20 || m.Conv != "alice" || string(m.Body) != `"hi"` {
		t.Fatalf("a1 in the store: %+v", m)
	}
	c.Ack(20)
	c.Read(20)
	if h, _ := st.CursorHint(); h != 20 {
		t.Fatalf("cursor hint %d", h)
	}
	if w, _ := st.ReadWatermark("alice"); w != 20 {
		t.Fatalf("alice's read watermark %d", w)
	}
	if m := recvMsg(t, c); m.ID != "a2" {
		t.Fatalf("got %+v", m)
	}
	sc.expectAcks(t, 20)
	c.Close()

	// A new client on the same store: m2 goes out first, a1 and a2 come
	// again and are dropped (and acked), b1 is new.
	c2 := s.dial(t, Options{Store: st}, newWaiter(true))
	sc2 := s.accept(t)
	sc2.expectSends(t, "m2")
	m5 := queue(t, c2, "m5")
	sc2.expectSends(t, "m5")
	sc2.sent("m2", 40)
	sc2.sent("m5", 41)
	if _, err := outcome(t, c2, m5); err != nil {
		t.Fatal(err)
	}
	if m := storedMsg(t, st, "", "m2"); m.Seq != 40 {
		t.Fatalf("m2 resent: %+v", m)
	}
	sc2.msg("a1", "alice", 20)
	sc2.msg("a2", "alice", 21)
	sc2.msg("b1", "bob", 22)
	if m := recvMsg(t, c2); m.ID != "b1" {
		t.Fatalf("got %s from %s, want b1 (a1 and a2 were handed to the app before)", m.ID, m.From)
	}
	sc2.expectAcks(t, 20, 21)
	if d := c2.Stats().DuplicatesDropped; d != 2 {
		t.Fatalf("DuplicatesDropped = %d, want 2", d)
	}
	if got := storeOutbox(t, st); got != "" {
		t.Fatalf("outbox at the end: [%s]", got)
	}

	// m1 (delivered) and m2 (sent) were sent by earlier clients: their
	// receipts still reach the app, each tick once.
	sc2.receipt(protocol.StatusRead, "bob", 0, 40, 50)
	want := []string{"m1 read", "m2 read"}
	for _, w := range want {
		if r := recvReceipt(t, c2); r.ID+" "+r.Status != w {
			t.Fatalf("receipt %+v, want %s", r, w)
		}
	}
	sc2.expectAcks(t, 50)
	if m := storedMsg(t, st, "", "m2"); m.Status != localstore.Read {
		t.Fatalf("m2 after the read: %+v", m)
	}
}

// storeGate, run by a trigger on the local store's messages table, holds
// the store's write of a message until the test lets it go: newStoreGate
// sets up a test's.
var storeGate struct {
	mu               sync.Mutex
	entered, release chan struct{}
}

func newStoreGate() (entered, release chan struct{}) {
	storeGate.mu.Lock()
	defer storeGate.mu.Unlock()
	storeGate.entered, storeGate.release = make(chan struct{}, 1), make(chan struct{})
	return storeGate.entered, storeGate.release
}

func init() {
	sqlite.MustRegisterScalarFunction("test_store_gate", 0, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
		storeGate.mu.Lock()
		entered, release := storeGate.entered, storeGate.release
		storeGate.mu.Unlock()
		entered <- struct{}{}
		<-release
		return int64(0), nil
	})
}

// A message an earlier process stored comes again, and the app acks its
// seq (from what it kept) while the store is being asked about it: the
// seq is acked once, by the client, and the app's ack writes nothing.
func TestKnownMessageAckedByTheAppMeanwhileIsAckedOnce(t *testing.T) {
	entered, release := newStoreGate()
	path := filepath.Join(t.TempDir(), "device.db")
	st, err := localstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Received(localstore.Message{Conv: "bob", From: "bob", Device: "phone", ID: "m1", Seq: 5, TS: time.UnixMilli(1795582349000), Body: []byte(`"hi"`)}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TRIGGER gate BEFORE INSERT ON messages WHEN NEW.id = 'm1' BEGIN SELECT test_store_gate(); END`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if st, err = localstore.Open(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	s := newScript(t)
	c, conn, _ := s.dialConnected(t, Options{Store: st, AckGather: -1})
	conn.msg("m1", "bob", 5)
	<-entered // the read loop is asking the store
	acked := make(chan struct{})
	go func() { c.Ack(5); close(acked) }() // the app acks what it kept (its own store write waits for the gate)
	deadline := time.NewTimer(stuck)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		taken := c.acked.has(seqKey(5))
		c.mu.Unlock()
		if taken {
			break
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatal("the app's ack was never taken")
		}
	}
	close(release)
	<-acked
	conn.expectAcks(t, 5)
	if err := c.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	if f := conn.next(t); f.Type != protocol.TypeTyping {
		t.Fatalf("next frame %s seq %d, want the typing fence: seq 5 acked twice", f.Type, f.Seq)
	}
}
