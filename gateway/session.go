package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// pubKind says what a PubAck completes.
type pubKind uint8

const (
	pubSend pubKind = iota // a chat message: answer "sent"
)

// pubItem is a JetStream publish awaiting its PubAck, with what to do then.
type pubItem struct {
	fut  jetstream.PubAckFuture
	kind pubKind
	// For a send: the client id and accept time, answered with "sent".
	id string
	ts int64
	// For a read receipt: the sequence it was about, named in an error.
	seq uint64
	// For a delivered event or pubSettle: the message to settle once done.
	settle uint64
}

// session is one device's connection: it publishes the device's sends,
// delivers its inbox (feed.go), and turns its acks into receipts and cursor
// moves.
//
// Goroutines: the read loop calls handle. Delivery (feedRunner) and PubAck
// handling (pubRunner) each run in a goroutine started when there is work
// and ended when there is none, so an idle session holds only its read
// loop. handle must not block except on slots (backpressure on sends).
type session struct {
	srv  *Server
	id   Identity
	sid  string
	born int64 // start time, ns: of two sessions of one device the newer wins
	t    transport
	log  *slog.Logger

	sendLim     *rate.Limiter
	frameLim    *rate.Limiter
	typingLim   *rate.Limiter
	settingsLim *rate.Limiter
	strikes     int // rate-limited frames in a row; read loop only

	// mu guards the delivery state below.
	mu sync.Mutex
	// pending: delivered and not acked by the device, by sequence.
	pending map[uint64]pendingMsg
	// unsettled: delivered and not yet settled (acked, and the delivered
	// event stored), in order.
	unsettled []uint64
	last      uint64 // highest sequence delivered or skipped
	floor     uint64 // everything at or below it is settled
	saved     uint64 // the floor last written to the cursor
	behind    bool   // let live copies go: too many unacked
	ticking   bool   // ticker is running (ticks.go)
	stopping  bool   // delivery was stopped on purpose
	// cursorTimer is a cursor save waiting out CursorDelay.
	cursorTimer *time.Timer
	secondLook  *time.Timer // a second read after connecting, on a cluster
	// The feed: live copies waiting, whether a read of the stream is
	// asked for, and whether feedRunner is running (it starts only once
	// started, after the welcome).
	feedQ       []*nats.Msg
	feedWake    bool
	feedRunning bool
	started     bool
	quit        chan struct{} // closed when delivery stops

	// PubAcks awaited, in order, and whether pubRunner is running.
	pubMu      sync.Mutex
	pubs       []pubItem
	pubRunning bool
	pubClosed  bool
	slots      chan struct{} // one per item owed: MaxPendingSends at most
	owed       atomic.Int64  // items enqueued and not yet answered
	shutting   atomic.Bool
	// evMu orders the welcome before any event: welcomed is set in the
	// same critical section that queues the welcome (Send only enqueues).
	evMu     sync.Mutex
	welcomed bool

	// routed lists the subjects this session listens on through the
	// gateway's router.
	routed []string
	// The presence lease: leaseMu orders writes and the delete, so no
	// refresh lands after the delete. leaseRev is the revision last
	// written (0: none yet); leaseWanted is false before the welcome and
	// once a newer session holds the lease; leaseDone once deleted.
	leaseMu     sync.Mutex
	leaseRev    uint64
	leaseWanted bool
	leaseDone   bool
	presMu      sync.Mutex          // guards presSubs, presGen and presSent
	presSubs    map[string]struct{} // users followed (see presenceHub)
	// Presence frames go out newest first only: each update forwarded and
	// each answer asked for takes the next generation, and a frame older
	// than the last one sent about its user is dropped. An answer asked
	// for before an update, and arriving after it, is stale. presSent
	// also says whether that last frame was hidden: a hidden frame after
	// a hidden one is not sent (see sendPresence).
	presGen  uint64
	presSent map[string]presenceSent
	// calls bounds the worker-function requests in flight (goCall).
	calls  chan struct{}
	expiry *time.Timer

	loops sync.WaitGroup
	// delivering is closed when feedRunner has returned (or never ran):
	// from then on this session delivers nothing more.
	delivering     chan struct{}
	deliveringOnce sync.Once
	stopOnce       sync.Once
	stopped        chan struct{}
}

func newSession(srv *Server, id Identity, t transport) *session {
	cfg := &srv.cfg
	sid := nats.NewInbox()[len(nats.InboxPrefix):]
	return &session{
		born:        time.Now().UnixNano(),
		srv:         srv,
		id:          id,
		sid:         sid,
		t:           t,
		log:         srv.log.With("user", id.User, "device", id.Device, "session", sid),
		sendLim:     rate.NewLimiter(rate.Limit(cfg.SendRate), cfg.SendBurst),
		frameLim:    rate.NewLimiter(rate.Limit(cfg.FrameRate), cfg.FrameBurst),
		typingLim:   rate.NewLimiter(rate.Limit(cfg.TypingRate), cfg.TypingBurst),
		settingsLim: rate.NewLimiter(rate.Limit(cfg.SettingsRate), cfg.SettingsBurst),
		pending:     make(map[uint64]pendingMsg),
		quit:        make(chan struct{}),
		slots:       make(chan struct{}, cfg.MaxPendingSends),
		presSubs:    make(map[string]struct{}),
		presSent:    make(map[string]presenceSent),
		calls:       make(chan struct{}, maxFunctionCalls),
		delivering:  make(chan struct{}),
		stopped:     make(chan struct{}),
	}
}

// maxFunctionCalls bounds one connection's worker-function requests in
// flight (status, presence answers).
const maxFunctionCalls = 8

// kickMsg identifies a session on the kick subject: its start time and id.
func (s *session) kickMsg() []byte {
	return []byte(strconv.FormatInt(s.born, 10) + " " + s.sid)
}

// newerThan reports whether a session born at born with id sid started
// after s (ties broken by id), so that of two sessions of one device the
// newer one always wins.
func (s *session) newerThan(born int64, sid string) bool {
	return born > s.born || (born == s.born && sid > s.sid)
}

// start takes over the device (ending any older session of it), finds its
// position, greets the client and starts delivery.
//
// Taking over: the session asks on sb.kick.<user>.<device> and waits for
// the older session, on any gateway, to stop delivering before it reads the
// device's cursor. It then listens there itself and announces itself once more,
// so two sessions that started at the same instant (each asking before the
// other listened) still meet: the older of the two closes.
func (s *session) start(ctx context.Context) error {
	nc := s.srv.nc
	subj := contract.KickSubject(s.id.User, s.id.Device)
	reply, err := nc.Request(subj, s.kickMsg(), s.srv.cfg.KickTimeout)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
	case errors.Is(err, nats.ErrTimeout):
		// The older session's gateway did not answer: it crashed and
		// NATS has not noticed yet, or it is wedged. Waiting longer would
		// keep the device offline for minutes, so go on: whatever the old
		// session had not settled is past the cursor and comes again.
		s.log.Warn("older session did not answer the kick; taking over")
	case err != nil:
		return fmt.Errorf("gateway: kick: %w", err)
	case string(reply.Data) == kickRefused:
		return errors.New("gateway: a newer session of this device is connected")
	}
	if err := s.listen(subj, func(m *nats.Msg) { go s.onKick(m) }); err != nil {
		return err
	}
	if err := nc.Publish(subj, s.kickMsg()); err != nil {
		return err
	}

	pos, err := s.srv.devices.position(ctx, s.id.User, s.id.Device)
	if err != nil {
		return err
	}
	s.last, s.floor, s.saved = pos, pos, pos
	// Events and live copies are subscribed, and the server has the
	// subscriptions, before the welcome and before the first read of the
	// stream: a client that has its welcome gets every later event, and
	// every message is either read or arrives live. None is forwarded
	// before the welcome, which must be the first frame.
	if err := s.listen(contract.EventSubject(s.id.User), s.onEvent); err != nil {
		return err
	}
	if err := s.listen(contract.LiveSubject(s.id.User), s.onLiveCopy); err != nil {
		return err
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return err
	}
	s.evMu.Lock()
	s.t.Send(protocol.EncodeWelcome(s.id.User, s.id.Device, s.sid, s.srv.cfg.MaxFrameBytes))
	s.welcomed = true
	s.evMu.Unlock()
	s.goOnline(ctx)

	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		s.doneDelivering()
		return nil
	}
	// The first read of the stream, from the device's position.
	s.started, s.feedWake = true, true
	s.startFeedLocked()
	s.mu.Unlock()
	if s.srv.inbox.CachedInfo().Config.Replicas > 1 {
		// On a cluster that read may be answered by a replica a few
		// milliseconds behind, and a message stored just before this
		// session subscribed would then wait for the sweep. Look once
		// more, when any replica has it.
		s.secondLook = time.AfterFunc(secondLookDelay, s.wake)
	}

	if d := time.Until(s.id.Expires); d > 0 {
		s.expiry = time.AfterFunc(d, func() { s.t.Close(protocol.ClosePolicy, protocol.ReasonTokenExpired) })
	} else {
		s.t.Close(protocol.ClosePolicy, protocol.ReasonTokenExpired)
	}
	return nil
}

// kickRefused answers a kick from a session older than the one asked.
const kickRefused = "refused"

// onKick runs when another session of the same device announces itself.
// The older of the two closes: if that is this one, it stops delivering at
// once, closes, waits until it has stopped, then answers.
func (s *session) onKick(m *nats.Msg) {
	bornStr, sid, ok := strings.Cut(string(m.Data), " ")
	born, err := strconv.ParseInt(bornStr, 10, 64)
	if !ok || err != nil || sid == s.sid {
		return
	}
	select {
	case <-s.stopped:
		// Gone already (a drained kick): never stand in a live one's way.
		if m.Reply != "" {
			_ = m.Respond(nil)
		}
		return
	default:
	}
	if !s.newerThan(born, sid) {
		// The other one is older: it must close, not this one.
		if m.Reply != "" {
			_ = m.Respond([]byte(kickRefused))
		} else {
			_ = s.srv.nc.Publish(m.Subject, s.kickMsg())
		}
		return
	}
	s.stopDelivery()
	s.t.Close(protocol.CloseReplaced, "replaced")
	select {
	case <-s.delivering:
	case <-time.After(s.srv.cfg.KickTimeout / 2): // answer well within the asker's wait
	}
	if m.Reply != "" {
		_ = m.Respond(nil)
	}
}

// stop ends delivery, lets in-flight PubAcks finish (bounded) and saves the
// device's cursor. Messages delivered but not settled stay in JetStream
// past the cursor; the next session delivers them again.
func (s *session) stop() {
	s.stopOnce.Do(func() {
		if s.expiry != nil {
			s.expiry.Stop()
		}
		if s.secondLook != nil {
			s.secondLook.Stop()
		}
		s.stopDelivery()
		s.pubMu.Lock()
		s.pubClosed = true
		s.pubMu.Unlock()
		s.loops.Wait()
		s.doneDelivering() // if delivery never started
		close(s.stopped)
		// Unrouted last: a kick that arrives after this is answered empty
		// by the router, at once, as this stopped session would.
		for _, subj := range s.routed {
			s.srv.router.remove(subj, s)
		}
		s.finalCursor()
		s.dropPresenceSubs()
		s.goOffline()
	})
}

// beginShutdown is the graceful path: refuse new sends, stop delivering,
// wait for stored sends to be answered, then close with 1012.
func (s *session) beginShutdown(ctx context.Context) {
	s.shutting.Store(true)
	s.stopDelivery()
	for s.owed.Load() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-s.t.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	s.t.Close(protocol.CloseServiceRestart, "gateway shutting down")
}

func (s *session) doneDelivering() { s.deliveringOnce.Do(func() { close(s.delivering) }) }

func (s *session) stopDelivery() {
	s.mu.Lock()
	if !s.stopping {
		s.stopping = true
		close(s.quit)
	}
	running := s.feedRunning
	s.mu.Unlock()
	if !running {
		s.doneDelivering()
	}
}

// listen routes subject's messages to fn through the gateway's router
// until the session stops.
func (s *session) listen(subject string, fn func(*nats.Msg)) error {
	if err := s.srv.router.add(subject, s, fn); err != nil {
		return err
	}
	s.routed = append(s.routed, subject)
	return nil
}

// finalCursor saves the device's floor and waits for it to be stored, so
// the next session, on any gateway, starts right after it.
func (s *session) finalCursor() {
	s.mu.Lock()
	floor, saved := s.floor, s.saved
	if s.cursorTimer != nil {
		s.cursorTimer.Stop()
		s.cursorTimer = nil
	}
	s.mu.Unlock()
	if floor <= saved {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.srv.js.PublishMsg(ctx, s.srv.devices.cursorMsg(s.id.User, s.id.Device, floor)); err != nil {
		s.log.Debug("saving the cursor failed", "err", err)
	}
}

// pubRunner completes the queued PubAck items in order, saves the
// device's cursor once the queue is empty, and ends.
func (s *session) pubRunner() {
	defer s.loops.Done()
	for {
		s.pubMu.Lock()
		if len(s.pubs) == 0 {
			s.pubs = nil
			s.pubMu.Unlock()
			// Caught up: save the cursor (after CursorDelay).
			s.scheduleCursor()
			s.pubMu.Lock()
			if len(s.pubs) == 0 {
				s.pubRunning = false
				s.pubMu.Unlock()
				return
			}
			s.pubMu.Unlock()
			continue
		}
		it := s.pubs[0]
		s.pubs[0] = pubItem{}
		s.pubs = s.pubs[1:]
		s.pubMu.Unlock()
		s.handlePub(it)
		<-s.slots
		s.owed.Add(-1)
	}
}

// handlePub completes one PubAck item, in the order they were enqueued.
func (s *session) handlePub(it pubItem) {
	var ack *jetstream.PubAck
	var err error
	select {
	case ack = <-it.fut.Ok():
	case err = <-it.fut.Err():
	}
	if err != nil {
		s.log.Warn("store failed", "err", err)
		s.sendError(protocol.ErrStoreFailed, "message was not stored; resend with the same id", it.id, 0, 0)
		return
	}
	s.srv.metrics.stored.Inc()
	s.t.Send(protocol.AppendSent(nil, it.id, ack.Sequence, it.ts, ack.Duplicate))
}

// handle processes one client frame. It runs on the read loop.
func (s *session) handle(data []byte) {
	f, err := protocol.DecodeClient(data)
	if err != nil {
		var de *protocol.DecodeError
		if errors.As(err, &de) && s.allow(s.frameLim, de.ID) {
			s.sendError(de.Code, de.Reason, de.ID, 0, 0)
		}
		return
	}
	s.srv.metrics.frameIn[f.Type].Inc() // DecodeClient returns only these types
	switch f.Type {
	case protocol.TypeSend:
		if s.allow(s.sendLim, f.ID) {
			s.send(f)
		}
	case protocol.TypeAck:
		if s.allow(s.frameLim, "") {
			s.ack(f.Seq)
		}
	case protocol.TypeRead:
		if s.allow(s.frameLim, "") {
			s.read(f.Seq)
		}
	case protocol.TypeStatus:
		if s.allow(s.frameLim, "") {
			s.status(f.Seq)
		}
	case protocol.TypeSettings:
		// Its own bucket: a settings frame can be a KV write of up to a
		// frame's size.
		if s.allow(s.settingsLim, "") {
			s.settings(f)
		}
	case protocol.TypePresenceSub:
		if s.allow(s.frameLim, "") {
			s.presenceSub(f.Users)
		}
	case protocol.TypePresenceUnsub:
		if s.allow(s.frameLim, "") {
			s.presenceUnsub(f.Users)
		}
	case protocol.TypeTyping:
		if s.allow(s.typingLim, "") && f.To != s.id.User {
			// Core NATS only: a typing signal is worth nothing later, so
			// it is never stored.
			_ = s.srv.nc.Publish(contract.EventSubject(f.To), protocol.AppendTyping(nil, s.id.User, s.id.Device))
		}
	}
}

// onEvent forwards an ephemeral event to the device. Only gateways publish
// on sb.ev.*, and they publish complete frames.
func (s *session) onEvent(m *nats.Msg) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if s.welcomed {
		s.t.Send(m.Data)
	}
}

// allow applies a rate limit. An over-limit frame gets rate_limited; too
// many in a row close the connection with 1008 "flood".
func (s *session) allow(l *rate.Limiter, id string) bool {
	r := l.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		s.strikes++
		if s.strikes >= s.srv.cfg.FloodStrikes {
			s.t.Close(protocol.ClosePolicy, protocol.ReasonFlood)
			return false
		}
		s.sendError(protocol.ErrRateLimited, "too many frames", id, 0, d.Milliseconds()+1)
		return false
	}
	s.strikes = 0
	return true
}

// enqueue queues a PubAck item, waiting for a slot while MaxPendingSends
// are owed: the read loop then stops reading from this socket.
func (s *session) enqueue(it pubItem) {
	select {
	case s.slots <- struct{}{}:
	case <-s.t.Done():
		return
	}
	s.owed.Add(1)
	s.pubMu.Lock()
	if s.pubClosed {
		s.pubMu.Unlock()
		<-s.slots
		s.owed.Add(-1)
		return
	}
	s.pubs = append(s.pubs, it)
	if !s.pubRunning {
		s.pubRunning = true
		s.loops.Add(1)
		go s.pubRunner()
	}
	s.pubMu.Unlock()
}

func (s *session) send(f *protocol.Frame) {
	if s.shutting.Load() {
		s.sendError(protocol.ErrShuttingDown, "gateway is shutting down", f.ID, 0, 0)
		return
	}
	var mediaRef []byte
	if f.Media != nil {
		if mediaRef = s.grantMedia(f); mediaRef == nil {
			return
		}
	}
	ts := time.Now().UnixMilli()
	m := &nats.Msg{
		Subject: contract.InboxSubject(f.To),
		Header: nats.Header{
			contract.HdrMsgID:  {contract.MsgDedupID(s.id.User, f.ID)},
			contract.HdrKind:   {contract.KindMsg},
			contract.HdrFrom:   {s.id.User},
			contract.HdrDevice: {s.id.Device},
			contract.HdrID:     {f.ID},
			contract.HdrTS:     {strconv.FormatInt(ts, 10)},
		},
		Data: f.Body,
	}
	if mediaRef != nil {
		m.Header.Set(contract.HdrMedia, string(mediaRef))
	}
	fut, err := s.srv.js.PublishMsgAsync(m)
	if err != nil {
		s.log.Warn("publish failed", "err", err)
		s.sendError(protocol.ErrStoreFailed, "message was not stored; resend with the same id", f.ID, 0, 0)
		return
	}
	s.enqueue(pubItem{fut: fut, kind: pubSend, id: f.ID, ts: ts})
}

// ack records that the device has the message or receipt at seq. It is
// settled once the device has acked everything before it too, and, for a
// chat message, its sender's delivered tick is stored (ticks.go).
func (s *session) ack(seq uint64) {
	s.mu.Lock()
	p, ok := s.pending[seq]
	again := ok && p.acked
	if ok && !again {
		p.acked = true
		s.pending[seq] = p
	}
	s.mu.Unlock()
	if !ok || again {
		s.sendError(protocol.ErrUnknownSeq, "nothing delivered and unacked with this seq", "", seq, 0)
		return
	}
	s.flushTicks()
}

// read tells the sender of the message stored at seq, and the user's
// conversation with them, that the user read it and everything before it.
// The message is looked up, off the read loop, so a device can only mark
// messages sent to its own user that it was given, and the receipt goes
// to their real sender.
func (s *session) read(seq uint64) {
	s.mu.Lock()
	given := seq <= s.last
	s.mu.Unlock()
	if !given {
		s.sendError(protocol.ErrUnknownSeq, "no message with this seq was delivered to this device", "", seq, 0)
		return
	}
	ok := s.goCall(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		defer cancel()
		rm, err := s.srv.inbox.GetMsg(ctx, seq)
		if err != nil || rm.Subject != contract.InboxSubject(s.id.User) || rm.Header.Get(contract.HdrKind) != contract.KindMsg {
			s.sendError(protocol.ErrUnknownSeq, "no message to you with this seq", "", seq, 0)
			return
		}
		err = contract.Call(ctx, s.srv.nc, contract.ReadSubject, contract.ReadRequest{
			Reader: s.id.User, Device: s.id.Device, Sender: rm.Header.Get(contract.HdrFrom), Seq: seq}, nil)
		if err != nil {
			s.sendError(protocol.ErrUnavailable, "read receipt not taken; resend", "", seq, 0)
		}
	})
	if !ok {
		s.sendError(protocol.ErrRateLimited, "too many requests in flight", "", seq, 100)
	}
}

// sendError answers a frame with an error frame and counts it.
func (s *session) sendError(code protocol.ErrorCode, message, id string, seq uint64, retryMS int64) {
	s.srv.metrics.errors.WithLabelValues(string(code)).Inc()
	s.t.Send(protocol.EncodeError(code, message, id, seq, retryMS))
}
