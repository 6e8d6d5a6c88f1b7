package gateway

import (
	"encoding/json"
	"errors"
	"sort"
	"strconv"
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
// device's cursor moved past it) before the device acked it, and for a chat
// message before its delivered event was stored.
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
	acked   bool   // the device acked it; settled with its tick
	from    string // for a chat message: its sender and id, for the
	id      string // delivered event
}

// onLiveCopy queues a live copy for the feed. It runs on the router's
// goroutine and does not block: past liveBuffer copies waiting, it lets
// them go and asks for a read of the stream instead.
func (s *session) onLiveCopy(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return
	}
	if len(s.feedQ) >= liveBuffer {
		if !s.feedWake {
			s.srv.metrics.catchUps.WithLabelValues(reasonOverflow).Inc()
		}
		s.feedWake = true
	} else {
		s.feedQ = append(s.feedQ, m)
	}
	s.startFeedLocked()
}

// wake asks the feed to read the stream from the device's position.
func (s *session) wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopping {
		s.feedWake = true
		s.startFeedLocked()
	}
}

// startFeedLocked starts feedRunner if there is work, the session is
// started and it is not running. s.mu is held.
func (s *session) startFeedLocked() {
	if s.feedRunning || !s.started || s.stopping || (len(s.feedQ) == 0 && !s.feedWake) {
		return
	}
	s.feedRunning = true
	s.loops.Add(1)
	go s.feedRunner()
}

// feedRunner delivers the device's messages in stream order: a read of
// the stream when asked, then the live copies in turn. It ends when there
// is nothing to do, or delivery stops.
func (s *session) feedRunner() {
	defer s.loops.Done()
	for {
		s.mu.Lock()
		if s.stopping || (len(s.feedQ) == 0 && !s.feedWake) {
			s.feedRunning = false
			s.feedQ = nil
			stopping := s.stopping
			s.mu.Unlock()
			if stopping {
				s.doneDelivering()
			}
			return
		}
		if s.feedWake {
			s.feedWake = false
			s.mu.Unlock()
			s.catchUp(0)
			continue
		}
		m := s.feedQ[0]
		s.feedQ[0] = nil
		s.feedQ = s.feedQ[1:]
		s.mu.Unlock()
		s.onLive(m)
	}
}

func (s *session) onLive(m *nats.Msg) {
	seq, err := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
	if err != nil {
		return
	}
	prev, _ := strconv.ParseUint(m.Header.Get(contract.HdrLastSeq), 10, 64)
	s.mu.Lock()
	last := s.last
	if seq > last && len(s.unsettled) >= s.srv.maxInflight {
		s.behind = true
	}
	behind := s.behind
	s.mu.Unlock()
	switch {
	case seq <= last || behind:
		// Had it already, or will read it from the stream once the
		// device has acked enough.
	case prev > last:
		// A message before this one was missed: read both from the stream.
		s.srv.metrics.catchUps.WithLabelValues(reasonGap).Inc()
		s.catchUp(seq)
	default:
		s.take(seq, m.Header, m.Data)
	}
}

// catchUp reads the device's inbox from its position and delivers what it
// finds, until nothing is left, the device has as many unacked as it may,
// or the session stops. through, when not zero, is a sequence known to be
// stored (from a live copy): a replica that answers from behind it is
// asked again.
//
// Without one, it first asks for the newest message in the inbox, which
// the server finds from its per-subject index: usually there is nothing
// new (a sweep, a reconnect), and reading on from the device's position
// would have the server load the block that position is in, however old.
func (s *session) catchUp(through uint64) {
	if through == 0 {
		newest, err := s.newestStored()
		if err == nil {
			s.mu.Lock()
			had := s.last
			s.mu.Unlock()
			if newest <= had {
				return
			}
			through = newest
		}
		// On an error the read below tries, and retries, itself.
	}
	backlog := s.srv.backlog
	backlog.reading.Add(1)
	defer backlog.reading.Add(-1)
	if through > 0 && backlog.read(s, through) {
		return
	}
	var failingSince, lagging time.Time
	backoff := 50 * time.Millisecond
	for {
		s.mu.Lock()
		from, room, stopping := s.last+1, s.srv.maxInflight-len(s.unsettled), s.stopping
		if room <= 0 {
			s.behind = true
		}
		s.mu.Unlock()
		if stopping || room <= 0 {
			return
		}
		more, err := s.readBatch(from, min(room, catchUpBatch))
		switch {
		case err != nil:
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > catchUpGiveUp {
				s.log.Warn("cannot read the inbox; restarting the session", "err", err)
				s.t.Close(protocol.CloseServiceRestart, "inbox unavailable")
				return
			}
		case more:
			failingSince, backoff = time.Time{}, 50*time.Millisecond
			continue
		default:
			s.mu.Lock()
			done := s.last >= through
			s.mu.Unlock()
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
		case <-s.quit:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// directGet is a direct get request (nats-server's JSApiMsgGetRequest):
// a batch from Seq on NextFor, or the last message on LastFor.
type directGet struct {
	Seq      uint64 `json:"seq,omitempty"`
	NextFor  string `json:"next_by_subj,omitempty"`
	LastFor  string `json:"last_by_subj,omitempty"`
	Batch    int    `json:"batch,omitempty"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

// newestStored returns the sequence of the newest message in the device's
// inbox, 0 if it is empty.
func (s *session) newestStored() (newest uint64, err error) {
	_, err = s.srv.directBatch(directGet{LastFor: contract.InboxSubject(s.id.User)}, s.quit, func(seq uint64, _ *nats.Msg) bool {
		newest = seq
		return false
	})
	return newest, err
}

// readBatch delivers up to n of the device's messages stored at from or
// later. more reports that the stream holds further ones.
func (s *session) readBatch(from uint64, n int) (more bool, err error) {
	req := directGet{Seq: from, NextFor: contract.InboxSubject(s.id.User), Batch: n, MaxBytes: catchUpBytes}
	return s.srv.directBatch(req, s.quit, func(seq uint64, m *nats.Msg) bool {
		s.mu.Lock()
		stale, stopping := seq <= s.last, s.stopping
		s.mu.Unlock()
		if stopping {
			return false
		}
		if !stale {
			s.take(seq, m.Header, m.Data)
		}
		return true
	})
}

// directBatch sends a direct get to INBOX and passes each message it
// answers, with its sequence, to each until that returns false. more
// reports that the stream holds further matching messages (batches only:
// a get without Batch has one answer); quit ends the wait early.
func (srv *Server) directBatch(req directGet, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (more bool, err error) {
	reply, answers, done := srv.gets.open(req.Batch + 1) // the messages and the end of batch
	defer done()
	body, _ := json.Marshal(req)
	if err := srv.nc.PublishRequest(contract.DirectGetSubject(contract.Inbox), reply, body); err != nil {
		return false, err
	}
	srv.metrics.inboxGets.Inc()
	timeout := time.NewTimer(catchUpTimeout)
	defer timeout.Stop()
	for {
		var m *nats.Msg
		select {
		case m = <-answers:
		case <-timeout.C:
			return false, nats.ErrTimeout
		case <-quit:
			return false, nil
		}
		switch m.Header.Get("Status") {
		case "":
		case "404": // nothing stored at or after from
			return false, nil
		case "204": // end of batch
			np, _ := strconv.ParseUint(m.Header.Get(contract.HdrNumPend), 10, 64)
			return np > 0, nil
		case "503":
			return false, nats.ErrNoResponders
		default:
			return false, errors.New("direct get: " + m.Header.Get("Status") + " " + m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
		if err != nil {
			return false, errors.New("direct get: answer without a sequence")
		}
		if !each(seq, m) || req.Batch == 0 {
			return false, nil
		}
	}
}

// take hands the message stored at seq to the device. Anything that is
// not a well-formed chat message or receipt (published by hand, say), or
// whose frame would not be valid UTF-8 (a body stored by an earlier
// version, which did not check), is skipped: the device's position moves
// past it, it is counted, and it stays in the stream for an operator to
// look at. A frame that is not UTF-8 would make a browser fail its
// connection without acking, and the message would come first again on
// every reconnect.
func (s *session) take(seq uint64, h nats.Header, data []byte) {
	ts, _ := strconv.ParseInt(h.Get(contract.HdrTS), 10, 64)
	if ts == 0 {
		if t, err := time.Parse(time.RFC3339Nano, h.Get(contract.HdrStamp)); err == nil {
			ts = t.UnixMilli()
		}
	}
	from, dev, id := h.Get(contract.HdrFrom), h.Get(contract.HdrDevice), h.Get(contract.HdrID)
	var frame []byte
	p := pendingMsg{from: from, id: id}
	switch h.Get(contract.HdrKind) {
	case contract.KindMsg:
		frame = protocol.AppendMsg(nil, id, from, dev, seq, ts, data, []byte(h.Get(contract.HdrMedia)))
	case contract.KindReceipt:
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
	case frame == nil || !protocol.ValidID(from) || !protocol.ValidID(dev) || !protocol.ValidID(id):
		s.skip(seq, skipMalformed)
		return
	case !utf8.Valid(frame):
		s.skip(seq, skipInvalidUTF8)
		return
	}
	s.mu.Lock()
	s.last = seq
	s.pending[seq] = p
	s.unsettled = append(s.unsettled, seq)
	s.mu.Unlock()
	s.srv.metrics.delivered.Inc()
	s.t.Send(frame)
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
func (s *session) skip(seq uint64, reason string) {
	s.log.Warn("skipping a message in the inbox", "seq", seq, "reason", reason)
	s.srv.metrics.skipped.WithLabelValues(reason).Inc()
	s.mu.Lock()
	s.last = seq
	if len(s.unsettled) == 0 {
		s.floor = seq
	}
	s.mu.Unlock()
	s.scheduleCursor()
}

// settleThrough records that the device is done with everything up to
// seq: it acked it and, for chat messages, their senders' delivered ticks
// are stored. The device's floor moves up to the oldest message still
// unsettled. s.mu is held.
func (s *session) settleThroughLocked(seq uint64) {
	i := sort.Search(len(s.unsettled), func(i int) bool { return s.unsettled[i] > seq })
	for _, q := range s.unsettled[:i] {
		delete(s.pending, q)
	}
	s.unsettled = append(s.unsettled[:0], s.unsettled[i:]...)
	if len(s.unsettled) == 0 {
		s.floor = s.last
	} else {
		s.floor = s.unsettled[0] - 1
	}
	if s.behind && len(s.unsettled) <= s.srv.maxInflight/2 && !s.stopping {
		s.behind = false
		s.feedWake = true
		s.startFeedLocked()
	}
}

// scheduleCursor saves the cursor once CursorDelay has passed, unless a
// save is already waiting: a device acking steadily then costs one cursor
// write per CursorDelay, not one per message.
func (s *session) scheduleCursor() {
	s.mu.Lock()
	wait := !s.stopping && s.cursorTimer == nil && s.floor > s.saved
	now := wait && s.srv.cfg.CursorDelay == 0
	if wait && !now {
		s.cursorTimer = time.AfterFunc(s.srv.cfg.CursorDelay, func() {
			s.mu.Lock()
			s.cursorTimer = nil
			s.mu.Unlock()
			s.saveCursor()
		})
	}
	s.mu.Unlock()
	if now {
		s.saveCursor()
	}
}

// saveCursor publishes the device's floor if it moved since the last save.
// It does not wait: a cursor that lags only means a few messages come
// again on the next connect, and the SDK drops repeats by id.
func (s *session) saveCursor() {
	s.mu.Lock()
	floor := s.floor
	changed := floor > s.saved
	if changed {
		s.saved = floor
	}
	s.mu.Unlock()
	if changed {
		if _, err := s.srv.js.PublishMsgAsync(s.srv.devices.cursorMsg(s.id.User, s.id.Device, floor)); err != nil {
			s.log.Debug("saving the cursor failed", "err", err)
		}
	}
}
