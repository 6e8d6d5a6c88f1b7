package gateway

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// expectSeqs waits until the device has been sent exactly want (msg and
// receipt frames), in that order.
func expectSeqs(t *testing.T, ft *fakeTransport, want ...uint64) {
	t.Helper()
	waitFor(t, func() error {
		if got := ft.seqs(t); !slices.Equal(got, want) {
			return fmt.Errorf("delivered %v, want %v", got, want)
		}
		return nil
	})
}

// waitIdle waits until the feed's runner has nothing left to do.
func waitIdle(t *testing.T, s *session) {
	t.Helper()
	waitFor(t, func() error {
		s.feed.mu.Lock()
		defer s.feed.mu.Unlock()
		if s.feed.running || s.feed.wake || len(s.feed.liveQ) > 0 {
			return fmt.Errorf("the feed is busy")
		}
		return nil
	})
}

// counted reads the value of metric name with label value label.
func counted(t *testing.T, m *metrics, name, label string) float64 {
	t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetValue() == label {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s}", name, label)
	return 0
}

// On connect the feed reads the device's inbox from its position, then
// hands on live copies; a copy of a message it had is not sent twice.
func TestFeedReadsFromThePositionThenGoesLive(t *testing.T) {
	fs := &fakeStream{}
	fs.store("bob", "alice", "a1")   // 1: settled before this session
	fs.store("carol", "alice", "x1") // 2: someone else's
	fs.store("bob", "alice", "a2")   // 3
	fs.store("bob", "dave", "d1")    // 4
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 1)
	expectSeqs(t, ft, 3, 4)

	s.feed.onLive(liveCopy(4, 3, "bob", "dave", "d1")) // already had it
	fs.store("bob", "alice", "a3")                     // 5
	s.feed.onLive(liveCopy(5, 4, "bob", "alice", "a3"))
	expectSeqs(t, ft, 3, 4, 5)
	if f := ft.sent(t)[2]; f.Type != protocol.TypeMsg || f.ID != "a3" || f.From != "alice" || string(f.Body) != `"a3"` {
		t.Fatalf("frame %+v, want a3 from alice", *f)
	}
}

// A live copy whose predecessor the device never had (its copy was lost)
// makes the feed read both from the stream, in order.
func TestFeedFillsAGapFromTheStream(t *testing.T) {
	fs := &fakeStream{}
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 0)
	waitIdle(t, s)                                      // the read on connect found nothing
	fs.store("bob", "alice", "a1")                      // 1: its copy is lost
	fs.store("bob", "alice", "a2")                      // 2
	s.feed.onLive(liveCopy(2, 1, "bob", "alice", "a2")) // names 1, never had
	expectSeqs(t, ft, 1, 2)
	if v := counted(t, srv.metrics, "switchboard_gateway_catchups_total", reasonGap); v != 1 {
		t.Fatalf("gap reads counted %v, want 1", v)
	}
}

// Live copies that arrive faster than the feed hands them on are let go
// past liveBuffer, and read back from the stream: the device gets every
// message once and in order.
func TestFeedOverflowIsReadBack(t *testing.T) {
	fs := &fakeStream{gate: make(chan struct{})} // the first read waits
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 0)
	waitFor(t, func() error { // the read on connect waits at the gate
		if fs.readCount() == 0 {
			return fmt.Errorf("no read yet")
		}
		return nil
	})
	const n = liveBuffer + 20
	var want []uint64
	for i := range n {
		seq := fs.store("bob", "alice", fmt.Sprintf("a%d", i))
		s.feed.onLive(liveCopy(seq, seq-1, "bob", "alice", fmt.Sprintf("a%d", i)))
		want = append(want, seq)
	}
	close(fs.gate)
	expectSeqs(t, ft, want...)
	if v := counted(t, srv.metrics, "switchboard_gateway_catchups_total", reasonOverflow); v != 1 {
		t.Fatalf("overflows counted %v, want 1", v)
	}
}

// The floor is the highest sequence below which everything is settled:
// acks out of order make an acked stretch only from the oldest unsettled
// message on, its request names each sender once, and each move of the
// floor is saved to the cursor.
func TestFeedSettlesAckedStretches(t *testing.T) {
	fs := &fakeStream{}
	fs.store("bob", "alice", "a0") // 1
	fs.store("bob", "carol", "c0") // 2
	fs.store("bob", "alice", "a1") // 3
	fc := &fakeCursors{}
	srv := testServer(t, testConfig(), fs, fc)
	s, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, 1, 2, 3)

	floor := func() uint64 {
		s.feed.mu.Lock()
		defer s.feed.mu.Unlock()
		return s.feed.floor
	}
	if !s.feed.acked(2) {
		t.Fatal("2 was not pending")
	}
	if _, _, ok := s.feed.ackedStretch(); ok {
		t.Fatal("an acked stretch without 1 acked")
	}
	if !s.feed.acked(1) {
		t.Fatal("1 was not pending")
	}
	req, through, ok := s.feed.ackedStretch()
	want := contract.DeliveredRequest{Reader: "bob", Device: s.id.Device, From: 1, To: 2, Senders: []string{"alice", "carol"}}
	if !ok || through != 2 || !reflect.DeepEqual(req, want) {
		t.Fatalf("stretch %+v through %d (%v), want %+v through 2", req, through, ok, want)
	}
	s.feed.settleThrough(through)
	if got := floor(); got != 2 {
		t.Fatalf("floor %d after settling through 2", got)
	}
	if !s.feed.acked(3) {
		t.Fatal("3 was not pending")
	}
	if s.feed.acked(3) {
		t.Fatal("3 was acked twice")
	}
	req, through, ok = s.feed.ackedStretch()
	want = contract.DeliveredRequest{Reader: "bob", Device: s.id.Device, From: 3, To: 3, Senders: []string{"alice"}}
	if !ok || through != 3 || !reflect.DeepEqual(req, want) {
		t.Fatalf("stretch %+v through %d (%v), want %+v through 3", req, through, ok, want)
	}
	s.feed.settleThrough(through)
	if got := floor(); got != 3 {
		t.Fatalf("floor %d after settling through 3", got)
	}
	if saved, _ := fc.saves(); !slices.Equal(saved, []uint64{2, 3}) {
		t.Fatalf("cursors saved %v, want [2 3]", saved)
	}
}

// A burst is over a quiet after the device's last ack while it holds
// anything unacked; once it has acked everything it was given, at its
// last delivery and a pause (or four usual gaps between deliveries, if
// longer), which is sooner.
func TestFeedBurstEndsSoonerOnceAllIsAcked(t *testing.T) {
	fs := &fakeStream{}
	fs.store("bob", "alice", "a1") // 1
	fs.store("bob", "alice", "a2") // 2
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, 1, 2)
	waitIdle(t, s)

	const quiet = time.Minute // TickQuiet: the deliveries' pause is streamPause
	type marks struct{ lastAck, lastDelivery, deliveryGap, within time.Duration }
	base := time.Now()
	mark := func() marks {
		s.feed.mu.Lock()
		defer s.feed.mu.Unlock()
		d := &s.feed.deliveries
		return marks{s.feed.acks.last.Sub(base), d.last.Sub(base), d.gap, d.within}
	}
	// As of the last delivery, so a machine that stalls between it and
	// the ack or the look does not make the stream's pauses stale.
	unacked := func() int {
		s.feed.mu.Lock()
		defer s.feed.mu.Unlock()
		return s.feed.unacked
	}
	endsAt := func() time.Duration {
		return s.feed.burstEnd(base.Add(mark().lastDelivery), quiet).Sub(base)
	}

	s.feed.acked(1)
	m := mark()
	if got, want := endsAt(), m.lastAck+quiet; got != want {
		t.Fatalf("with 2 unacked: over at %v, want a quiet past the last ack, %v", got, want)
	}
	s.feed.acked(2)
	m = mark()
	if got, want := endsAt(), m.lastDelivery+max(streamPause, min(deliveryGaps*m.deliveryGap, m.within)); got != want {
		t.Fatalf("with everything acked: over at %v, want a pause past the last delivery, %v", got, want)
	}

	// An ack of what was acked counts once: the next delivery is unacked.
	if s.feed.acked(2) {
		t.Fatal("2 acked twice")
	}
	fs.store("bob", "alice", "a3") // 3
	s.feed.onLive(liveCopy(3, 2, "bob", "alice", "a3"))
	expectSeqs(t, ft, 1, 2, 3)
	waitIdle(t, s)
	if n := unacked(); n != 1 {
		t.Fatalf("3 delivered: %d unacked, want 1", n)
	}
	m = mark()
	if got, want := endsAt(), m.lastAck+quiet; got != want {
		t.Fatalf("with 3 unacked: over at %v, want a quiet past the last ack, %v", got, want)
	}
	s.feed.acked(3)
	if n := unacked(); n != 0 {
		t.Fatalf("3 acked: %d unacked, want 0", n)
	}
	m = mark()
	if got, want := endsAt(), m.lastDelivery+max(streamPause, min(deliveryGaps*m.deliveryGap, m.within)); got != want {
		t.Fatalf("with 3 acked: over at %v, want a pause past the last delivery, %v", got, want)
	}
}

// A device holds at most MaxInflight messages unsettled. Past it, live
// copies are let go; once it settled half, the feed reads on from the
// stream where it stopped.
func TestFeedWaitsForAcksPastMaxInflight(t *testing.T) {
	fs := &fakeStream{}
	for i := range 6 {
		fs.store("bob", "alice", fmt.Sprintf("a%d", i)) // 1..6
	}
	cfg := testConfig()
	cfg.MaxInflight = 4
	srv := testServer(t, cfg, fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, 1, 2, 3, 4)

	seq := fs.store("bob", "alice", "a6") // 7
	s.feed.onLive(liveCopy(seq, seq-1, "bob", "alice", "a6"))
	// One settled leaves three unsettled, more than half: still behind,
	// so neither the copy nor anything else is sent.
	s.feed.settle(1)
	s.feed.mu.Lock()
	behind := s.feed.behind
	s.feed.mu.Unlock()
	if !behind {
		t.Fatal("the feed is not behind with MaxInflight unsettled")
	}
	expectSeqs(t, ft, 1, 2, 3, 4)
	s.feed.settle(2) // two left: half
	expectSeqs(t, ft, 1, 2, 3, 4, 5, 6)
	s.feed.settle(3)
	s.feed.settle(4)
	expectSeqs(t, ft, 1, 2, 3, 4, 5, 6, 7)
}

// A stored message that cannot go out as a valid frame is skipped: the
// position moves past it, it is counted, and what follows is delivered.
// A frame the client cannot decode would never be acked, and the device
// would stop once max_inflight of them were out.
func TestFeedSkipsWhatItCannotDeliver(t *testing.T) {
	fs := &fakeStream{}
	fs.storeRaw("bob", nats.Header{contract.HdrKind: {"something"}}, []byte("x")) // 1: malformed
	fs.storeRaw("bob", nats.Header{contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {"alice"},
		contract.HdrDevice: {"phone"}, contract.HdrID: {"bad"}}, []byte("\"\xff\"")) // 2: not UTF-8
	msg := func(id string) nats.Header {
		return nats.Header{contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {"alice"},
			contract.HdrDevice: {"phone"}, contract.HdrID: {id}}
	}
	fs.storeRaw("bob", msg("plain"), []byte("hello")) // 3: a body that is not JSON
	media := msg("media")
	media.Set(contract.HdrMedia, "photo")
	fs.storeRaw("bob", media, []byte(`"look"`)) // 4: a media reference that is not a JSON object
	fs.store("bob", "alice", "a5")              // 5
	fc := &fakeCursors{}
	srv := testServer(t, testConfig(), fs, fc)
	_, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, 5) // fails on a frame that does not decode
	if v := counted(t, srv.metrics, "switchboard_gateway_inbox_skipped_total", skipMalformed); v != 3 {
		t.Fatalf("malformed skips %v, want 3", v)
	}
	if v := counted(t, srv.metrics, "switchboard_gateway_inbox_skipped_total", skipInvalidUTF8); v != 1 {
		t.Fatalf("invalid UTF-8 skips %v, want 1", v)
	}
	if saved, _ := fc.saves(); !slices.Equal(saved, []uint64{1, 2, 3, 4}) {
		t.Fatalf("cursors saved %v, want [1 2 3 4]: a skipped message never comes first again", saved)
	}
}

// Members' copies of group messages and changes go out with their
// group; one that is malformed (a bad group id, a change whose body is not
// a JSON object, a change with no group) is skipped. An acked stretch of
// group copies asks for no tick.
func TestFeedGroupCopies(t *testing.T) {
	fs := &fakeStream{}
	h := func(kind, group, id string) nats.Header {
		hd := nats.Header{contract.HdrKind: {kind}, contract.HdrFrom: {"alice"}, contract.HdrDevice: {"phone"},
			contract.HdrID: {id}, contract.HdrTS: {"1795582349000"}}
		if group != "" {
			hd.Set(contract.HdrGroup, group)
		}
		return hd
	}
	fs.storeRaw("bob", h(contract.KindMsg, "friends", "m1"), []byte(`"hi all"`))                           // 1
	fs.storeRaw("bob", h(contract.KindEvent, "friends", "ev-2"), []byte(`{"op":"add","users":["carol"]}`)) // 2
	fs.storeRaw("bob", h(contract.KindMsg, "friends.*", "m3"), []byte(`"bad group"`))                      // 3: skipped
	fs.storeRaw("bob", h(contract.KindEvent, "friends", "ev-4"), []byte(`"not an object"`))                // 4: skipped
	fs.storeRaw("bob", h(contract.KindEvent, "", "ev-5"), []byte(`{"op":"add"}`))                          // 5: skipped
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, 1, 2)
	frames := ft.sent(t)
	if f := frames[len(frames)-2]; f.Group != "friends" || string(f.Body) != `"hi all"` || f.Event != nil {
		t.Fatalf("group message %+v", f)
	}
	if f := frames[len(frames)-1]; f.Group != "friends" || f.Event == nil || f.Event.Op != "add" || f.Body != nil {
		t.Fatalf("group change %+v", f)
	}
	if v := counted(t, srv.metrics, "switchboard_gateway_inbox_skipped_total", skipMalformed); v != 3 {
		t.Fatalf("malformed skips %v, want 3", v)
	}
	s.feed.acked(1)
	s.feed.acked(2)
	req, through, ok := s.feed.ackedStretch()
	if !ok || through != 2 || len(req.Senders) != 0 {
		t.Fatalf("acked stretch through %d (%v) names %v, want no sender", through, ok, req.Senders)
	}
}

// A feed stopped while a read of the stream waits ends at once.
func TestFeedStopsWhileReading(t *testing.T) {
	fs := &fakeStream{gate: make(chan struct{})}
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, _ := startedSession(t, srv, "bob", 0)
	waitFor(t, func() error {
		if fs.readCount() == 0 {
			return fmt.Errorf("no read started")
		}
		return nil
	})
	s.feed.stop()
	<-s.feed.finished() // the read waiting on the gate ends with the feed
}

// The shared backlog reader checks that a feed is still delivering, then
// hands it a message; a stop in between must not let that message out
// once the feed has said it finished (a takeover waits for that).
func TestFeedTakesNothingOnceFinished(t *testing.T) {
	fs := &fakeStream{}
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 0)
	waitIdle(t, s)
	seq := fs.store("bob", "alice", "a1")
	m := liveCopy(seq, 0, "bob", "alice", "a1")
	s.feed.stop()
	<-s.feed.finished()
	s.feed.take(seq, m.Header, m.Data) // the reader, its check made before the stop
	if got := ft.seqs(t); len(got) != 0 {
		t.Fatalf("delivered %v after the feed finished", got)
	}
}

// settle acks seq and settles everything up to it, as the ticker does once
// the ticks are stored (tests settle in order).
func (f *feed) settle(seq uint64) {
	f.acked(seq)
	f.settleThrough(seq)
}

// unknownSeqs lists the seqs of the unknown_seq errors sent so far.
func unknownSeqs(t *testing.T, ft *fakeTransport) (out []uint64) {
	for _, f := range ft.sent(t) {
		if f.Type == protocol.TypeError && f.Code == protocol.ErrUnknownSeq {
			out = append(out, f.Seq)
		}
	}
	return out
}

// A read held for the backlog (a message from the device's last
// connection) is not refused because a settle cleared behind between the
// end of a read of the stream cut short by max_inflight and the look at
// it: the message is still to come. The runner's steps in their order,
// on the test goroutine, with the ticker's settle between them.
func TestHeldReadOutlivesACutShortBacklogRead(t *testing.T) {
	fs := &fakeStream{}
	fs.store("bob", "alice", "a1") // 1
	fs.store("bob", "carol", "c1") // 2
	fs.store("bob", "alice", "a2") // 3
	cfg := testConfig()
	cfg.MaxInflight = 1
	srv := testServer(t, cfg, fs, &fakeCursors{})
	ft := newFakeTransport()
	s := newSession(srv, Identity{User: "bob", Device: "phone", Expires: time.Now().Add(time.Hour)}, ft)
	s.feed.begin(0)
	s.cursor.init(0)
	s.read(3) // made on the last connection, written on this one
	s.feed.mu.Lock()
	behinds := s.feed.behinds
	s.feed.mu.Unlock()
	s.feed.catchUp(0) // delivers 1, then the device may hold no more
	s.feed.settle(1)  // clears behind, asks for the next read
	s.feed.backlogRead(behinds)
	if r := unknownSeqs(t, ft); len(r) > 0 {
		t.Fatalf("read of 3 refused %v with only %v delivered: 3 is still in the backlog", r, ft.seqs(t))
	}
}

// A read held for a message that turns out to be skipped (a chat message
// whose body is not JSON) is refused: the device was never given it.
func TestHeldReadOfASkippedMessageIsRefused(t *testing.T) {
	fs := &fakeStream{gate: make(chan struct{})}
	fs.storeRaw("bob", nats.Header{contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {"alice"},
		contract.HdrDevice: {"phone"}, contract.HdrID: {"plain"}}, []byte("hello")) // 1: skipped
	fs.store("bob", "carol", "c1") // 2
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 0)
	waitFor(t, func() error {
		if fs.readCount() == 0 {
			return fmt.Errorf("no read yet")
		}
		return nil
	})
	for range maxFunctionCalls { // a read taken would wait for a slot: no call here
		s.calls <- struct{}{}
	}
	s.read(1)
	close(fs.gate)
	expectSeqs(t, ft, 2)
	waitIdle(t, s)
	if r := unknownSeqs(t, ft); !slices.Equal(r, []uint64{1}) {
		t.Fatalf("unknown_seq for %v, want the read of the skipped 1 refused", r)
	}
}

// askedInbox is INBOX as reads see it: it records the seqs asked for and
// holds none of them (each read is then answered unknown_seq).
type askedInbox struct {
	jetstream.Stream
	mu    sync.Mutex
	asked []uint64
}

func (a *askedInbox) GetMsg(_ context.Context, seq uint64, _ ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, seq)
	return nil, jetstream.ErrMsgNotFound
}

// Reads held for the backlog that come due together, more of them than
// a connection may have calls in flight, are each made once a call slot
// is free, none refused rate_limited: their frames were taken long ago,
// and neither SDK writes a read again.
func TestHeldReadsDueTogetherWaitForACallSlot(t *testing.T) {
	fs := &fakeStream{gate: make(chan struct{})}
	const n = 3 * maxFunctionCalls
	for i := range n {
		fs.store("bob", "alice", fmt.Sprintf("a%d", i))
	}
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	inbox := &askedInbox{}
	srv.inbox = inbox
	s, ft := startedSession(t, srv, "bob", 0)
	waitFor(t, func() error {
		if fs.readCount() == 0 {
			return fmt.Errorf("no read yet")
		}
		return nil
	})
	for range maxFunctionCalls { // every slot busy
		s.calls <- struct{}{}
	}
	var want []uint64
	for seq := uint64(1); seq <= n; seq++ {
		s.read(seq) // made on the last connection, written on this one
		want = append(want, seq)
	}
	close(fs.gate)
	expectSeqs(t, ft, want...)
	waitIdle(t, s)
	for range maxFunctionCalls {
		<-s.calls
	}
	waitFor(t, func() error {
		inbox.mu.Lock()
		defer inbox.mu.Unlock()
		if got := slices.Sorted(slices.Values(inbox.asked)); !slices.Equal(got, want) {
			return fmt.Errorf("reads made of %v, want %v", got, want)
		}
		return nil
	})
	for _, f := range ft.sent(t) {
		if f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited {
			t.Fatalf("a held read was refused: %s (seq %d)", f.Message, f.Seq)
		}
	}
}

// laggingStream answers the next last_by_subj as a replica that has not
// stored the newest message yet.
type laggingStream struct {
	*fakeStream
	mu     sync.Mutex
	behind uint64
}

func (ls *laggingStream) directBatch(req directGet, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (bool, error) {
	ls.mu.Lock()
	upTo := ls.behind
	if req.LastFor != "" {
		ls.behind = 0
	}
	ls.mu.Unlock()
	if req.LastFor == "" || upTo == 0 {
		return ls.fakeStream.directBatch(req, quit, each)
	}
	ls.fakeStream.mu.Lock()
	m := ls.fakeStream.msgs[upTo-1]
	ls.fakeStream.mu.Unlock()
	each(upTo, m)
	return false, nil
}

// A live copy let go while the device holds as many unacked as it may is
// read back through its own sequence once the device acks: a replica
// that answers for the newest from before it is asked again, not taken
// for "nothing new" (which would leave it for the next message or the
// sweep).
func TestCopyLetGoWhileBehindSurvivesALaggingReplica(t *testing.T) {
	fs := &fakeStream{}
	fs.store("bob", "alice", "a1")
	fs.store("bob", "alice", "a2")
	cfg := testConfig()
	cfg.MaxInflight = 2
	srv := testServer(t, cfg, fs, &fakeCursors{})
	ls := &laggingStream{fakeStream: fs}
	srv.stream = ls
	s, ft := startedSession(t, srv, "bob", 0)
	expectSeqs(t, ft, 1, 2)
	seq := fs.store("bob", "alice", "a3")
	s.feed.onLive(liveCopy(seq, seq-1, "bob", "alice", "a3")) // let go: behind
	waitIdle(t, s)
	ls.mu.Lock()
	ls.behind = 2 // the replica asked next has not stored 3 yet
	ls.mu.Unlock()
	s.feed.settle(1) // half settled: the feed reads again
	expectSeqs(t, ft, 1, 2, 3)
}
