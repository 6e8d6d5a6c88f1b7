package gateway

import (
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Delivery.
//
// INBOX republishes each message once it is stored, on sb.live.<user>, with
// its stream sequence and the sequence of the previous message on the same
// inbox. A session subscribes there and hands each copy straight to the
// device. It reads the stream itself (a batched direct get from the
// device's position) only to fill a gap:
//   - on connect, from the device's cursor;
//   - when a live copy names a predecessor the device has not had;
//   - after the device had too many messages unacked (MaxInflight) and
//     copies were let go meanwhile;
//   - when copies may have been lost on the way: the NATS connection was
//     restored, a subscription overflowed, the INBOX leader changed, and on
//     a slow periodic sweep for the case none of those reports.
//
// Live copies are core NATS and may be lost; every one carries what is
// needed to notice. The stream is the truth: nothing is settled (the
// device's cursor moved past it) before the device acked it and everything
// before it, and for chat messages before their senders' delivered ticks
// were stored (ticks.go).
//
// So a connected device costs the server one subscription, and one that is
// away costs a cursor record; neither holds a consumer.

const (
	// liveBuffer is how many live copies wait per session for its feed
	// loop. Past it they are dropped and read back from the stream.
	liveBuffer = 64
	// catchUpBatch is the most messages one direct get returns.
	catchUpBatch = 256
	// catchUpBytes bounds one direct get's response.
	catchUpBytes = 1 << 20
	// catchUpTimeout bounds one direct get.
	catchUpTimeout = 5 * time.Second
	// secondLookDelay is when a session on a cluster reads its inbox once
	// more after connecting.
	secondLookDelay = 2 * time.Second
	// catchUpGiveUp is how long reads may keep failing before the session
	// closes with 1012 so the client reconnects (to another gateway, or
	// once the stream has a leader again).
	catchUpGiveUp = 20 * time.Second
)

// pendingMsg is a message delivered to the device and not yet acked.
type pendingMsg struct {
	receipt bool   // a receipt for this sender (it ticks nothing)
	group   bool   // a member's copy of a group message or change (it ticks its group, groupticks.go)
	acked   bool   // the device acked it; settled with its stretch's ticks
	from    string // for a chat message, its sender: who gets the tick
	// For a chat message from a user homed in another region: that
	// region and the message's sequence in its OUTBOX (regions.go).
	region string
	origin uint64
	gid    string // for a group copy, its group
	gseq   uint64 // and its place in the group's log (Sb-Group-Seq)
}

// feed is a session's delivery: it hands the device its messages in
// stream order, from live copies and reads of the stream, and keeps what
// the device holds unacked and unsettled.
//
// Its runner (run) is started when there is work (a live copy, a read
// asked for) and ends when there is none, so an idle feed holds no
// goroutine (it runs on one of the gateway's runners: workers.go). The
// router hands it live copies; the backlog reader, while the runner waits
// on it, hands it messages read for many sessions at once (nextFrom,
// offer), so a device's messages are still handed on by one goroutine at
// a time.
type feed struct {
	s *session

	mu sync.Mutex // guards the fields below
	// pending: delivered and not acked by the device, by sequence; made
	// at the first delivery, so a device that gets nothing holds no map.
	pending map[uint64]pendingMsg
	// unsettled: delivered and not yet settled (acked, and the delivered
	// event stored), in order.
	unsettled []uint64
	last      uint64 // highest sequence delivered or skipped
	floor     uint64 // everything at or below it is settled
	behind    bool   // live copies are let go: too many unacked
	behinds   uint64 // how many times behind was set: a read of the stream it cut short is told by this
	stopping  bool   // delivery was stopped on purpose
	liveQ     []*nats.Msg
	wake      bool // a read of the stream is asked for
	// letGo is the highest sequence of a live copy let go (past
	// liveBuffer, or behind): the read that follows reads through it,
	// asking again a replica that answers from before it.
	letGo   uint64
	running bool          // the runner is running
	started bool          // the runner may start: the welcome went out
	ended   bool          // done is closed
	quit    chan struct{} // closed when delivery stops
	done    chan struct{} // closed once the runner has returned for good, or never ran
	// caughtUp: the device's backlog from its cursor has been delivered
	// once. Until then a read past last may be of a message the device had
	// on its last connection and gets again in this one: readWait holds
	// such reads (each a position in its own conversation) until their
	// message is delivered (then they are taken) or the backlog is through
	// without it (then refused).
	caughtUp bool
	readWait []uint64
	// unacked is how many of pending the device has not acked; acks
	// and deliveries are when it acked, and was given, what ticks (not
	// receipts): burstEnd.
	unacked    int
	acks       cadence
	deliveries cadence
}

// maxReadWait bounds the reads a session holds for its backlog, as the
// SDKs bound the reads they keep while offline.
const maxReadWait = 256

func (f *feed) init(s *session) {
	f.s = s
	f.quit = make(chan struct{})
	f.done = make(chan struct{})
}

// begin sets the device's position, before anything is delivered.
func (f *feed) begin(pos uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last, f.floor = pos, pos
}

// start lets delivery begin, with a read of the stream from the device's
// position. It reports false if delivery was stopped already.
func (f *feed) start() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		f.endLocked()
		return false
	}
	f.started, f.wake = true, true
	f.runLocked()
	return true
}

// stop ends delivery: nothing more is handed to the device once finished
// is closed.
func (f *feed) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopping {
		f.stopping = true
		close(f.quit)
	}
	if !f.running {
		f.endLocked()
	}
}

// finished is closed once delivery has stopped for good.
func (f *feed) finished() <-chan struct{} { return f.done }

// endLocked closes done once.
//
// Lock should be held.
func (f *feed) endLocked() {
	if !f.ended {
		f.ended = true
		close(f.done)
	}
}

// onLive queues a live copy. It runs on the router's goroutine and does
// not block: past liveBuffer copies waiting, it lets them go and asks for
// a read of the stream instead.
func (f *feed) onLive(m *nats.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		return
	}
	if len(f.liveQ) >= liveBuffer {
		if !f.wake {
			f.s.srv.metrics.catchUps.WithLabelValues(reasonOverflow).Inc()
		}
		f.wake = true
		if seq, err := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64); err == nil {
			f.letGo = max(f.letGo, seq)
		}
	} else {
		f.liveQ = append(f.liveQ, m)
	}
	f.runLocked()
}

// wakeUp asks for a read of the stream from the device's position.
func (f *feed) wakeUp() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopping {
		f.wake = true
		f.runLocked()
	}
}

// runLocked starts the runner if there is work, delivery has started and
// it is not running.
//
// Lock should be held.
func (f *feed) runLocked() {
	if f.running || !f.started || f.stopping || (len(f.liveQ) == 0 && !f.wake) {
		return
	}
	f.running = true
	runners.Go(f.run)
}

// run delivers the device's messages in stream order: a read of the
// stream when asked, then the live copies in turn. It ends when there is
// nothing to do, or delivery stops.
func (f *feed) run() {
	for {
		f.mu.Lock()
		if f.stopping || (len(f.liveQ) == 0 && !f.wake) {
			f.running = false
			f.liveQ = nil
			stopping := f.stopping
			if stopping {
				f.endLocked()
			}
			drained := f.unacked == 0 && !f.behind
			f.mu.Unlock()
			if !stopping && drained {
				// Acked all before the runner was done: the burst may
				// be over (burstEnd), which the last ack could not say.
				f.s.ticks.mayEnd()
			}
			return
		}
		if f.wake {
			f.wake = false
			behinds := f.behinds
			f.mu.Unlock()
			f.catchUp(0)
			f.backlogRead(behinds)
			continue
		}
		m := f.liveQ[0]
		f.liveQ[0] = nil
		f.liveQ = f.liveQ[1:]
		f.mu.Unlock()
		f.live(m)
	}
}

// What waitRead did with a read.
const (
	readNow     = iota // delivered meanwhile: take it
	readHeld           // held for the backlog (see readWait)
	readRefused        // past what was delivered, and the backlog is through
)

// waitRead holds a read of seq, past what this session had delivered,
// until the device's backlog has come again (see readWait).
func (f *feed) waitRead(seq uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case seq <= f.last:
		return readNow
	case f.caughtUp || f.stopping || len(f.readWait) >= maxReadWait:
		return readRefused
	}
	f.readWait = append(f.readWait, seq)
	return readHeld
}

// dueReadsLocked takes the held reads of messages delivered by now.
//
// Lock should be held.
func (f *feed) dueReadsLocked() (due []uint64) {
	if len(f.readWait) == 0 {
		return nil
	}
	kept := f.readWait[:0]
	for _, seq := range f.readWait {
		if seq <= f.last {
			due = append(due, seq)
		} else {
			kept = append(kept, seq)
		}
	}
	f.readWait = kept
	return due
}

// fallBehindLocked marks the device as holding as many unacked as it may.
//
// Lock should be held.
func (f *feed) fallBehindLocked() {
	f.behind = true
	f.behinds++
}

// backlogRead runs after each read of the stream (behinds is the count
// before it): the first one that was not cut short by max_inflight has
// delivered the device's backlog, and a read held for it is taken or
// refused. By the count, not by behind alone: a settle may have cleared
// behind between the read's end and this (it then asks for the next
// read, which decides).
func (f *feed) backlogRead(behinds uint64) {
	f.mu.Lock()
	if f.caughtUp || f.behind || f.behinds != behinds || f.stopping {
		f.mu.Unlock()
		return
	}
	f.caughtUp = true
	due := f.dueReadsLocked()
	refused := f.readWait
	f.readWait = nil
	f.mu.Unlock()
	f.s.readsDue(due)
	for _, seq := range refused {
		f.s.refuseRead(seq)
	}
}

// live hands on one live copy, or reads the stream when it shows a gap.
func (f *feed) live(m *nats.Msg) {
	seq, err := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
	if err != nil {
		return
	}
	prev, _ := strconv.ParseUint(m.Header.Get(contract.HdrLastSeq), 10, 64)
	f.mu.Lock()
	last := f.last
	if seq > last && len(f.unsettled) >= f.s.srv.maxInflight {
		f.fallBehindLocked()
	}
	behind := f.behind
	if behind && seq > last {
		f.letGo = max(f.letGo, seq)
	}
	f.mu.Unlock()
	switch {
	case seq <= last || behind:
		// Had it already, or will read it from the stream once the
		// device has acked enough.
	case prev > last:
		// A message before this one was missed: read both from the stream.
		f.s.srv.metrics.catchUps.WithLabelValues(reasonGap).Inc()
		f.catchUp(seq)
	default:
		f.take(seq, m.Header, m.Data)
	}
}

// catchUp reads the device's inbox from its position and delivers what it
// finds, until nothing is left, the device has as many unacked as it may,
// or delivery stops. through, when not zero, is a sequence known to be
// stored (from a live copy): a replica that answers from behind it is
// asked again.
//
// Without one, it first asks for the newest message in the inbox, which
// the server finds from its per-subject index: usually there is nothing
// new (a sweep, a reconnect), and reading on from the device's position
// would have the server load the block that position is in, however old.
func (f *feed) catchUp(through uint64) {
	srv := f.s.srv
	if through == 0 {
		// A live copy let go is known stored: read through it, whatever
		// a replica answers for the newest.
		f.mu.Lock()
		letGo := f.letGo
		f.mu.Unlock()
		newest, err := f.newestStored()
		if err == nil {
			f.mu.Lock()
			had := f.last
			f.mu.Unlock()
			if max(newest, letGo) <= had {
				return
			}
			through = max(newest, letGo)
		} else {
			through = letGo // on an error the read below tries, and retries, itself
		}
	}
	srv.backlog.reading.Add(1)
	defer srv.backlog.reading.Add(-1)
	if through > 0 && srv.backlog.read(f, through) {
		return
	}
	var failingSince, lagging time.Time
	backoff := 50 * time.Millisecond
	for {
		f.mu.Lock()
		from, room, stopping := f.last+1, srv.maxInflight-len(f.unsettled), f.stopping
		if room <= 0 {
			f.fallBehindLocked()
		}
		f.mu.Unlock()
		if stopping || room <= 0 {
			return
		}
		more, err := f.readBatch(from, min(room, catchUpBatch))
		switch {
		case err != nil:
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > catchUpGiveUp {
				f.s.log.Warn("cannot read the inbox; restarting the session", "err", err)
				f.s.t.Close(protocol.CloseServiceRestart, "inbox unavailable")
				return
			}
		case more:
			failingSince, backoff = time.Time{}, 50*time.Millisecond
			continue
		default:
			f.mu.Lock()
			done := f.last >= through
			f.mu.Unlock()
			if done {
				return
			}
			// Answered by a replica that has not stored through yet,
			// or through is gone (purged by an operator): give up after
			// a while, as nothing is then missing.
			if lagging.IsZero() {
				lagging = time.Now()
			} else if time.Since(lagging) > catchUpGiveUp {
				return
			}
		}
		select {
		case <-f.quit:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// newestStored returns the sequence of the newest message in the device's
// inbox, 0 if it is empty.
func (f *feed) newestStored() (newest uint64, err error) {
	_, err = f.s.srv.stream.directBatch(directGet{LastFor: contract.InboxSubject(f.s.id.User)}, f.quit, func(seq uint64, _ *nats.Msg) bool {
		newest = seq
		return false
	})
	return newest, err
}

// readBatch delivers up to n of the device's messages stored at from or
// later. more reports that the stream holds further ones.
func (f *feed) readBatch(from uint64, n int) (more bool, err error) {
	req := directGet{Seq: from, NextFor: contract.InboxSubject(f.s.id.User), Batch: n, MaxBytes: catchUpBytes}
	return f.s.srv.stream.directBatch(req, f.quit, func(seq uint64, m *nats.Msg) bool {
		f.mu.Lock()
		stale, stopping := seq <= f.last, f.stopping
		f.mu.Unlock()
		if stopping {
			return false
		}
		if !stale {
			f.take(seq, m.Header, m.Data)
		}
		return true
	})
}

// nextFrom is where the device's next message is to be read from, for
// the backlog reader.
func (f *feed) nextFrom() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last + 1
}

// offer hands the device a message the backlog reader read for it, and
// reports whether the reader is done with this feed: it reached through,
// the device holds as many unacked as it may (it reads the rest later, as
// after any time it had too many unacked), or delivery stopped.
func (f *feed) offer(seq, through uint64, m *nats.Msg) bool {
	f.mu.Lock()
	stale, stopping := seq <= f.last, f.stopping
	full := !stale && len(f.unsettled) >= f.s.srv.maxInflight
	if full {
		f.fallBehindLocked()
	}
	f.mu.Unlock()
	switch {
	case stopping || full:
		return true
	case !stale:
		f.take(seq, m.Header, m.Data)
	}
	return seq >= through
}

// take hands the message stored at seq to the device. Anything that is
// not a well-formed chat message, receipt, or member's copy of a group
// message or change (with a group id, and for a change a JSON object as
// its body) (published by hand, say), or
// whose frame would not be valid UTF-8 (a body stored by an earlier
// version, which did not check), or a chat message whose body is not
// JSON, is skipped: the device's position moves
// past it, it is counted, and it stays in the stream for an operator to
// look at. A frame that is not UTF-8 would make a browser fail its
// connection without acking, and the message would come first again on
// every reconnect.
func (f *feed) take(seq uint64, h nats.Header, data []byte) {
	ts, _ := strconv.ParseInt(h.Get(contract.HdrTS), 10, 64)
	if ts == 0 {
		if t, err := time.Parse(time.RFC3339Nano, h.Get(contract.HdrStamp)); err == nil {
			ts = t.UnixMilli()
		}
	}
	from, dev, id := h.Get(contract.HdrFrom), h.Get(contract.HdrDevice), h.Get(contract.HdrID)
	var frame []byte
	var follow func() // after the frame: the group's log read on past it (groupfeed.go)
	p := pendingMsg{from: from}
	group := h.Get(contract.HdrGroup)
	if f.fromThisDevice(h) {
		f.pass(seq) // its own message, or its own read: the device has it
		return
	}
	kind := h.Get(contract.HdrKind)
	switch {
	case group != "" && !protocol.ValidID(group):
		// Malformed: skipped below.
	case kind == contract.KindMsg && group != "":
		frame = f.groupMsgFrame(seq, ts, id, from, dev, group, h, data)
		p.group, p.gid, p.gseq = true, group, groupSeq(h)
	case kind == contract.KindEvent && group != "":
		if isJSONObject(data) {
			frame = protocol.AppendGroupEvent(nil, id, from, dev, group, seq, ts, data)
		}
		p.group, p.gid, p.gseq = true, group, groupSeq(h)
		if at := h.Get(contract.HdrGroupLog); frame != nil && at != "" {
			var ok bool
			if follow, ok = f.beginLog(group, at); !ok {
				return
			}
		}
	case kind == contract.KindReceipt && group != "":
		id = "r"
		frame = groupReceiptFrame(h, group, from, dev, seq, ts)
		p = pendingMsg{receipt: true}
	case kind == contract.KindMsg && h.Get(contract.HdrTo) != "":
		frame, p = f.ownMsgFrame(seq, ts, id, from, dev, h, data)
	case kind == contract.KindReadSync:
		id = "s" // a marker names no message: a position
		frame, p = f.readSyncFrame(seq, ts, from, dev, h)
	case kind == contract.KindMsg:
		frame = protocol.AppendMsg(nil, id, from, dev, seq, ts, data, []byte(h.Get(contract.HdrMedia)))
		p.region, p.origin = f.s.srv.regions.origin(h)
	case kind == contract.KindReceipt:
		id = "r" // a receipt names no message: a range of them
		fromSeq, _ := strconv.ParseUint(h.Get(contract.HdrSeqFrom), 10, 64)
		toSeq, _ := strconv.ParseUint(h.Get(contract.HdrSeqTo), 10, 64)
		st := h.Get(contract.HdrStatus)
		if toSeq > 0 && fromSeq <= toSeq && (st == protocol.StatusRead || (st == protocol.StatusDelivered && fromSeq > 0)) {
			frame = protocol.AppendReceipt(nil, st, from, dev, fromSeq, toSeq, seq, ts)
		}
		p = pendingMsg{receipt: true}
	}
	switch {
	case frame == nil || !protocol.ValidID(from) || !(protocol.ValidID(dev) || (dev == "" && kind == contract.KindReceipt && group != "")) || !protocol.ValidID(id):
		// A group receipt a membership change made due has no device.
		f.skip(seq, skipMalformed)
		return
	case kind == contract.KindMsg && (!protocol.ValidJSON(data) || !validMedia(h.Get(contract.HdrMedia))):
		// Not stored through a gateway, which checks both: a frame the
		// client cannot decode is never acked, and would hold the device
		// back for good once max_inflight of them were out.
		f.skip(seq, skipMalformed)
		return
	case !utf8.Valid(frame):
		f.skip(seq, skipInvalidUTF8)
		return
	}
	f.mu.Lock()
	if f.stopping {
		// The backlog reader's offer saw the feed delivering, and it
		// stopped since: nothing goes out once it has (finished).
		f.mu.Unlock()
		return
	}
	f.last = seq
	if f.pending == nil {
		f.pending = make(map[uint64]pendingMsg)
	}
	f.pending[seq] = p
	f.unsettled = append(f.unsettled, seq)
	f.unacked++
	if !p.receipt {
		f.deliveries.note(time.Now(), f.s.srv.cfg.TickInterval)
	}
	due := f.dueReadsLocked()
	f.mu.Unlock()
	f.s.srv.metrics.delivered.Inc()
	f.s.t.Send(frame)
	if follow != nil {
		follow()
	}
	f.s.readsDue(due) // held until its message came again: after it
}

// deliverable reports whether a stored chat message or group copy (h, data)
// goes out as a frame, rather than being skipped by offer: from, device,
// id and group safe tokens, the body (and media reference) valid UTF-8,
// a message's body JSON and an event's a JSON object. A read of one
// skipped names a message the device never had, and ticks nothing.
func deliverable(h nats.Header, data []byte) bool {
	if !protocol.ValidID(h.Get(contract.HdrFrom)) || !protocol.ValidID(h.Get(contract.HdrDevice)) || !protocol.ValidID(h.Get(contract.HdrID)) ||
		!utf8.Valid(data) {
		return false
	}
	if g := h.Get(contract.HdrGroup); g != "" && !protocol.ValidID(g) {
		return false
	}
	switch h.Get(contract.HdrKind) {
	case contract.KindMsg: // its frame carries the media reference; an event's does not
		media := h.Get(contract.HdrMedia)
		return protocol.ValidJSON(data) && validMedia(media) && utf8.ValidString(media)
	case contract.KindEvent:
		return isJSONObject(data)
	}
	return false
}

// isJSONObject reports whether b is one JSON object (a group event as the
// groups function stores it), with nothing around it.
// validMedia reports whether a stored media reference can go into a
// frame: none, or a JSON object.
func validMedia(ref string) bool { return ref == "" || isJSONObject([]byte(ref)) }

func isJSONObject(b []byte) bool {
	return len(b) > 1 && b[0] == '{' && b[len(b)-1] == '}' && protocol.ValidJSON(b)
}

// Reasons a stored message is skipped, as counted.
const (
	skipMalformed   = "malformed"
	skipInvalidUTF8 = "invalid_utf8"
)

var skipReasons = []string{skipMalformed, skipInvalidUTF8}

// skip moves the device's position past the message stored at seq
// without delivering it. The cursor is saved as after an ack, so a crash
// does not bring it back either.
func (f *feed) skip(seq uint64, reason string) {
	f.s.log.Warn("skipping a message in the inbox", "seq", seq, "reason", reason)
	f.s.srv.metrics.skipped.WithLabelValues(reason).Inc()
	f.mu.Lock()
	f.last = seq
	if len(f.unsettled) == 0 {
		f.floor = seq
	}
	floor := f.floor
	// A read held for this message is refused: it was not delivered.
	held := slices.Contains(f.readWait, seq)
	if held {
		f.readWait = slices.DeleteFunc(f.readWait, func(s uint64) bool { return s == seq })
	}
	f.mu.Unlock()
	f.s.cursor.moved(floor)
	if held {
		f.s.refuseRead(seq)
	}
}

// acked marks seq acked by the device; false if nothing with this seq is
// delivered and unacked. It stays unsettled until the stretch it ends is
// settled (ackedStretch, settleThrough).
func (f *feed) acked(seq uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pending[seq]
	if !ok || p.acked {
		return false
	}
	p.acked = true
	f.pending[seq] = p
	f.unacked--
	if !p.receipt {
		f.acks.note(time.Now(), f.s.srv.cfg.TickInterval)
	}
	return true
}

// burstEnd is when the device's burst of messages is over, as of now,
// quiet being TickQuiet: once its acks have stopped for quiet, or twice
// their usual gap if longer (cadence); or, if it has acked everything it
// was given and has nothing on the way, once its deliveries have paused
// for streamPause (at most quiet), or four times their usual gap if
// longer. Its last acks come up to the Go SDK's 250 ms after its last
// message, so the second ends a burst sooner than quiet past them; a
// stream of a message every 200 ms, even at random, seldom pauses for
// 800 ms.
func (f *feed) burstEnd(now time.Time, quiet time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.acks.last.Add(f.acks.quiet(now, quiet, ackGaps))
	if f.unacked > 0 || f.running || f.wake || f.behind || len(f.liveQ) > 0 || f.deliveries.last.IsZero() {
		return end
	}
	pause := f.deliveries.quiet(now, min(quiet, streamPause), deliveryGaps)
	if e := f.deliveries.last.Add(pause); e.Before(end) {
		end = e
	}
	return end
}

// ackedStretch is the run of acked messages at the front of the unsettled
// ones: the delivered request for it (from just past the floor through its
// last one, naming the senders of the chat messages in it), and its last
// sequence; ok is false when the front is not acked.
func (f *feed) ackedStretch() (req contract.DeliveredRequest, through uint64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]bool{}
	for _, q := range f.unsettled {
		p := f.pending[q]
		if !p.acked {
			break
		}
		through, ok = q, true
		if !p.receipt && !p.group && !seen[p.from] {
			seen[p.from] = true
			req.Senders = append(req.Senders, p.from)
		}
		if p.origin > 0 {
			addOrigin(&req, p.from, p.region, p.origin)
		}
	}
	req.Reader, req.Device, req.From, req.To = f.s.id.User, f.s.id.Device, f.floor+1, through
	return req, through, ok
}

// settleThrough records that the device is done with everything up to
// through: acked, and for chat messages their senders' delivered ticks
// stored.
func (f *feed) settleThrough(through uint64) {
	f.mu.Lock()
	i := sort.Search(len(f.unsettled), func(i int) bool { return f.unsettled[i] > through })
	for _, q := range f.unsettled[:i] {
		delete(f.pending, q)
	}
	n := copy(f.unsettled, f.unsettled[i:])
	f.unsettled = f.unsettled[:n]
	floor := f.settledLocked()
	f.mu.Unlock()
	f.s.cursor.moved(floor)
}

// unsettledLen is how many messages the device holds unsettled.
func (f *feed) unsettledLen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.unsettled)
}

// lastSeq is the highest sequence handed to the device (or skipped).
func (f *feed) lastSeq() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// settledLocked moves the floor up to the oldest message still unsettled
// and, if the device had fallen behind and has settled half, asks for a
// read of the stream. It returns the floor.
//
// Lock should be held.
func (f *feed) settledLocked() uint64 {
	if len(f.unsettled) == 0 {
		f.floor = f.last
	} else {
		f.floor = f.unsettled[0] - 1
	}
	if f.behind && len(f.unsettled) <= f.s.srv.maxInflight/2 && !f.stopping {
		f.behind = false
		f.wake = true
		f.runLocked()
	}
	return f.floor
}

// directGet is a direct get request (nats-server's JSApiMsgGetRequest):
// a batch from Seq on NextFor, or the last message on LastFor.
type directGet struct {
	Seq       uint64   `json:"seq,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	LastFor   string   `json:"last_by_subj,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MaxBytes  int      `json:"max_bytes,omitempty"`
}

// streamReader reads INBOX (the Server, with direct gets; a fake in tests).
type streamReader interface {
	// directBatch sends a direct get and passes each message it answers,
	// with its sequence, to each until that returns false. more reports
	// that the stream holds further matching messages (batches only: a
	// get without Batch has one answer); quit ends the wait early.
	directBatch(req directGet, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (more bool, err error)
}

func (srv *Server) directBatch(req directGet, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (more bool, err error) {
	srv.metrics.inboxGets.Inc()
	return srv.directBatchOn(contract.Inbox, req, quit, each)
}

// directBatchOn is directBatch on the named stream.
func (srv *Server) directBatchOn(stream string, req directGet, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (more bool, err error) {
	_, more, err = srv.directGetOn(stream, req, quit, each)
	return more, err
}

// directGetOn is directBatchOn that also returns the answer that ended
// the batch (nil when each or quit ended it).
func (srv *Server) directGetOn(stream string, req directGet, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (end *nats.Msg, more bool, err error) {
	reply, answers, done := srv.replies.open(req.Batch + 1) // the messages and the end of batch
	defer done()
	body, _ := json.Marshal(req)
	if err := srv.nc.PublishRequest(contract.DirectGetSubject(stream), reply, body); err != nil {
		return nil, false, err
	}
	timeout := time.NewTimer(catchUpTimeout)
	defer timeout.Stop()
	// prev is the batch's answer before this one: each names it, so an
	// answer lost on the way (the replies subscription past its pending
	// limit drops one and goes on) is noticed, and the read fails rather
	// than hand on the one after it, past which the cursor would move.
	var prev uint64
	for {
		var m *nats.Msg
		select {
		case m = <-answers:
		case <-timeout.C:
			return nil, false, nats.ErrTimeout
		case <-quit:
			return nil, false, nil
		}
		seq, last, more, err := contract.DirectAnswer(m)
		if err == nil && req.Batch > 0 {
			err = contract.DirectBatchChain(m, prev)
		}
		if last || err != nil {
			return m, more, err
		}
		if !each(seq, m) || req.Batch == 0 {
			return nil, false, nil
		}
		prev = seq
	}
}
