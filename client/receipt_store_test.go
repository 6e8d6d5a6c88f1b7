package client

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

// storeWithTrigger opens a new Store whose database has trigger, set
// before the Store opens it (it holds its file's lock once open): a way
// to make its writes fail as a busy or full disk would.
func storeWithTrigger(t *testing.T, trigger string) *localstore.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "device.db")
	st, err := localstore.Open(path) // creates the schema
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(trigger); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if st, err = localstore.Open(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// A receipt whose ticks the Store fails to record once (a busy or full
// disk) drops the connection and comes again; the ticks it carries reach
// the app then. Moved in memory before the failed write, they would not:
// the receipt that came again would move nothing.
func TestReceiptWhoseStoreWriteFailsComesAgainToTheApp(t *testing.T) {
	// The store will fail tick writes until a marker message is stored:
	// one failed write, as a busy or full disk gives.
	st := storeWithTrigger(t, `CREATE TRIGGER fail_ticks BEFORE UPDATE OF status ON messages
WHEN NEW.status = 2 AND NOT EXISTS (SELECT 1 FROM messages WHERE id = 'unlock-ticks')
BEGIN SELECT RAISE(ABORT, 'injected: disk busy'); END`)
	s := newScript(t)
	c := s.dial(t, Options{Store: st}, newWaiter(true))
	sc := s.accept(t)

	m1 := queue(t, c, "m1")
	sc.expectSends(t, "m1")
	sc.sent("m1", 5)
	if _, err := outcome(t, c, m1); err != nil {
		t.Fatal(err)
	}

	sc.receipt(protocol.StatusDelivered, "bob", 5, 5, 100)
	// The client drops the connection (storeReceipt failed) and reconnects.
	sc2 := s.accept(t)
	if _, err := st.Received(localstore.Message{Conv: "zed", From: "zed", Device: "d", ID: "unlock-ticks", Seq: 1, TS: time.Now(), Body: []byte(`"x"`)}); err != nil {
		t.Fatal(err)
	}
	// The receipt comes again on the new connection, as the gateway does.
	sc2.receipt(protocol.StatusDelivered, "bob", 5, 5, 100)
	sc2.expectAcks(t, 100)
	select {
	case r := <-c.Receipts():
		t.Logf("receipt reached the app: %+v", r)
	case <-time.After(2 * time.Second):
		got, _, _ := st.Message("", "m1")
		t.Fatalf("the delivered tick of m1 never reached the app (the store now says status %v)", got.Status)
	}
}

// A Store that fails every write does not make the client reconnect at
// MinBackoff forever: the waits grow across the connections it ends,
// as for connects that fail.
func TestStoreFailuresBackOff(t *testing.T) {
	st := storeWithTrigger(t, `CREATE TRIGGER fail_all BEFORE INSERT ON messages
BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END`)
	s := newScript(t)
	w := newWaiter(false)
	const minB = 10 * time.Millisecond
	s.dial(t, Options{Store: st, MinBackoff: minB, MaxBackoff: time.Minute}, w)
	longest := time.Duration(0)
	for i := range 8 {
		sc := s.accept(t)
		sc.msg("x", "bob", uint64(i+1)) // its write fails: the client ends the connection
		r := w.next(t)
		longest = max(longest, r.d)
		r.end()
	}
	if longest <= minB {
		t.Fatalf("8 connections ended by a failing store, each followed by a wait of at most %s (longest %s): no backoff", minB, longest)
	}
}
