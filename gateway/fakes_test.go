package gateway

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Small fakes for the seams of a session's parts: the transport, reads of
// INBOX and cursor writes. Tests built on them run without NATS or a
// socket and pin the rules of the feed, the backlog reader, the cursor
// saver and the PubAck queue in milliseconds.

// fakeTransport keeps the frames sent to it.
type fakeTransport struct {
	mu     sync.Mutex
	frames [][]byte
	code   int
	reason string
	done   chan struct{}
	once   sync.Once
}

func newFakeTransport() *fakeTransport { return &fakeTransport{done: make(chan struct{})} }

func (ft *fakeTransport) Send(frame []byte) bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.code != 0 {
		return false
	}
	ft.frames = append(ft.frames, frame)
	return true
}

func (ft *fakeTransport) Close(code int, reason string) {
	ft.once.Do(func() {
		ft.mu.Lock()
		ft.code, ft.reason = code, reason
		ft.mu.Unlock()
		close(ft.done)
	})
}

func (ft *fakeTransport) Done() <-chan struct{} { return ft.done }

// sent decodes every frame sent so far.
func (ft *fakeTransport) sent(t testing.TB) []*protocol.Frame {
	t.Helper()
	ft.mu.Lock()
	defer ft.mu.Unlock()
	out := make([]*protocol.Frame, 0, len(ft.frames))
	for _, b := range ft.frames {
		f, err := protocol.DecodeServer(b)
		if err != nil {
			t.Fatalf("frame %q: %v", b, err)
		}
		out = append(out, f)
	}
	return out
}

// seqs lists the sequences of the msg and receipt frames sent so far.
func (ft *fakeTransport) seqs(t testing.TB) []uint64 {
	t.Helper()
	var out []uint64
	for _, f := range ft.sent(t) {
		if f.Type == protocol.TypeMsg || f.Type == protocol.TypeReceipt {
			out = append(out, f.Seq)
		}
	}
	return out
}

func (ft *fakeTransport) closed() (int, string) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.code, ft.reason
}

// fakeStream is INBOX in memory: it answers direct gets as nats-server
// does (a batch from a sequence on a subject or a wildcard, or the last
// message on a subject), and counts them.
type fakeStream struct {
	mu    sync.Mutex
	msgs  []*nats.Msg // by sequence
	last  uint64
	reads []directGet
	fail  error         // every read fails with it, when set
	gate  chan struct{} // when set, reads wait until it is closed
	// cut, when set, cuts a multi_last answer short after that many
	// messages, as the server does past its byte limit.
	cut int
}

// store adds a message for user at the next sequence and returns it.
func (fs *fakeStream) store(user, from, id string) uint64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.last++
	fs.msgs = append(fs.msgs, storedMsg(fs.last, user, from, id))
	return fs.last
}

// storeAt adds a message for user at seq, past every one before.
func (fs *fakeStream) storeAt(seq uint64, user, from, id string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.last = seq
	fs.msgs = append(fs.msgs, storedMsg(seq, user, from, id))
}

// storeRaw adds a message with the headers given.
func (fs *fakeStream) storeRaw(user string, h nats.Header, data []byte) uint64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.last++
	h.Set(contract.HdrSequence, strconv.FormatUint(fs.last, 10))
	h.Set(contract.HdrSubject, contract.InboxSubject(user))
	fs.msgs = append(fs.msgs, &nats.Msg{Subject: contract.InboxSubject(user), Header: h, Data: data})
	return fs.last
}

// storedMsg is a chat message as a direct get answers it.
func storedMsg(seq uint64, user, from, id string) *nats.Msg {
	return &nats.Msg{
		Subject: contract.InboxSubject(user),
		Header: nats.Header{
			contract.HdrSequence: {strconv.FormatUint(seq, 10)},
			contract.HdrSubject:  {contract.InboxSubject(user)},
			contract.HdrKind:     {contract.KindMsg},
			contract.HdrFrom:     {from},
			contract.HdrDevice:   {"phone"},
			contract.HdrID:       {id},
			contract.HdrTS:       {"1795582349000"},
		},
		Data: []byte(`"` + id + `"`),
	}
}

// liveCopy is the copy INBOX republishes of the message stored at seq,
// whose predecessor on the same inbox is prev.
func liveCopy(seq, prev uint64, user, from, id string) *nats.Msg {
	m := storedMsg(seq, user, from, id)
	m.Subject = contract.LiveSubject(user)
	m.Header.Set(contract.HdrLastSeq, strconv.FormatUint(prev, 10))
	return m
}

func matches(filter, subject string) bool {
	if strings.HasSuffix(filter, ".*") {
		return strings.HasPrefix(subject, strings.TrimSuffix(filter, "*")) && !strings.Contains(subject[len(filter)-1:], ".")
	}
	return filter == subject
}

func (fs *fakeStream) directBatch(req directGet, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (bool, error) {
	fs.mu.Lock()
	fs.reads = append(fs.reads, req)
	gate, fail := fs.gate, fs.fail
	fs.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-quit:
			return false, nil
		}
	}
	if fail != nil {
		return false, fail
	}
	fs.mu.Lock()
	var found []*nats.Msg
	more := false
	switch {
	case len(req.MultiLast) > 0:
		// Each subject's last message, in stream order.
		for i, m := range fs.msgs {
			if !slices.Contains(req.MultiLast, m.Subject) || slices.ContainsFunc(fs.msgs[i+1:], func(n *nats.Msg) bool { return n.Subject == m.Subject }) {
				continue
			}
			if fs.cut > 0 && len(found) == fs.cut {
				more = true
				break
			}
			found = append(found, m)
		}
	case req.LastFor != "":
		for i := len(fs.msgs) - 1; i >= 0; i-- {
			if fs.msgs[i].Subject == req.LastFor {
				found = append(found, fs.msgs[i])
				break
			}
		}
	default:
		for _, m := range fs.msgs {
			seq, _ := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
			if seq < req.Seq || !matches(req.NextFor, m.Subject) {
				continue
			}
			if len(found) == max(req.Batch, 1) {
				more = true
				break
			}
			found = append(found, m)
		}
	}
	fs.mu.Unlock()
	for _, m := range found {
		seq, _ := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
		if !each(seq, m) {
			return false, nil
		}
	}
	return more, nil
}

// readCount counts the reads made.
func (fs *fakeStream) readCount() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.reads)
}

// readsOn counts the reads made with filter.
func (fs *fakeStream) readsOn(filter string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, r := range fs.reads {
		if r.NextFor == filter {
			n++
		}
	}
	return n
}

// fakeCursors keeps the cursors saved, in order.
type fakeCursors struct {
	mu     sync.Mutex
	saved  []uint64
	stored []uint64 // waited for
	// storing, if set, is told of each storeCursor, which then waits
	// for gate.
	storing chan<- uint64
	gate    <-chan struct{}
}

func (fc *fakeCursors) saveCursor(_, _ string, floor uint64) error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.saved = append(fc.saved, floor)
	return nil
}

func (fc *fakeCursors) storeCursor(_ context.Context, _, _ string, floor uint64) error {
	if fc.storing != nil {
		fc.storing <- floor
		<-fc.gate
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.stored = append(fc.stored, floor)
	return nil
}

func (fc *fakeCursors) saves() (saved, stored []uint64) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return slices.Clone(fc.saved), slices.Clone(fc.stored)
}

// testServer is a Server with nothing but what sessions' parts use, over
// the fakes.
func testServer(t testing.TB, cfg Config, fs *fakeStream, fc *fakeCursors) *Server {
	t.Helper()
	srv := &Server{
		cfg:         cfg,
		log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		maxInflight: cfg.maxInflight(),
		metrics:     newMetrics(func() float64 { return 0 }),
		stream:      fs,
		cursors:     fc,
	}
	srv.backlog = newBacklog(srv)
	srv.limits = newLimitKeeper(&srv.cfg)
	t.Cleanup(srv.backlog.close)
	return srv
}

// testConfig is the default config with no cursor delay.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.CursorDelay = 0
	return cfg
}

// startedSession is a session of user's phone whose feed runs from pos.
func startedSession(t testing.TB, srv *Server, user string, pos uint64) (*session, *fakeTransport) {
	t.Helper()
	ft := newFakeTransport()
	s := newSession(srv, Identity{User: user, Device: "phone", Expires: time.Now().Add(time.Hour)}, ft)
	s.feed.begin(pos)
	s.cursor.init(pos)
	if !s.feed.start() {
		t.Fatal("feed did not start")
	}
	t.Cleanup(func() {
		s.feed.stop()
		<-s.feed.finished()
		s.timer.stop()
	})
	return s, ft
}

// waitFor waits up to 5 s for cond to return nil.
func waitFor(t testing.TB, cond func() error) {
	t.Helper()
	waitWithin(t, 5*time.Second, cond)
}

// waitWithin looks at cond every millisecond until it returns nil, and
// fails t with its last error once within has passed. The conditions are
// state other goroutines change (a fake's records, a runner's flags, the
// goroutine count) with nothing to signal on.
func waitWithin(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-deadline.C:
			t.Fatal(err)
		case <-tick.C:
		}
	}
}
