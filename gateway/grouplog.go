package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Group logs.
//
// A group on its log (contract.GroupRecord.Log, docs/GROUP-LOG.md) is not
// copied into its members' inboxes: they are handed its messages from
// GROUPS. A gateway reads each such group once for all its devices in it:
// one reader per group, which listens for the group's bell (GROUPS rings
// contract.GroupBellSubject with every message it stores) and on each
// ring reads the log from where it stands (batched direct gets of the
// group's subjects, in the log's own order: grouplogread.go), handing
// every message to each device following the group (a groupSink). Where
// GROUPS has one replica, on the gateway's own server, a reader whose
// last read reached the log's end takes each later message from its bell
// instead (take). A device that is behind the reader (it just
// connected, or holds as many unacked as it may) reads for itself until
// it has caught up: each message comes with the one the reader handed
// before it, so a device knows when it is caught up.
//
// A lost bell (the subscription dropped it, the connection was restored)
// is made up by the next one, read for rather than taken (take can tell
// that bells may have been lost), or by the sweep (ringAll), which has
// every reader read again.
//
// A reader keeps the last readerTail messages it handed on. A device
// that joins it behind, but no further behind than those, is handed them
// at once, and a device reading for itself takes them, rather than read
// the log: the members of a group coming back to a gateway together (a
// blip, or every one of them after a restart, where the first one back
// starts the reader at its place) cost it about one read per group
// rather than one per device per group. A device further behind, or
// behind where the reader started, reads the log.

// groupSink takes a group's log as its reader reads it: a device's feed
// of that group.
type groupSink interface {
	// offer hands on the log's message e, the reader having handed on
	// the group's log through prev before it (0: where it started). It
	// runs on the reader's goroutine, or on the bells' (take), under
	// the reader's lock, and must not block.
	offer(prev uint64, e *logEntry)
}

// logEntry is one message of a group's log as every device's feed takes
// it, worked out once per gateway by the reader (or by a feed reading
// for itself): what differs per device (its own send, a change that
// takes its user out or brings them in) is the feed's.
type logEntry struct {
	seq       uint64
	kind      string // contract.KindMsg, contract.KindEvent, or anything else (passed)
	from, dev string
	id        string // the message's id; a change's system id
	// frame is the msg frame every device gets (shared: never written
	// to), nil for a message that is passed (malformed).
	frame []byte
	// op and users are a change's.
	op    string
	users []string
}

// newLogEntry reads group gid's log message stored at seq, headers h and
// body data.
func newLogEntry(gid string, seq uint64, h nats.Header, data []byte) *logEntry {
	e := &logEntry{seq: seq, kind: h.Get(contract.HdrKind), from: h.Get(contract.HdrFrom), dev: h.Get(contract.HdrDevice), id: h.Get(contract.HdrID)}
	ts, _ := strconv.ParseInt(h.Get(contract.HdrTS), 10, 64)
	switch e.kind {
	case contract.KindMsg:
		media := h.Get(contract.HdrMedia)
		if protocol.ValidJSON(data) && validMedia(media) {
			e.frame = protocol.AppendGroupLogMsg(nil, e.id, e.from, e.dev, gid, seq, ts, data, []byte(media))
		}
	case contract.KindEvent:
		var ev protocol.GroupEvent // the stored change's op, users, name and promoted
		if json.Unmarshal(data, &ev) != nil || ev.Op == "" {
			break
		}
		e.op, e.users = ev.Op, ev.Users
		body, _ := json.Marshal(ev)
		e.id = protocol.SystemIDPrefix + strconv.FormatUint(seq, 10)
		e.frame = protocol.AppendGroupLogEvent(nil, e.id, e.from, e.dev, gid, seq, ts, body)
	}
	if e.frame != nil && (!protocol.ValidID(e.from) || !protocol.ValidID(e.dev) || !protocol.ValidID(e.id) || !utf8.Valid(e.frame)) {
		e.frame = nil
	}
	return e
}

// logRead reads a group's log from a sequence on, up to a batch, the
// newest message known of being near (Server.readGroupLog).
type logRead func(gid string, from, near uint64, batch int, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (more bool, err error)

// groupLogs is the gateway's readers of group logs, by group.
type groupLogs struct {
	nc   *nats.Conn
	read logRead
	// hosted tells whether GROUPS has one replica, on the server the
	// connection is on (nil: never trusted). Then no bell is lost but
	// those the bells' subscription drops or a reconnect loses, both
	// counted, and a reader may take a message from its bell. On
	// another server a bell crosses a route, which can drop it
	// unseen; with replicas a leader change loses the republish of
	// what the old leader stored.
	hosted func(context.Context) (bool, error)
	// whole is 1 + the connection's reconnects when hosted last said
	// yes, 0 when it said no (checkBells).
	whole atomic.Uint64
	log   *slog.Logger
	quit  chan struct{} // closed when the gateway stops
	// bells is every reader's bell subscription's channel, rung by one
	// goroutine (ringing): a subscription with a callback would be a
	// goroutine of its own per group a gateway's devices follow.
	bells chan *nats.Msg

	mu      sync.Mutex // guards readers
	readers map[string]*groupReader
}

// bellQueue is how many bells wait for ringing at most; past it NATS
// drops them, and dropped reports the groups concerned. Where GROUPS
// rings with whole messages, a full queue holds that many bodies (up to
// the gateway's frame limit each, 64 KiB by default: 512 MiB if every
// one were that large, against about 2.5 MB of headers); 1,024 would
// bound that to 64 MiB, but dropped and read for more bells: ten groups
// of 10 flat out gave 0.61-0.64x raw against 0.68-0.73x, alternating.
const bellQueue = 8192

// newGroupLogs starts the readers' ringing; queue is how many bells
// wait (bellQueue).
func newGroupLogs(nc *nats.Conn, read logRead, log *slog.Logger, quit chan struct{}, queue int) *groupLogs {
	l := &groupLogs{nc: nc, read: read, log: log, quit: quit, bells: make(chan *nats.Msg, queue), readers: map[string]*groupReader{}}
	go l.ringing()
	return l
}

// checkBells asks hosted whether bells may be taken now. Run at the
// start, after a reconnect, on a stream leader's change and with each
// sweep; an answer from before a reconnect counts for nothing after it.
func (l *groupLogs) checkBells() {
	if l.hosted == nil {
		return
	}
	epoch := l.nc.Stats().Reconnects // before the question: see take
	ctx, cancel := context.WithTimeout(context.Background(), bellsCheckTimeout)
	defer cancel()
	if ok, err := l.hosted(ctx); err == nil && ok {
		l.whole.Store(epoch + 1)
	} else {
		l.whole.Store(0)
	}
}

// bellsCheckTimeout bounds checkBells' question.
const bellsCheckTimeout = 5 * time.Second

// groupsHosted is groupLogs.hosted for GROUPS as js finds it, nc being
// the connection the bells come on.
func groupsHosted(js jetstream.JetStream, nc *nats.Conn) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		st, err := js.Stream(ctx, contract.GroupsStream)
		if err != nil {
			return false, err
		}
		return bellsHosted(st.CachedInfo(), nc.ConnectedServerName()), nil
	}
}

// bellsHosted is hosted's answer from GROUPS' info: one replica, whose
// server (the leader; a server outside a cluster names itself) is
// server.
func bellsHosted(info *jetstream.StreamInfo, server string) bool {
	return info != nil && info.Config.Replicas <= 1 && info.Cluster != nil &&
		info.Cluster.Leader != "" && info.Cluster.Leader == server
}

// ringing rings, for each bell, its group's reader, until the gateway
// stops.
func (l *groupLogs) ringing() {
	for {
		select {
		case <-l.quit:
			return
		case m := <-l.bells:
			seq, _ := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
			if r := l.reader(m.Subject); r != nil && !r.take(seq, m) {
				r.ringAt(seq)
			}
		}
	}
}

// reader is the reader whose bell is subject, nil if none.
func (l *groupLogs) reader(subject string) *groupReader {
	gid, ok := strings.CutPrefix(subject, contract.GroupBellPrefix)
	if !ok {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.readers[gid]
}

// dropped is told of a subscription that NATS dropped messages of: if a
// reader's bell, the reader reads its log again, as a ring would have
// had it. Bells dropped after this one are made up by the next ring of
// the group, or by the sweep.
func (l *groupLogs) dropped(sub *nats.Subscription) {
	if r := l.reader(sub.Subject); r != nil {
		r.ring()
	}
}

// groupReader reads one group's log for the gateway's sinks of it.
type groupReader struct {
	logs *groupLogs
	gid  string
	sub  *nats.Subscription

	mu      sync.Mutex // guards the fields below
	sinks   []groupSink
	last    uint64 // handed on through here
	rung    uint64 // the newest message a bell rang for
	wake    bool   // a read is asked for
	running bool   // the reading goroutine runs
	failed  bool   // the last read failed: the next ring or sweep reads again
	// dropped and epoch are the bell subscription's dropped bells and
	// the connection's reconnects as of the last read (take).
	dropped int
	epoch   uint64
	closed  bool // the last sink left: no read follows
	// tail is the last messages handed on, oldest first, each after the
	// one before it, the last at last.
	tail []tailEntry
}

// tailEntry is a message a reader handed on, after prev, at (since
// monoStart, so a step of the wall clock does not age it).
type tailEntry struct {
	prev uint64
	e    *logEntry
	at   time.Duration
}

// monoStart is what tail entries' times count from.
var monoStart = time.Now()

// readerTail is how many of the messages a reader handed on it keeps for
// the devices behind it (joining it, or reading for themselves): a device
// more behind than that reads the log. As many as a device may hold
// unacked of a group (groupWindow). A kept message is its frame, shared
// with every device that had it: at most this many frames per group a
// gateway's devices follow (each at most MaxFrameBytes, a few hundred
// bytes for a chat message), and only those handed on within
// readerTailAge, up to a sweep later: what a gateway keeps is bounded
// by its groups' recent traffic, not by how many groups it reads.
const readerTail = groupWindow

// readerTailAge is how long a reader keeps a message it handed on, at
// least: the devices of a group that come back together after a blip
// (to a reader still there, kept by another member's device) do so
// within seconds.
const readerTailAge = time.Minute

// join has sink follow group gid's log, sink's place in it being from.
// A new reader starts there, and reads the log at once, for what was
// stored before the bell was listened to. A reader there already may be
// behind the sink (it drops what it had) or ahead of it: then it hands
// the sink what it kept of the messages past from, as it handed them
// before. caughtUp says that the sink is offered everything past from
// this way; otherwise the sink must read the log for itself up to where
// it is offered a message after one it had (docs/GROUP-LOG.md).
func (l *groupLogs) join(gid string, sink groupSink, from uint64) (caughtUp bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.readers[gid]
	fresh := r == nil
	if fresh {
		r = &groupReader{logs: l, gid: gid, last: from}
		sub, err := l.nc.ChanSubscribe(contract.GroupBellSubject(gid), l.bells)
		if err != nil {
			return false, err
		}
		r.sub = sub
		l.readers[gid] = r
	}
	r.mu.Lock()
	switch {
	case r.last == from:
		caughtUp = true
	case r.last > from:
		// Under the lock, as the reader offers: nothing comes between.
		var past []tailEntry
		if past, caughtUp = r.keptLocked(from); caughtUp {
			for _, t := range past {
				sink.offer(t.prev, t.e)
			}
		}
	case r.last < from:
		// The log holds the sink's place, which the reader has not
		// read: it missed bells, or reads a backlog. It reads on, and
		// the sink reads for itself meanwhile.
		r.rung = max(r.rung, from)
	}
	r.sinks = append(r.sinks, sink)
	// A reader that keeps up needs no read for a new sink: its bell
	// rings for anything stored since it started.
	behind := fresh || r.failed || r.rung > r.last
	r.mu.Unlock()
	if behind {
		r.ring()
	}
	return caughtUp, nil
}

// kept is what group gid's reader kept of its log past from, oldest
// first, at most n; ok false when it did not keep all of what it read
// past from (or read nothing past it): the log must be read. A device
// reading for itself takes these rather than read them again.
func (l *groupLogs) kept(gid string, from uint64, n int) (es []*logEntry, ok bool) {
	l.mu.Lock()
	r := l.readers[gid]
	l.mu.Unlock()
	if r == nil {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	past, ok := r.keptLocked(from)
	if !ok || len(past) == 0 {
		return nil, false
	}
	for _, t := range past[:min(n, len(past))] {
		es = append(es, t.e)
	}
	return es, true
}

// keptLocked is the kept messages past from, ok false if the reader did
// not keep all it handed on past from.
//
// Lock should be held.
func (r *groupReader) keptLocked(from uint64) (past []tailEntry, ok bool) {
	if len(r.tail) == 0 || r.tail[0].prev > from {
		return nil, false
	}
	i, _ := slices.BinarySearchFunc(r.tail, from+1, func(t tailEntry, seq uint64) int { return cmp.Compare(t.e.seq, seq) })
	return r.tail[i:], true
}

// leave ends sink's following of gid's log: it is offered nothing once
// leave returns. The reader stops with its last sink.
func (l *groupLogs) leave(gid string, sink groupSink) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.readers[gid]
	if r == nil {
		return
	}
	r.mu.Lock()
	r.sinks = slices.DeleteFunc(r.sinks, func(s groupSink) bool { return s == sink })
	empty := len(r.sinks) == 0
	if empty {
		r.closed = true
	}
	r.mu.Unlock()
	if empty {
		_ = r.sub.Unsubscribe()
		delete(l.readers, gid)
	}
}

// ringAll has every reader read its log again: the sweep, for bells that
// were lost. Each reader lets go of what it kept before readerTailAge.
func (l *groupLogs) ringAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	cutoff := time.Since(monoStart) - readerTailAge
	for _, r := range l.readers {
		r.trim(cutoff)
		r.ring()
	}
}

// ringAt is the bell for the message stored at seq.
func (r *groupReader) ringAt(seq uint64) {
	r.mu.Lock()
	r.rung = max(r.rung, seq)
	r.mu.Unlock()
	r.ring()
}

// ring asks for a read of the log, starting the reading goroutine if it
// is not running. Rings that come while it reads make one more read.
func (r *groupReader) ring() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.wake = true
	if !r.running {
		r.running = true
		go r.run()
	}
}

func (r *groupReader) run() {
	for {
		r.mu.Lock()
		if !r.wake || r.closed {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.wake = false
		r.mu.Unlock()
		r.readOn()
	}
}

// take hands on the message a bell carries, stored at seq, if it is the
// log's next, and tells whether the bell needs no read: it was taken, or
// it rang for a message handed on already.
//
// The log's next it is when the reader's last read read the log to its
// end (it is not reading, none is asked for, the last did not fail) and
// every bell since was taken: bells come in the order GROUPS stored
// their messages, on one subscription made before the reader's first
// read, so each message stored since that read rang before this one.
// Unless a bell was lost: the subscription dropped one (counted by
// nats.go before it hands on the next) or the connection was restored
// (bells published meanwhile are gone), both compared with the last
// read; or a bell was lost where nothing counts it (a route between
// servers, a leader change), which is why bells are trusted only from a
// GROUPS of one replica on the gateway's own server (hosted, asked
// again after each reconnect). Then the reader reads, as for a bell
// with headers only.
func (r *groupReader) take(seq uint64, m *nats.Msg) bool {
	if seq == 0 || m.Header.Get(hdrMsgSize) != "" {
		return false // the bell has the headers only
	}
	if subj := m.Header.Get(contract.HdrSubject); m.Header.Get(contract.HdrStream) != contract.GroupsStream ||
		subj != contract.GroupMsgSubject(r.gid) && subj != contract.GroupEventSubject(r.gid) {
		return false // not a republish of this group's log: read it
	}
	// Counted after this bell came and before the lock (nats.go's
	// Stats waits for a reconnect's dial): a bell lost before this one
	// was counted before it was queued.
	reconnects := r.logs.nc.Stats().Reconnects
	dropped, err := r.sub.Dropped()
	if err != nil || r.logs.whole.Load() != reconnects+1 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return true
	case seq <= r.last && !r.running && !r.wake:
		return true
	case r.running || r.wake || r.failed || r.rung > r.last:
		return false
	}
	if dropped != r.dropped || reconnects != r.epoch {
		return false
	}
	prev := r.last
	r.last, r.rung = seq, seq
	e := newLogEntry(r.gid, seq, m.Header, m.Data)
	for _, s := range r.sinks {
		s.offer(prev, e)
	}
	r.keep(prev, e)
	return true
}

// hdrMsgSize is set on a message republished with its headers only.
const hdrMsgSize = "Nats-Msg-Size"

// groupReadBatch is the most messages one read of a group's log returns.
const groupReadBatch = 256

// readOn reads the log past last until it has no more, handing each
// message to every sink. On an error it stops: the next ring or sweep
// reads again from where it stopped.
func (r *groupReader) readOn() {
	for {
		// Counted before the read, outside the lock (take).
		dropped, _ := r.sub.Dropped()
		epoch := r.logs.nc.Stats().Reconnects
		r.mu.Lock()
		from, near, closed := r.last+1, r.rung, r.closed
		r.dropped, r.epoch = dropped, epoch
		r.mu.Unlock()
		if closed {
			return
		}
		more, err := r.logs.read(r.gid, from, near, groupReadBatch, r.logs.quit, func(seq uint64, m *nats.Msg) bool {
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				return false
			}
			prev := r.last
			r.last = seq
			// Offered under the lock, so a sink that left gets nothing
			// after leave returns, and every sink sees the log in order.
			e := newLogEntry(r.gid, seq, m.Header, m.Data)
			for _, s := range r.sinks {
				s.offer(prev, e)
			}
			r.keep(prev, e)
			r.mu.Unlock()
			return true
		})
		r.mu.Lock()
		r.failed = err != nil
		r.mu.Unlock()
		if err != nil {
			r.logs.log.Debug("reading a group's log", "group", r.gid, "err", err)
			return
		}
		if !more {
			return
		}
	}
}

// keep adds e, handed on after prev, to the tail, dropping the oldest
// past readerTail.
//
// Lock should be held.
func (r *groupReader) keep(prev uint64, e *logEntry) {
	if n := len(r.tail); n > 0 && r.tail[n-1].e.seq != prev {
		r.tail = r.tail[:0] // not after the last kept (cannot happen): start again
	}
	if len(r.tail) == readerTail {
		copy(r.tail, r.tail[1:])
		r.tail = r.tail[:readerTail-1]
	}
	r.tail = append(r.tail, tailEntry{prev: prev, e: e, at: time.Since(monoStart)})
}

// trim lets go of the messages kept before cutoff (since monoStart).
func (r *groupReader) trim(cutoff time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for i < len(r.tail) && r.tail[i].at < cutoff {
		i++
	}
	switch {
	case i == len(r.tail):
		r.tail = nil
	case i > 0:
		r.tail = slices.Clone(r.tail[i:])
	}
}
