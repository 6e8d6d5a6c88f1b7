package localstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

func openT(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tmpPath(t testing.TB) string { return filepath.Join(t.TempDir(), "device.db") }

func pragma(t testing.TB, s *Store, name string) string {
	t.Helper()
	var v string
	if err := s.read(func(ctx context.Context, c *sql.Conn) error {
		return c.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v)
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOpenCreatesAtSchemaVersionInWALWithFullSync(t *testing.T) {
	s := openT(t, tmpPath(t))
	for name, want := range map[string]string{
		"user_version": fmt.Sprint(SchemaVersion),
		"journal_mode": "wal",
		"synchronous":  "2", // FULL
		"locking_mode": "exclusive",
	} {
		if got := pragma(t, s, name); got != want {
			t.Errorf("PRAGMA %s = %s, want %s", name, got, want)
		}
	}
}

// Migrations step a store from its version to the newest, and one that
// fails leaves the store at the version it had, with nothing of the
// failed transaction in it.
func TestMigrationsStepAndAreAllOrNothing(t *testing.T) {
	path := tmpPath(t)
	v1 := migrations[:1]
	s, err := open(path, v1)
	if err != nil {
		t.Fatal(err)
	}
	// As version 1 wrote them: a pending send, a message from carol and
	// her conversation's watermark.
	for _, q := range []string{
		`INSERT INTO messages (conv, sender, id, body, status) VALUES ('bob', '', 'm1', '"hi"', 0)`,
		`INSERT INTO messages (conv, sender, device, id, seq, body, status) VALUES ('carol', 'carol', 'phone', 'c1', 7, '1', 1)`,
		`INSERT INTO conversations (conv, read_seq) VALUES ('carol', 7)`,
	} {
		if _, err := s.exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	v2 := migrations[:2] // version 2: group traffic, tables built again
	s, err = open(path, v2)
	if err != nil {
		t.Fatal(err)
	}
	if got := pragma(t, s, "user_version"); got != "2" {
		t.Fatalf("user_version = %s after the second migration, want 2", got)
	}
	s.Close()
	// Version 3: places in groups' logs; what this package reads.
	s, err = open(path, migrations[:3])
	if err != nil {
		t.Fatal(err)
	}
	if got := pragma(t, s, "user_version"); got != "3" {
		t.Fatalf("user_version = %s after the third migration, want 3", got)
	}
	if ob, err := s.Outbox(); err != nil || len(ob) != 1 || ob[0].ID != "m1" || ob[0].To != "bob" {
		t.Fatalf("outbox after migrating: %v %v", ob, err)
	}
	if m, ok, err := s.Message("carol", "c1"); err != nil || !ok || m.Seq != 7 || m.Conv != "carol" {
		t.Fatalf("carol's message after migrating: %+v %v %v", m, ok, err)
	}
	if w, err := s.ReadWatermark("carol"); err != nil || w != 7 {
		t.Fatalf("carol's watermark after migrating: %d %v", w, err)
	}
	s.Close()

	// Version 4 creates a table, then fails: neither the table nor the
	// version bump may stay.
	v4 := append(append([]string{}, migrations[:3]...), `CREATE TABLE half (a); INSERT INTO no_such_table VALUES (1);`)
	if _, err := open(path, v4); err == nil || !strings.Contains(err.Error(), "migration to version 4") {
		t.Fatalf("a failing migration opened: %v", err)
	}
	s, err = open(path, migrations[:3])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := pragma(t, s, "user_version"); got != "3" {
		t.Fatalf("user_version = %s after a failed migration, want 3", got)
	}
	if _, err := s.scalar(`SELECT count(*) FROM half`); err == nil {
		t.Fatal("the failed migration's table is there")
	}
}

// A store written by a newer schema is refused with *VersionError and
// left byte for byte as it was.
func TestNewerVersionIsRefusedAndNotTouched(t *testing.T) {
	path := tmpPath(t)
	newer := append(append([]string{}, migrations...), `CREATE TABLE future (a);`)
	s, err := open(path, newer)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddOutgoing(Outgoing{ID: "m1", To: "bob", Body: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Open(path)
	var ve *VersionError
	if !errors.Is(err, ErrNewerVersion) || !errors.As(err, &ve) || ve.File != SchemaVersion+1 || ve.Known != SchemaVersion {
		t.Fatalf("Open of a newer store: %v, want a *VersionError %d > %d", err, SchemaVersion+1, SchemaVersion)
	}
	t.Log(err)
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("refusing the newer store changed the file")
	}
	for _, suffix := range []string{"-wal", "-journal"} {
		if _, err := os.Stat(path + suffix); err == nil {
			t.Errorf("refusing the newer store left %s", path+suffix)
		}
	}
}

// A file that is not a store, and a store cut short (a half-written
// copy, say), are refused with ErrCorrupt.
func TestCorruptOrHalfWrittenFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of garbage: %v, want ErrCorrupt", err)
	} else {
		t.Log(err)
	}

	half := filepath.Join(dir, "half.db")
	s, err := Open(half)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, 5000)
	s.Close()
	fi, err := os.Stat(half)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(half, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(half); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a store cut to half its size: %v, want ErrCorrupt", err)
	} else {
		t.Log(err)
	}

	// Pages overwritten in the middle.
	scribbled := filepath.Join(dir, "scribbled.db")
	s, err = Open(scribbled)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, 5000)
	s.Close()
	f, err := os.OpenFile(scribbled, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 3*4096), 8*4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Open(scribbled); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a scribbled store: %v, want ErrCorrupt", err)
	}
}

const childEnv = "LOCALSTORE_TEST_CHILD_OPEN"

// TestMain lets a test run this binary as a second process that opens a
// store and prints what Open said.
func TestMain(m *testing.M) {
	if path := os.Getenv(fsizeEnv); path != "" {
		fsizeChild(path)
		os.Exit(0)
	}
	if path := os.Getenv(childEnv); path != "" {
		s, err := Open(path)
		if err != nil {
			fmt.Println("error:", err, "| locked:", errors.Is(err, ErrLocked))
			os.Exit(0)
		}
		s.Close()
		fmt.Println("opened")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// An open store is held: a second Open, from this process or another,
// fails with ErrLocked, and succeeds once the first is closed.
func TestSecondOpenIsLocked(t *testing.T) {
	path := tmpPath(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := Open(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open in this process: %v, want ErrLocked", err)
	} else {
		t.Logf("%v (after %v)", err, time.Since(start))
	}

	child := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out := child(); !strings.Contains(out, "locked: true") {
		t.Fatalf("Open in a second process: %q, want ErrLocked", out)
	} else {
		t.Log("child:", out)
	}

	// The holder still works.
	if err := s.AddOutgoing(Outgoing{ID: "m1", To: "bob", Body: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if out := child(); out != "opened" {
		t.Fatalf("Open in a second process after Close: %q", out)
	}
	s2 := openT(t, path)
	if ob, _ := s2.Outbox(); len(ob) != 1 {
		t.Fatalf("outbox after reopening: %v", ob)
	}
}

func ids(ob []Outgoing) string {
	var s []string
	for _, o := range ob {
		s = append(s, o.ID)
	}
	return strings.Join(s, ",")
}

func mustOutbox(t *testing.T, s *Store, want string) {
	t.Helper()
	ob, err := s.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(ob); got != want {
		t.Fatalf("outbox = [%s], want [%s]", got, want)
	}
}

// The outbox keeps sends in the order they were added, across a reopen;
// a confirmed one leaves it, a dropped one too and comes back at the end
// when added again, and adding a pending or stored one changes nothing.
func TestOutboxOrderAndConfirm(t *testing.T) {
	path := tmpPath(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	media := &protocol.Media{Key: "k1", Mime: "image/png", Size: 3, SHA256: "abc"}
	for _, id := range []string{"a", "b", "c", "d"} {
		o := Outgoing{ID: id, To: "bob", Body: json.RawMessage(`"` + id + `"`)}
		if id == "c" {
			o.Media = media
		}
		if err := s.AddOutgoing(o); err != nil {
			t.Fatal(err)
		}
	}
	mustOutbox(t, s, "a,b,c,d")
	if err := s.Confirm("b", 12, time.UnixMilli(1000), Sent); err != nil {
		t.Fatal(err)
	}
	if err := s.AddOutgoing(Outgoing{ID: "a", To: "bob", Body: json.RawMessage(`"other"`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddOutgoing(Outgoing{ID: "b", To: "bob", Body: json.RawMessage(`"b"`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop("a"); err != nil {
		t.Fatal(err)
	}
	mustOutbox(t, s, "c,d")
	if err := s.AddOutgoing(Outgoing{ID: "a", To: "bob", Body: json.RawMessage(`"a2"`)}); err != nil {
		t.Fatal(err)
	}
	mustOutbox(t, s, "c,d,a")
	s.Close()

	s = openT(t, path)
	mustOutbox(t, s, "c,d,a")
	ob, _ := s.Outbox()
	if ob[0].Media == nil || *ob[0].Media != *media || string(ob[0].Body) != `"c"` || ob[0].To != "bob" {
		t.Fatalf("c came back as %+v", ob[0])
	}
	if string(ob[2].Body) != `"a2"` {
		t.Fatalf("a re-added after its drop has body %s, want the new one", ob[2].Body)
	}
	m, ok, err := s.Message("", "b")
	if err != nil || !ok || m.Seq != 12 || m.Status != Sent || m.TS.UnixMilli() != 1000 || string(m.Body) != `"b"` {
		t.Fatalf("b = %+v %v %v", m, ok, err)
	}
}

// A received message is stored once by (sender, id); the store says so
// after a reopen, with the seq it was first stored at and whether it was
// acked.
func TestDedupAcrossReopen(t *testing.T) {
	path := tmpPath(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	in := func(s *Store, from, id string, seq uint64) Seen {
		t.Helper()
		seen, err := s.Received(Message{Conv: from, From: from, Device: "phone", ID: id, Seq: seq, TS: time.UnixMilli(int64(seq)), Body: json.RawMessage(`"x"`)})
		if err != nil {
			t.Fatal(err)
		}
		return seen
	}
	if seen := in(s, "alice", "m1", 10); seen.Dup {
		t.Fatal("first copy reported as a duplicate")
	}
	in(s, "alice", "m2", 11)
	if seen := in(s, "bob", "m1", 12); seen.Dup {
		t.Fatal("bob's m1 is not alice's")
	}
	if err := s.Acked(10); err != nil {
		t.Fatal(err)
	}
	if seen := in(s, "alice", "m1", 10); !seen.Dup || seen.FirstSeq != 10 || !seen.Acked {
		t.Fatalf("redelivery: %+v", seen)
	}
	s.Close()

	s = openT(t, path)
	if seen := in(s, "alice", "m1", 20); !seen.Dup || seen.FirstSeq != 10 || !seen.Acked {
		t.Fatalf("second stored copy after reopening: %+v", seen)
	}
	if seen := in(s, "alice", "m2", 11); !seen.Dup || seen.FirstSeq != 11 || seen.Acked {
		t.Fatalf("unacked redelivery after reopening: %+v", seen)
	}
	if n, _ := s.Count(); n != 3 {
		t.Fatalf("%d messages stored, want 3", n)
	}
	if h, err := s.CursorHint(); err != nil || h != 10 {
		t.Fatalf("cursor hint = %d %v, want 10", h, err)
	}
	if err := s.Acked(12); err != nil {
		t.Fatal(err)
	}
	if err := s.Acked(11); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.CursorHint(); h != 12 {
		t.Fatalf("cursor hint = %d, want 12 (it never goes back)", h)
	}
	ms, err := s.Messages("alice", 0)
	if err != nil || len(ms) != 2 || ms[0].ID != "m1" || ms[1].ID != "m2" || ms[0].From != "alice" || ms[0].Device != "phone" {
		t.Fatalf("alice's conversation: %+v %v", ms, err)
	}
}

// Receipts are positions: delivered covers a range of this user's
// messages to the recipient, read everything up to a seq. Each tick only
// rises, and a receipt that came before "sent" is kept by Confirm.
func TestTicksOnlyRise(t *testing.T) {
	s := openT(t, tmpPath(t))
	for _, x := range []struct {
		to, id string
		seq    uint64
	}{{"bob", "m1", 10}, {"bob", "m2", 12}, {"carol", "m4", 13}, {"bob", "m3", 14}, {"bob", "m5", 0}} {
		if err := s.AddOutgoing(Outgoing{ID: x.id, To: x.to, Body: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
		if x.seq > 0 {
			if err := s.Confirm(x.id, x.seq, time.Now(), Sent); err != nil {
				t.Fatal(err)
			}
		}
	}
	status := func() string {
		var out []string
		for _, id := range []string{"m1", "m2", "m3", "m4", "m5"} {
			m, _, err := s.Message("", id)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s:%d", id, m.Status))
		}
		return strings.Join(out, " ")
	}
	steps := []struct {
		by, status string
		from, to   uint64
		want       string
	}{
		{"bob", protocol.StatusDelivered, 9, 12, "m1:2 m2:2 m3:1 m4:1 m5:0"},
		{"bob", protocol.StatusRead, 0, 10, "m1:3 m2:2 m3:1 m4:1 m5:0"},
		{"bob", protocol.StatusDelivered, 9, 14, "m1:3 m2:2 m3:2 m4:1 m5:0"}, // m1 stays read; carol's m4 untouched
		{"carol", protocol.StatusRead, 0, 13, "m1:3 m2:2 m3:2 m4:3 m5:0"},
		{"bob", protocol.StatusRead, 0, 14, "m1:3 m2:3 m3:3 m4:3 m5:0"}, // pending m5 untouched
		{"bob", protocol.StatusDelivered, 0, 100, "m1:3 m2:3 m3:3 m4:3 m5:0"},
	}
	for i, st := range steps {
		if err := s.ApplyReceipt(st.by, st.status, st.from, st.to); err != nil {
			t.Fatal(err)
		}
		if got := status(); got != st.want {
			t.Fatalf("step %d (%s %s %d-%d): %s, want %s", i, st.by, st.status, st.from, st.to, got, st.want)
		}
	}
	// m5's read came before its "sent".
	if err := s.Confirm("m5", 20, time.Now(), Read); err != nil {
		t.Fatal(err)
	}
	// A duplicate "sent" later does not take it back.
	if err := s.Confirm("m5", 20, time.Now(), Sent); err != nil {
		t.Fatal(err)
	}
	if got := status(); !strings.HasSuffix(got, "m5:3") {
		t.Fatalf("after an early read: %s", got)
	}
}

// The read watermark of a conversation only rises; unread counts follow
// it.
func TestReadWatermarks(t *testing.T) {
	s := openT(t, tmpPath(t))
	for i, from := range []string{"alice", "alice", "carol", "alice"} {
		if _, err := s.Received(Message{Conv: from, From: from, ID: fmt.Sprintf("m%d", i), Seq: uint64(10 + i), Body: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	// alice: 10, 11, 13; carol: 12
	if ok, err := s.MarkRead(11); err != nil || !ok {
		t.Fatalf("MarkRead(11) = %v %v", ok, err)
	}
	if ok, _ := s.MarkRead(99); ok {
		t.Fatal("MarkRead of an unknown seq found a message")
	}
	if ok, _ := s.MarkRead(10); !ok { // lower: stays at 11
		t.Fatal("MarkRead(10)")
	}
	if w, _ := s.ReadWatermark("alice"); w != 11 {
		t.Fatalf("alice's watermark = %d, want 11", w)
	}
	if err := s.SetReadWatermark("carol", 12); err != nil {
		t.Fatal(err)
	}
	cs, err := s.Conversations()
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(cs)
	want := "[{ alice 3 1 11 0 4} { carol 1 0 12 0 3}]"
	if got != want {
		t.Fatalf("conversations = %s, want %s", got, want)
	}
}

// A write that finds no room fails with ErrDiskFull and keeps nothing of
// itself; what was stored before stays. SQLite reports a full disk and a
// page limit reached with the same code (SQLITE_FULL), so the limit
// stands in for the disk here.
func TestFullDisk(t *testing.T) {
	s := openT(t, tmpPath(t))
	if _, err := s.exec("PRAGMA max_page_count = 20"); err != nil {
		t.Fatal(err)
	}
	body := json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)
	var stored int
	var err error
	for stored = 0; stored < 1000; stored++ {
		if err = s.AddOutgoing(Outgoing{ID: fmt.Sprintf("m%d", stored), To: "bob", Body: body}); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("after %d sends: %v, want ErrDiskFull", stored, err)
	}
	t.Log(err)
	ob, err := s.Outbox()
	if err != nil || len(ob) != stored {
		t.Fatalf("outbox has %d, want the %d stored before the disk filled (%v)", len(ob), stored, err)
	}
	_, err = s.Received(Message{Conv: "alice", From: "alice", ID: "x", Seq: 1, Body: body})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("Received on a full disk: %v", err)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(tmpPath(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.AddOutgoing(Outgoing{ID: "a", To: "b", Body: json.RawMessage(`1`)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddOutgoing after Close: %v", err)
	}
	if _, err := s.Outbox(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Outbox after Close: %v", err)
	}
}

// A process killed mid-write leaves the WAL with a torn last frame: the
// copy of a store taken while it is open (as a kill -9 would leave it)
// with garbage after its WAL opens with every committed write.
func TestTornWALTailKeepsCommittedWrites(t *testing.T) {
	path := tmpPath(t)
	s := openT(t, path)
	for i := range 10 {
		if err := s.AddOutgoing(Outgoing{ID: fmt.Sprintf("m%d", i), To: "bob", Body: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	crash := func(name string, tear func([]byte) []byte) *Store {
		crashed := filepath.Join(t.TempDir(), name)
		for _, suffix := range []string{"", "-wal"} {
			b, err := os.ReadFile(path + suffix)
			if err != nil {
				t.Fatal(err)
			}
			if suffix == "-wal" {
				if len(b) == 0 {
					t.Fatal("the writes are not in the WAL")
				}
				b = tear(b)
			}
			if err := os.WriteFile(crashed+suffix, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return openT(t, crashed)
	}
	// Garbage where the next frame would be.
	c := crash("garbage.db", func(b []byte) []byte { return append(b, bytes.Repeat([]byte{0x5A}, 3000)...) })
	mustOutbox(t, c, "m0,m1,m2,m3,m4,m5,m6,m7,m8,m9")
	// The last transaction cut short: it is gone, the others stay.
	c = crash("cut.db", func(b []byte) []byte { return b[:len(b)-100] })
	mustOutbox(t, c, "m0,m1,m2,m3,m4,m5,m6,m7,m8")
}

// Group traffic: sends to a group go through the outbox in order with
// sends to users, and a send keeps its group; messages in a group,
// system messages and own messages from another device are kept per
// group, told apart from the same ids elsewhere; group receipts tick own
// messages in their group only; a group's read watermark is its own.
func TestGroupTraffic(t *testing.T) {
	s := openT(t, tmpPath(t))
	for _, o := range []Outgoing{
		{ID: "a1", To: "bob", Body: json.RawMessage(`1`)},
		{ID: "g1", Group: "club", Body: json.RawMessage(`2`)},
		{ID: "g1", Group: "club", Body: json.RawMessage(`"again"`)}, // the same send: stays
		{ID: "g2", Group: "club", Body: json.RawMessage(`3`)},
	} {
		if err := s.AddOutgoing(o); err != nil {
			t.Fatal(err)
		}
	}
	ob, err := s.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range ob {
		got = append(got, o.ID+">"+o.To+"#"+o.Group+"="+string(o.Body))
	}
	if want := "a1>bob#=1 g1>#club=2 g2>#club=3"; strings.Join(got, " ") != want {
		t.Fatalf("outbox %s, want %s", strings.Join(got, " "), want)
	}
	// A 1:1 confirm does not reach a group send of the same id.
	if err := s.Confirm("g1", 99, time.UnixMilli(1), Sent); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id  string
		seq uint64
	}{{"a1", 40}, {"g1", 5}, {"g2", 6}} {
		group := "club"
		if c.id == "a1" {
			group = ""
		}
		if err := s.ConfirmGroup(group, c.id, c.seq, time.UnixMilli(int64(c.seq)), Sent); err != nil {
			t.Fatal(err)
		}
	}
	if ob, _ := s.Outbox(); len(ob) != 0 {
		t.Fatalf("outbox after the confirms: %v", ob)
	}

	in := []Message{
		{Group: "club", Conv: "club", From: "bob", ID: "ev-1", Seq: 10, Event: &protocol.GroupEvent{Op: "create", Users: []string{"me", "bob"}}},
		{Group: "club", Conv: "club", From: "bob", ID: "b1", Seq: 11, Body: json.RawMessage(`"hi"`)},
		{Group: "club", Conv: "club", From: "bob", ID: "b2", Seq: 12, Body: json.RawMessage(`"ho"`)},
		{Conv: "bob", From: "bob", ID: "b1", Seq: 13, Body: json.RawMessage(`"1:1"`)}, // same id, one to one
		{Group: "pals", Conv: "pals", From: "bob", ID: "ev-1", Seq: 14, Event: &protocol.GroupEvent{Op: "create"}},
	}
	for _, m := range in {
		if seen, err := s.Received(m); err != nil || seen.Dup {
			t.Fatalf("%s in %q: %+v %v", m.ID, m.Group, seen, err)
		}
	}
	if seen, err := s.Received(in[1]); err != nil || !seen.Dup || seen.FirstSeq != 11 {
		t.Fatalf("a repeat of b1 in club: %+v %v", seen, err)
	}
	own := Message{Group: "club", Conv: "club", Device: "phone", ID: "g3", Seq: 7, Body: json.RawMessage(`4`), Status: Sent}
	if seen, err := s.ReceivedOwn(own); err != nil || seen.Dup {
		t.Fatalf("own g3: %+v %v", seen, err)
	}
	if seen, err := s.ReceivedOwn(own); err != nil || !seen.Dup {
		t.Fatalf("own g3 again: %+v %v", seen, err)
	}

	// Group receipts: delivered 5..6, read to 5; a 1:1 receipt from bob
	// reaches a1 only.
	for _, r := range []struct {
		group, by, status string
		from, to          uint64
	}{{"club", "", protocol.StatusDelivered, 5, 6}, {"club", "", protocol.StatusRead, 5, 5}, {"", "bob", protocol.StatusRead, 0, 40}} {
		var err error
		if r.group != "" {
			err = s.ApplyGroupReceipt(r.group, r.status, r.from, r.to)
		} else {
			err = s.ApplyReceipt(r.by, r.status, r.from, r.to)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	ms, err := s.GroupMessages("club", 0)
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, m := range ms {
		e := ""
		if m.Event != nil {
			e = "/" + m.Event.Op
		}
		got = append(got, fmt.Sprintf("%s:%s@%d=%d%s", m.From, m.ID, m.Seq, m.Status, e))
	}
	if want := ":g1@5=3 :g2@6=2 bob:ev-1@10=1/create bob:b1@11=1 bob:b2@12=1 :g3@7=1"; strings.Join(got, " ") != want {
		t.Fatalf("club: %s, want %s", strings.Join(got, " "), want)
	}
	if m, ok, _ := s.Message("", "a1"); !ok || m.Status != Read {
		t.Fatalf("a1: %+v", m)
	}

	// Read watermarks: a read of a group copy, and one from another device.
	if ok, err := s.MarkRead(11); err != nil || !ok {
		t.Fatalf("MarkRead(11): %v %v", ok, err)
	}
	if w, _ := s.GroupReadWatermark("club"); w != 11 {
		t.Fatalf("club's watermark %d, want 11", w)
	}
	if err := s.SetGroupReadWatermark("club", 12); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGroupReadWatermark("club", 10); err != nil { // lower: stays
		t.Fatal(err)
	}
	if w, _ := s.ReadWatermark("club"); w != 0 {
		t.Fatalf("a user named club has watermark %d", w)
	}
	cs, err := s.Conversations()
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, c := range cs {
		got = append(got, fmt.Sprintf("%s/%s:%d,%d,%d", c.Group, c.Conv, c.Messages, c.Unread, c.ReadSeq))
	}
	// club: 3 own + ev-1 + b1, b2; read to 12, and the system message
	// is not unread. pals: a system message only.
	if want := "club/club:6,0,12 pals/pals:1,0,0 /bob:2,1,0"; strings.Join(got, " ") != want {
		t.Fatalf("conversations %s, want %s", strings.Join(got, " "), want)
	}
}

// RecipientOf names whom an own message at a seq went to, sent from here
// or from another device; not a message received at that seq, nor one
// sent to a group, nor a seq with nothing.
func TestRecipientOfAnOwnMessage(t *testing.T) {
	s := openT(t, tmpPath(t))
	far := uint64(1)<<52 + 3
	for _, o := range []Outgoing{{ID: "m1", To: "bob", Body: json.RawMessage(`1`)}, {ID: "g1", Group: "club", Body: json.RawMessage(`1`)}} {
		if err := s.AddOutgoing(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Confirm("m1", far, time.UnixMilli(1), Sent); err != nil {
		t.Fatal(err)
	}
	if err := s.ConfirmGroup("club", "g1", 7, time.UnixMilli(1), Sent); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReceivedOwn(Message{Conv: "carol", ID: "o1", Device: "laptop", Seq: far + 1, Body: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Received(Message{Conv: "dave", From: "dave", ID: "d1", Seq: 9, Body: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		seq uint64
		to  string
	}{{far, "bob"}, {far + 1, "carol"}, {7, ""}, {9, ""}, {far + 2, ""}} {
		to, ok, err := s.RecipientOf(c.seq)
		if err != nil || ok != (c.to != "") || to != c.to {
			t.Fatalf("RecipientOf(%d) = %q, %v, %v; want %q", c.seq, to, ok, err, c.to)
		}
	}
}

// Messages of a group read from its log have no inbox seq (0): they are
// acked and read by their place in the log, cumulatively, counted unread
// against the group's read place; an Ack or MarkRead of seq 0 changes
// none of them.
func TestGroupLogPlaces(t *testing.T) {
	s, err := Open(tmpPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, id := range []string{"g1", "g2", "g3"} {
		m := Message{Group: "crowd", Conv: "crowd", From: "bob", Device: "phone", ID: id, GSeq: uint64(70 + i), TS: time.UnixMilli(1795582349000), Body: json.RawMessage(`1`)}
		if seen, err := s.Received(m); err != nil || seen.Dup {
			t.Fatalf("%s: %+v %v", id, seen, err)
		}
	}
	if seen, err := s.Received(Message{Group: "crowd", Conv: "crowd", From: "bob", ID: "g2", GSeq: 71}); err != nil || !seen.Dup {
		t.Fatalf("g2 again: %+v %v, want a repeat", seen, err)
	}
	if err := s.Acked(0); err != nil {
		t.Fatal(err)
	}
	if read, err := s.MarkRead(0); err != nil || read {
		t.Fatalf("MarkRead(0): %v %v, want nothing read", read, err)
	}
	acked := func() string {
		ms, err := s.GroupMessages("crowd", 0)
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for _, m := range ms {
			out += fmt.Sprintf("%s@%d:%v ", m.ID, m.GSeq, m.Acked)
		}
		return out
	}
	if got := acked(); got != "g1@70:false g2@71:false g3@72:false " {
		t.Fatalf("after Acked(0): %s", got)
	}
	if err := s.AckedGroup("crowd", 71); err != nil {
		t.Fatal(err)
	}
	if got := acked(); got != "g1@70:true g2@71:true g3@72:false " {
		t.Fatalf("after AckedGroup(71): %s", got)
	}
	if err := s.SetGroupReadPlace("crowd", 70); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGroupReadPlace("crowd", 69); err != nil { // never back
		t.Fatal(err)
	}
	cs, err := s.Conversations()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].ReadGSeq != 70 || cs[0].Unread != 2 || cs[0].ReadSeq != 0 {
		t.Fatalf("conversations %+v, want crowd read up to 70, g2 and g3 unread", cs)
	}
	if p, err := s.GroupReadPlace("crowd"); err != nil || p != 70 {
		t.Fatalf("read place %d %v", p, err)
	}
}
