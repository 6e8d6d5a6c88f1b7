package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/streams"
)

// logSink records what a group's reader offers it.
type logSink struct {
	mu     sync.Mutex
	offers [][2]uint64 // prev, seq
	ids    []string
}

func (s *logSink) offer(prev uint64, e *logEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offers = append(s.offers, [2]uint64{prev, e.seq})
	s.ids = append(s.ids, e.id)
}

func (s *logSink) got() ([][2]uint64, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.offers), slices.Clone(s.ids)
}

// groupLogTest is a server with the streams as setup makes them (GROUPS
// and its bell included) and the gateway's readers of group logs on it.
type groupLogTest struct {
	js   jetstream.JetStream
	srv  *Server
	logs *groupLogs
}

func newGroupLogTest(t *testing.T, literal bool) *groupLogTest {
	t.Helper()
	ns := startServer(t, &server.Options{JetStream: true})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if err := streams.Apply(context.Background(), js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	srv := &Server{nc: nc, literalLogs: literal}
	if srv.replies, err = newReplies(nc); err != nil {
		t.Fatal(err)
	}
	quit := make(chan struct{})
	t.Cleanup(func() { close(quit) })
	logs := newGroupLogs(nc, srv.readGroupLog, slog.New(slog.DiscardHandler), quit, bellQueue)
	if literal { // GROUPS of one replica, as the server finds it
		trustBells(t, logs, js)
	}
	return &groupLogTest{js: js, srv: srv, logs: logs}
}

// trustBells asks, as the server does, whether l may take bells, and
// fails unless it may.
func trustBells(t *testing.T, l *groupLogs, js jetstream.JetStream) {
	t.Helper()
	l.hosted = groupsHosted(js, l.nc)
	l.checkBells()
	if l.whole.Load() == 0 {
		t.Fatal("bells not trusted from a GROUPS of one replica on the connection's own server")
	}
}

// store stores a message of group gid with id, a change when event.
func (g *groupLogTest) store(t *testing.T, gid, id string, event bool) uint64 {
	t.Helper()
	subj := contract.GroupMsgSubject(gid)
	if event {
		subj = contract.GroupEventSubject(gid)
	}
	ack, err := g.js.PublishMsg(context.Background(), &nats.Msg{Subject: subj, Data: []byte(`{}`),
		Header: nats.Header{contract.HdrID: {id}, contract.HdrGroup: {gid}}})
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// until waits for sink to have been offered n messages.
func until(t *testing.T, sink *logSink, n int) ([][2]uint64, []string) {
	t.Helper()
	waitFor(t, func() error {
		if offers, _ := sink.got(); len(offers) < n {
			return fmt.Errorf("%d offered, want %d", len(offers), n)
		}
		return nil
	})
	return sink.got()
}

// Each sink of a group is offered the group's log in order, messages and
// changes, nothing of other groups, each message with the one before it;
// one that joins later is offered from where the reader stands, and can
// tell it is behind; one that left is offered nothing more.
func TestGroupLogReader(t *testing.T) {
	for _, literal := range []bool{false, true} {
		t.Run(fmt.Sprintf("literal=%v", literal), func(t *testing.T) { testGroupLogReader(t, literal) })
	}
}

func testGroupLogReader(t *testing.T, literal bool) {
	g := newGroupLogTest(t, literal)
	g.store(t, "other", "x0", false)
	before := g.store(t, "crowd", "m0", false) // stored before anyone follows: read on join
	a := &logSink{}
	if caughtUp, err := g.logs.join("crowd", a, before-1); err != nil || !caughtUp {
		t.Fatalf("the first sink: caught up %v, %v; a new reader starts at its place", caughtUp, err)
	}
	until(t, a, 1)
	var want []uint64
	want = append(want, before)
	for i := 1; i <= 5; i++ {
		g.store(t, "other", fmt.Sprintf("x%d", i), false)
		want = append(want, g.store(t, "crowd", fmt.Sprintf("m%d", i), i == 3))
	}
	offers, ids := until(t, a, 6)
	if !slices.Equal(ids, []string{"m0", "m1", "m2", "m3", "m4", "m5"}) {
		t.Fatalf("offered %q", ids)
	}
	prev := before - 1
	for i, o := range offers {
		if o[1] != want[i] || o[0] != prev {
			t.Fatalf("offer %d: prev %d seq %d, want %d %d", i, o[0], o[1], prev, want[i])
		}
		prev = o[1]
	}

	// b joins at the start of the log, before what the reader kept: the
	// reader is ahead of it.
	b := &logSink{}
	if caughtUp, err := g.logs.join("crowd", b, 0); err != nil || caughtUp {
		t.Fatalf("b: caught up %v, %v; it is behind what the reader kept", caughtUp, err)
	}
	// c joins after m0: within what the reader kept, which it is handed
	// before join returns, in order, each after the one before.
	c := &logSink{}
	if caughtUp, err := g.logs.join("crowd", c, before); err != nil || !caughtUp {
		t.Fatalf("c: caught up %v, %v; the reader kept what it lacks", caughtUp, err)
	}
	if offers, ids := c.got(); !slices.Equal(ids, []string{"m1", "m2", "m3", "m4", "m5"}) || offers[0][0] != before {
		t.Fatalf("c was handed %q (%v) at join, want m1 to m5 after m0", ids, offers)
	}
	m6 := g.store(t, "crowd", "m6", false)
	offers, _ = until(t, b, 1)
	if offers[0] != [2]uint64{want[5], m6} {
		t.Fatalf("b was offered %v first, want m6 after m5 (%d %d): it tells it is behind from prev", offers[0], want[5], m6)
	}
	if offers, _ := until(t, c, 6); offers[5] != [2]uint64{want[5], m6} {
		t.Fatalf("c was offered %v after the kept ones, want m6 after m5", offers[5])
	}

	// a leaves; b, still there, is offered the next message, and a
	// nothing after it left.
	g.logs.leave("crowd", a)
	g.store(t, "crowd", "m7", false)
	until(t, b, 2)
	if _, ids := a.got(); len(ids) != 7 {
		t.Fatalf("a was offered %q: after it left", ids)
	}
}

// A bell lost (here: the reader's subscription gone) is made up by a
// ring when NATS tells of it, or by the sweep's; the last sink's leave
// stops the reader and its bell.
func TestGroupLogReaderSweep(t *testing.T) {
	g := newGroupLogTest(t, true)
	s := &logSink{}
	if _, err := g.logs.join("crowd", s, 0); err != nil {
		t.Fatal(err)
	}
	g.store(t, "crowd", "m1", false)
	until(t, s, 1)
	r := g.logs.reader(contract.GroupBellSubject("crowd"))
	if err := r.sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	// NATS telling of a bell dropped has the reader read too.
	g.store(t, "crowd", "m2", false)
	g.logs.dropped(r.sub)
	if _, ids := until(t, s, 2); !slices.Equal(ids, []string{"m1", "m2"}) {
		t.Fatalf("offered %q", ids)
	}
	g.store(t, "crowd", "m3", false)
	g.logs.ringAll()
	if _, ids := until(t, s, 3); !slices.Equal(ids, []string{"m1", "m2", "m3"}) {
		t.Fatalf("offered %q", ids)
	}
	g.logs.leave("crowd", s)
	g.logs.mu.Lock()
	n := len(g.logs.readers)
	g.logs.mu.Unlock()
	if n != 0 || !r.closed {
		t.Fatalf("%d readers left, closed %v: the last sink's leave stops its reader", n, r.closed)
	}
}

// readAll reads group gid's whole log, batch at a time, by the gateway's
// read: the ids in the order handed on.
func (g *groupLogTest) readAll(t *testing.T, gid string, batch int) []string {
	t.Helper()
	var ids []string
	var last uint64
	for {
		more, err := g.srv.readGroupLog(gid, last+1, 0, batch, nil, func(seq uint64, m *nats.Msg) bool {
			if seq <= last {
				t.Fatalf("handed %d after %d", seq, last)
			}
			last = seq
			ids = append(ids, m.Header.Get(contract.HdrID))
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			return ids
		}
	}
}

// Read by its two subjects, a group's log comes whole and in order,
// messages and changes interleaved, through batches that cut either
// subject short, as the one filtered read gives it; and a message
// stored between the read of messages and the read of changes, before a
// change stored after it, is not stepped over.
func TestGroupLogReadBySubject(t *testing.T) {
	g := newGroupLogTest(t, true)
	var want []string
	for i := range 12 {
		g.store(t, "other", fmt.Sprintf("x%d", i), i%3 == 0)
		id := fmt.Sprintf("c%d", i)
		g.store(t, "crowd", id, i%4 == 1 || i%4 == 2) // runs of changes and of messages
		want = append(want, id)
	}
	for _, batch := range []int{1, 2, 3, 256} {
		if got := g.readAll(t, "crowd", batch); !slices.Equal(got, want) {
			t.Fatalf("batch %d: %q, want %q", batch, got, want)
		}
	}
	g.srv.literalLogs = false
	if got := g.readAll(t, "crowd", 2); !slices.Equal(got, want) {
		t.Fatalf("the filtered read: %q, want %q", got, want)
	}
	g.srv.literalLogs = true

	// Between the two reads: a message, then a change.
	from := g.store(t, "crowd", "m1", false)
	g.srv.afterMsgsRead = func() {
		g.srv.afterMsgsRead = nil
		g.store(t, "crowd", "m2", false)
		g.store(t, "crowd", "e3", true)
	}
	var got []string
	more, err := g.srv.readGroupLog("crowd", from, 0, 256, nil, func(_ uint64, m *nats.Msg) bool {
		got = append(got, m.Header.Get(contract.HdrID))
		return true
	})
	if err != nil || more || !slices.Equal(got, []string{"m1", "m2", "e3"}) {
		t.Fatalf("read %q (more %v, %v), want m1 m2 e3", got, more, err)
	}
}

// A reader keeps the last readerTail messages it handed on: a sink that
// joins behind it by no more than that is handed them at join, one
// further behind is not (it reads the log itself), and once the sweep
// finds them older than readerTailAge none is kept.
func TestGroupLogReaderTail(t *testing.T) {
	g := newGroupLogTest(t, true)
	a := &logSink{}
	if _, err := g.logs.join("crowd", a, 0); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for i := range readerTail + 3 {
		seqs = append(seqs, g.store(t, "crowd", fmt.Sprintf("m%d", i), false))
	}
	until(t, a, len(seqs))

	// The reader kept m3 onwards, each after the one before: m2 is the
	// earliest place it can hand on from.
	early := &logSink{}
	if caughtUp, err := g.logs.join("crowd", early, seqs[1]); err != nil || caughtUp {
		t.Fatalf("joined after m1: caught up %v, %v; m2 is no longer kept", caughtUp, err)
	}
	if offers, _ := early.got(); len(offers) != 0 {
		t.Fatalf("joined after m1 and was handed %v", offers)
	}
	kept := &logSink{}
	if caughtUp, err := g.logs.join("crowd", kept, seqs[2]); err != nil || !caughtUp {
		t.Fatalf("joined after m2: caught up %v, %v", caughtUp, err)
	}
	offers, ids := kept.got()
	if len(ids) != readerTail || ids[0] != "m3" || offers[0][0] != seqs[2] || offers[readerTail-1][1] != seqs[len(seqs)-1] {
		t.Fatalf("joined after m2 and was handed %d: %q first after %d", len(ids), ids[0], offers[0][0])
	}

	// A device reading for itself takes what was kept, as far as kept.
	if es, ok := g.logs.kept("crowd", seqs[2], 5); !ok || len(es) != 5 || es[0].seq != seqs[3] || es[4].seq != seqs[7] {
		t.Fatalf("kept after m2: %d, %v; want m3 to m7", len(es), ok)
	}
	if es, ok := g.logs.kept("crowd", seqs[1], 5); ok {
		t.Fatalf("kept after m1: %d, want none: m2 is no longer kept", len(es))
	}
	if es, ok := g.logs.kept("crowd", seqs[len(seqs)-1], 5); ok {
		t.Fatalf("kept after the last: %d, want none: the log is to be read", len(es))
	}

	r := g.logs.reader(contract.GroupBellSubject("crowd"))
	r.trim(time.Since(monoStart) - time.Hour)
	if caughtUp, err := g.logs.join("crowd", &logSink{}, seqs[2]); err != nil || !caughtUp {
		t.Fatalf("after a sweep that found nothing old: caught up %v, %v", caughtUp, err)
	}
	r.mu.Lock()
	r.tail[0].at -= 2 * readerTailAge // the oldest kept long ago
	r.mu.Unlock()
	g.logs.ringAll()
	if caughtUp, _ := g.logs.join("crowd", &logSink{}, seqs[2]); caughtUp {
		t.Fatal("joined after m2 once the sweep let m3 go: caught up")
	}
	if caughtUp, _ := g.logs.join("crowd", &logSink{}, seqs[3]); !caughtUp {
		t.Fatal("joined after m3: not caught up; the sweep let go of more than m3")
	}
	r.trim(time.Since(monoStart) + time.Second)
	late := &logSink{}
	if caughtUp, err := g.logs.join("crowd", late, seqs[len(seqs)-2]); err != nil || caughtUp {
		t.Fatalf("joined one behind after the sweep let go: caught up %v, %v", caughtUp, err)
	}
}

// A reader rings (reads its log) for a new sink when it must: its last
// read failed, or the sink's place is past it (the reader missed bells);
// such a sink reads for itself meanwhile.
func TestGroupLogReaderRingsWhenBehind(t *testing.T) {
	g := newGroupLogTest(t, true)
	var fail atomic.Bool
	read := g.logs.read
	g.logs.read = func(gid string, from, near uint64, batch int, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (bool, error) {
		if fail.Swap(false) {
			return false, errors.New("made to fail")
		}
		return read(gid, from, near, batch, quit, each)
	}
	m0 := g.store(t, "crowd", "m0", false)
	fail.Store(true)
	a := &logSink{}
	if _, err := g.logs.join("crowd", a, m0-1); err != nil {
		t.Fatal(err)
	}
	r := g.logs.reader(contract.GroupBellSubject("crowd"))
	waitFor(t, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.failed || r.running {
			return errors.New("the first read has not failed yet")
		}
		return nil
	})
	if err := r.sub.Unsubscribe(); err != nil { // no bell from here on
		t.Fatal(err)
	}
	// The read failed: a sink joining has it read again.
	if _, err := g.logs.join("crowd", &logSink{}, m0-1); err != nil {
		t.Fatal(err)
	}
	until(t, a, 1)

	// Stored unheard (no bell): a sink whose place is past the reader
	// has it read up to there and on, and reads for itself.
	m1 := g.store(t, "crowd", "m1", false)
	m2 := g.store(t, "crowd", "m2", false)
	if caughtUp, err := g.logs.join("crowd", &logSink{}, m1); err != nil || caughtUp {
		t.Fatalf("joined past the reader: caught up %v, %v; it must read for itself", caughtUp, err)
	}
	if offers, ids := until(t, a, 3); !slices.Equal(ids, []string{"m0", "m1", "m2"}) || offers[2][1] != m2 {
		t.Fatalf("a was offered %q", ids)
	}
}

// countReads has g's readers count their reads of the log.
func (g *groupLogTest) countReads() *atomic.Int64 {
	var n atomic.Int64
	read := g.logs.read
	g.logs.read = func(gid string, from, near uint64, batch int, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (bool, error) {
		n.Add(1)
		return read(gid, from, near, batch, quit, each)
	}
	return &n
}

// idle waits until r is not reading and has nothing to read.
func idle(t *testing.T, r *groupReader) {
	t.Helper()
	waitFor(t, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.running || r.wake || r.failed {
			return errors.New("the reader reads")
		}
		return nil
	})
}

// inOrder checks that sink was offered exactly ids, each after the one
// before it.
func inOrder(t *testing.T, sink *logSink, ids ...string) {
	t.Helper()
	offers, got := until(t, sink, len(ids))
	if !slices.Equal(got, ids) {
		t.Fatalf("offered %q, want %q", got, ids)
	}
	for i := 1; i < len(offers); i++ {
		if offers[i][0] != offers[i-1][1] {
			t.Fatalf("offer %d after %d, want after %d", offers[i][1], offers[i][0], offers[i-1][1])
		}
	}
}

// Where GROUPS has one replica, a reader that read the log to its end
// takes each later message from its bell, which carries it, with no read
// of the log; a bell after one the bell subscription dropped, or after
// the connection was restored, is not taken: the reader reads, and the
// sinks still get the log whole and in order.
func TestGroupLogReaderTakesBells(t *testing.T) {
	g := newGroupLogTest(t, true)
	// Few bells wait, so a stalled ringing drops some.
	quit := make(chan struct{})
	t.Cleanup(func() { close(quit) })
	logs := newGroupLogs(g.srv.nc, g.srv.readGroupLog, slog.New(slog.DiscardHandler), quit, 1)
	trustBells(t, logs, g.js)
	g.logs = logs
	reads := g.countReads()
	m0 := g.store(t, "crowd", "m0", false)
	s := &logSink{}
	if _, err := g.logs.join("crowd", s, m0-1); err != nil {
		t.Fatal(err)
	}
	inOrder(t, s, "m0")
	r := g.logs.reader(contract.GroupBellSubject("crowd"))
	idle(t, r)
	first := reads.Load()
	g.store(t, "crowd", "m1", false)
	g.store(t, "crowd", "c2", true)
	g.store(t, "other", "x", false)
	g.store(t, "crowd", "m3", false)
	inOrder(t, s, "m0", "m1", "c2", "m3")
	if n := reads.Load(); n != first {
		t.Fatalf("%d reads for three messages that rang, want none", n-first)
	}

	// Ringing stalls (the reader's lock held): of the bells of m4 to m7,
	// one waits, one is held, and the subscription drops the rest.
	r.mu.Lock()
	for _, id := range []string{"m4", "m5", "m6", "m7"} {
		g.store(t, "crowd", id, false)
	}
	waitFor(t, func() error {
		if n, _ := r.sub.Dropped(); n == 0 {
			return errors.New("no bell dropped yet")
		}
		return nil
	})
	r.mu.Unlock()
	g.store(t, "crowd", "m8", false)
	inOrder(t, s, "m0", "m1", "c2", "m3", "m4", "m5", "m6", "m7", "m8")
	idle(t, r)

	// A restored connection may have lost bells: the next is not taken.
	before := reads.Load()
	reconnect(t, g.srv.nc)
	// Asked again, as after each reconnect: bells are trusted, but the
	// reader has not read since.
	logs.checkBells()
	if logs.whole.Load() == 0 {
		t.Fatal("bells not trusted after the reconnect")
	}
	g.store(t, "crowd", "m9", false)
	inOrder(t, s, "m0", "m1", "c2", "m3", "m4", "m5", "m6", "m7", "m8", "m9")
	if reads.Load() == before {
		t.Fatal("the first bell after a reconnect was taken without a read")
	}
	idle(t, r)
	before = reads.Load()
	g.store(t, "crowd", "m10", false)
	inOrder(t, s, "m0", "m1", "c2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10")
	if n := reads.Load(); n != before {
		t.Fatalf("%d reads for a bell after the reader read again, want none", n-before)
	}

	// An answer from before a reconnect counts for nothing after it.
	reconnect(t, g.srv.nc)
	g.store(t, "crowd", "m11", false)
	inOrder(t, s, "m0", "m1", "c2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11")
	idle(t, r)
	before = reads.Load()
	m12 := g.store(t, "crowd", "m12", false)
	inOrder(t, s, "m0", "m1", "c2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11", "m12")
	if reads.Load() == before {
		t.Fatal("a bell was taken on an answer from before the reconnect")
	}

	// A publish on the bell's subject that is not GROUPS' republish of
	// this group's log is read for, not taken, though it names the
	// log's next sequence.
	logs.checkBells()
	idle(t, r)
	forged := nats.NewMsg(contract.GroupBellSubject("crowd"))
	forged.Header.Set(contract.HdrSequence, strconv.FormatUint(m12+1, 10))
	forged.Header.Set(contract.HdrSubject, contract.GroupMsgSubject("crowd"))
	forged.Header.Set(contract.HdrID, "forged")
	forged.Data = []byte(`{}`)
	if err := g.srv.nc.PublishMsg(forged); err != nil {
		t.Fatal(err)
	}
	g.store(t, "crowd", "m13", false)
	inOrder(t, s, "m0", "m1", "c2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11", "m12", "m13")
}

// reconnect has nc drop its connection and waits until it has made
// another.
func reconnect(t *testing.T, nc *nats.Conn) {
	t.Helper()
	reconnects := nc.Stats().Reconnects
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		if nc.Stats().Reconnects == reconnects || !nc.IsConnected() {
			return errors.New("not reconnected yet")
		}
		return nil
	})
}

// Bells are trusted only from a GROUPS of one replica on the server the
// gateway is connected to: from another, a bell crosses a route, which
// can drop it unseen; with replicas, a leader change loses some.
func TestBellsHostedOnlyOnTheirServer(t *testing.T) {
	info := func(replicas int, leader string) *jetstream.StreamInfo {
		i := &jetstream.StreamInfo{Config: jetstream.StreamConfig{Replicas: replicas}}
		if leader != "-" {
			i.Cluster = &jetstream.ClusterInfo{Leader: leader}
		}
		return i
	}
	for _, c := range []struct {
		info *jetstream.StreamInfo
		want bool
	}{
		{info(1, "a"), true},
		{info(0, "a"), true}, // replicas unset: one
		{info(1, "b"), false},
		{info(3, "a"), false},
		{info(1, ""), false},
		{info(1, "-"), false},
		{nil, false},
	} {
		if got := bellsHosted(c.info, "a"); got != c.want {
			t.Errorf("bellsHosted(%+v, a) = %v, want %v", c.info, got, c.want)
		}
	}
}
