package gateway

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Group logs.
//
// A group on its log (contract.GroupRecord.Log, docs/GROUP-LOG.md) is not
// copied into its members' inboxes: they are handed its messages from
// GROUPS. A gateway reads each such group once for all its devices in it:
// one reader per group, which listens for the group's bell (GROUPS rings
// contract.GroupBellSubject, headers only, for every message it stores)
// and on each ring reads the log from where it stands (batched direct
// gets of the group's subjects, in the log's own order:
// grouplogread.go), handing every message to each device
// following the group (a groupSink). A device that is behind the reader
// (it just connected, or holds as many unacked as it may) reads for
// itself until it has caught up: each message comes with the one the
// reader handed before it, so a device knows when it is caught up.
//
// A lost bell (the subscription dropped it, the connection was restored)
// is made up by the next one, or by the sweep (ringAll), which has every
// reader read again.

// groupSink takes a group's log as its reader reads it: a device's feed
// of that group.
type groupSink interface {
	// offer hands on the log's message e, the reader having handed on
	// the group's log through prev before it (0: where it started). It
	// runs on the reader's goroutine and must not block.
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
		if json.Valid(data) && validMedia(media) {
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
	log  *slog.Logger
	quit chan struct{} // closed when the gateway stops

	mu      sync.Mutex // guards readers
	readers map[string]*groupReader
}

func newGroupLogs(nc *nats.Conn, read logRead, log *slog.Logger, quit chan struct{}) *groupLogs {
	return &groupLogs{nc: nc, read: read, log: log, quit: quit, readers: map[string]*groupReader{}}
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
	closed  bool   // the last sink left: no read follows
}

// join has sink follow group gid's log. A new reader starts past from,
// the sink's position; a reader there already may be ahead of the sink
// or behind it, which the sink tells from what it is offered. The log is
// read at once, for what was stored before the bell was listened to.
func (l *groupLogs) join(gid string, sink groupSink, from uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.readers[gid]
	if r == nil {
		r = &groupReader{logs: l, gid: gid, last: from}
		sub, err := l.nc.Subscribe(contract.GroupBellSubject(gid), func(m *nats.Msg) {
			seq, _ := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
			r.ringAt(seq)
		})
		if err != nil {
			return err
		}
		r.sub = sub
		l.readers[gid] = r
	}
	r.mu.Lock()
	r.sinks = append(r.sinks, sink)
	r.mu.Unlock()
	r.ring()
	return nil
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
// were lost.
func (l *groupLogs) ringAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.readers {
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

// groupReadBatch is the most messages one read of a group's log returns.
const groupReadBatch = 256

// readOn reads the log past last until it has no more, handing each
// message to every sink. On an error it stops: the next ring or sweep
// reads again from where it stopped.
func (r *groupReader) readOn() {
	for {
		r.mu.Lock()
		from, near, closed := r.last+1, r.rung, r.closed
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
			if len(r.sinks) > 0 {
				e := newLogEntry(r.gid, seq, m.Header, m.Data)
				for _, s := range r.sinks {
					s.offer(prev, e)
				}
			}
			r.mu.Unlock()
			return true
		})
		if err != nil {
			r.logs.log.Debug("reading a group's log", "group", r.gid, "err", err)
			return
		}
		if !more {
			return
		}
	}
}
