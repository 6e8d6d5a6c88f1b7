package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// session is one device's connection. It keeps the device's identity and
// its frame handling; the machinery is in parts of its own, each owning
// its state behind its methods and taking only its own lock:
//
//   - inbound: the rate limits (read loop only, no lock);
//   - feed: delivery to the device, and what it holds unacked (feed.go);
//   - cursor: the device's position in CURSORS (cursor.go);
//   - ticks: the delivered ticks of what the device acked (ticks.go);
//   - pubs: its writes to JetStream awaiting their PubAcks (pubqueue.go);
//   - lease: its presence lease (lease.go);
//   - follows: the users it follows and the presence frames it got
//     (follows.go);
//   - groups: the groups it reads from their logs, its place in each
//     (groupfeed.go);
//   - timer: its one timer, for the token's expiry, the second look, the
//     cursor delay and overdue PubAcks (timer.go).
//
// Goroutines: the read loop calls handle. The feed's runner runs while
// there is something to deliver, the ticker's while something acked
// awaits its ticks. PubAcks and lease answers arrive on the gateway's
// replies goroutine (onReply), live copies, events, kicks and presence
// changes on its router's; requests to worker functions (reads, status,
// presence) run on goroutines of their own, a few at most (goCall). So an
// idle session holds only its read loop. handle does not block except on a slot of the
// PubAck queue (backpressure on sends) and on a settings frame's write.
type session struct {
	srv   *Server
	id    Identity
	sid   string
	born  int64 // start time, ns: of two sessions of one device the newer wins
	t     transport
	log   *slog.Logger
	owner uint64 // names this session in reply subjects (replies)

	in      inbound
	feed    feed
	cursor  cursorSaver
	ticks   ticker
	pubs    pubQueue
	lease   lease
	follows follows
	groups  groupFeeds // the groups it reads from their logs (groupfeed.go)
	timer   sessionTimer

	// calls bounds the worker-function requests in flight (goCall).
	calls chan struct{}
	// evMu orders the welcome before any event: welcomed is set in the
	// same critical section that queues the welcome (Send only enqueues).
	evMu     sync.Mutex
	welcomed bool

	// routed lists the subjects this session listens on through the
	// gateway's router (start and stop only).
	routed   []string
	shutting atomic.Bool
	// otherDevice is set once a check found this user has another
	// device that is to get a message: devices are only ever added, so
	// every later send is copied without asking; alone is the DEVICES
	// sequence as of which a check found no other device at all
	// (owncheck.go).
	otherDevice atomic.Bool
	alone       atomic.Uint64
	stopOnce    sync.Once
	stopped     chan struct{}
	// saved is closed once settle has stored the device's cursor: a
	// newer session of the device, answered then, starts right after it.
	saved      chan struct{}
	settleOnce sync.Once
}

// inbound is what the read loop keeps about the frames it reads: the rate
// limits. Only the read loop counts strikes, so it has no lock; the
// buckets (rate.Limiter has its own) pass to the device's next session
// (ratekeep.go).
type inbound struct {
	*limits     // shared by the device's sessions on this gateway (ratekeep.go)
	strikes int // rate-limited frames in a row
}

func newSession(srv *Server, id Identity, t transport) *session {
	cfg := &srv.cfg
	sid := nats.NewInbox()[len(nats.InboxPrefix):]
	s := &session{
		born:    time.Now().UnixNano(),
		srv:     srv,
		id:      id,
		sid:     sid,
		t:       t,
		log:     srv.log.With("user", id.User, "device", id.Device, "session", sid),
		in:      inbound{limits: srv.limits.take(id, time.Now())},
		calls:   make(chan struct{}, maxFunctionCalls),
		stopped: make(chan struct{}),
		saved:   make(chan struct{}),
	}
	s.feed.init(s)
	s.cursor.s = s
	s.ticks.init(s)
	s.pubs.init(s, cfg.MaxPendingSends, cfg.PubAckWait)
	s.lease.s = s
	s.follows.s = s
	s.groups.init(s)
	s.timer.owner = s
	return s
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
	s.owner = s.srv.replies.register(s)
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
	// An older session on this gateway has left its buckets by now.
	if l := s.srv.limits.takeKept(s.id, time.Now()); l != nil {
		s.in.limits = l
	}
	if err := s.listen(routeKick, subj); err != nil {
		return err
	}
	if err := nc.Publish(subj, s.kickMsg()); err != nil {
		return err
	}

	pos, err := s.srv.devices.position(ctx, s.id.User, s.id.Device, s.groups.joining)
	if err != nil {
		return err
	}
	if err := s.groups.load(ctx); err != nil {
		return fmt.Errorf("gateway: the device's places in group logs: %w", err)
	}
	s.feed.begin(pos)
	s.cursor.init(pos)
	// Events and live copies are subscribed, and the server has the
	// subscriptions, before the welcome and before the first read of the
	// stream: a client that has its welcome gets every later event, and
	// every message is either read or arrives live. None is forwarded
	// before the welcome, which must be the first frame.
	if err := s.listen(routeEvents, contract.EventSubject(s.id.User)); err != nil {
		return err
	}
	if err := s.listen(routeLive, contract.LiveSubject(s.id.User)); err != nil {
		return err
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return err
	}
	s.evMu.Lock()
	s.t.Send(protocol.EncodeWelcome(s.id.User, s.id.Device, s.sid, s.srv.cfg.MaxFrameBytes))
	s.welcomed = true
	s.evMu.Unlock()
	s.lease.goOnline()

	// The groups read from their logs first: a copy in the inbox that
	// starts another rewrites the record, which must then hold them.
	s.groups.start()
	// The first read of the stream, from the device's position.
	if !s.feed.start() {
		return nil
	}
	if s.srv.inbox.CachedInfo().Config.Replicas > 1 {
		// On a cluster that read may be answered by a replica a few
		// milliseconds behind, and a message stored just before this
		// session subscribed would then wait for the sweep. Look once
		// more, when any replica has it.
		s.timer.set(opSecondLook, time.Now().Add(secondLookDelay))
	}
	if time.Until(s.id.Expires) > 0 {
		s.timer.set(opExpire, s.id.Expires)
	} else {
		s.t.Close(protocol.ClosePolicy, protocol.ReasonTokenExpired)
	}
	return nil
}

// onTimer runs an op of the session's timer that is due.
func (s *session) onTimer(op timerOp) {
	switch op {
	case opExpire:
		s.t.Close(protocol.ClosePolicy, protocol.ReasonTokenExpired)
	case opSecondLook:
		s.feed.wakeUp()
	case opCursor:
		s.cursor.due()
	case opPubs:
		s.pubs.onTimer()
	}
}

// onReply takes the answer to one of this session's requests (replies).
func (s *session) onReply(token string, m *nats.Msg) {
	kind, n, a, ok := parseToken(token)
	switch {
	case !ok:
	case kind == replyPub:
		s.pubs.onReply(n, a, m)
	case kind == replyLease:
		s.lease.onReply(n, m)
	}
}

// The kinds of a session's requests, in their reply tokens.
const (
	replyPub   = 'q' // a send of the PubAck queue
	replyLease = 'l' // a lease write
)

// kickRefused answers a kick from a session older than the one asked.
const kickRefused = "refused"

// onKick runs when another session of the same device announces itself.
// The older of the two closes: if that is this one, it stops delivering at
// once, closes, waits until it has stopped and stored the device's cursor,
// then answers.
func (s *session) onKick(m *nats.Msg) {
	bornStr, sid, ok := strings.Cut(string(m.Data), " ")
	born, err := strconv.ParseInt(bornStr, 10, 64)
	if !ok || err != nil || sid == s.sid {
		return
	}
	select {
	case <-s.stopped:
		// Stopped (its connection ended), perhaps still settling what the
		// device acked: answered once the cursor is stored, as a live one
		// is, so the newer session reads that cursor; never standing in
		// its way longer.
		select {
		case <-s.saved:
		case <-time.After(s.srv.cfg.KickTimeout / 2):
		}
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
	s.feed.stop()
	s.groups.stop()
	s.t.Close(protocol.CloseReplaced, "replaced")
	// The newer session takes this one's buckets once answered, not
	// fresh ones (ratekeep.go).
	s.srv.limits.give(s.id, s.in.limits, time.Now())
	// Answered once this session has stopped delivering, settled what the
	// device acked and stored its cursor, so the newer one reads that
	// cursor and delivers nothing settled again. Settled here, not left to
	// stop, which comes after the socket's writer ends: on a connection
	// the device left for another network, a write can hang for
	// WriteTimeout.
	go func() {
		<-s.feed.finished()
		s.settle()
	}()
	select {
	case <-s.saved:
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
		s.srv.limits.give(s.id, s.in.limits, time.Now())
		s.feed.stop()
		s.groups.stop()
		drained := s.pubs.close()
		wait := time.NewTimer(pubStopWait)
		select {
		case <-drained:
		case <-wait.C:
		}
		wait.Stop()
		s.pubs.abandon()
		s.timer.stop()
		<-s.feed.finished()
		close(s.stopped)
		// Settled before it leaves the kick's subject: a newer session of
		// the device asking meanwhile waits for the cursor (onKick). A
		// kick that arrives after the unrouting is answered empty by the
		// router, at once, with the cursor stored.
		s.settle()
		for _, subj := range s.routed {
			s.srv.router.remove(subj, s)
		}
		s.follows.dropAll()
		s.lease.goOffline()
		s.srv.replies.unregister(s.owner)
	})
}

// settle, once delivery has stopped, has the acked stretches ticked and
// settled and the cursor stored; it runs once, from stop or from a kick
// that replaces the session, whichever comes first. Acks that arrive
// after it are not settled: their messages come again on the device's
// next session.
func (s *session) settle() {
	s.settleOnce.Do(func() {
		s.ticks.finish()
		s.groups.final()
		s.cursor.final()
		close(s.saved)
	})
}

// beginShutdown is the graceful path: refuse new sends, stop delivering,
// wait for stored sends to be answered, then close with 1012.
func (s *session) beginShutdown(ctx context.Context) {
	s.shutting.Store(true)
	s.feed.stop()
	s.groups.stop()
	for s.pubs.owed() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-s.t.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	s.t.Close(protocol.CloseServiceRestart, "gateway shutting down")
}

// listen routes subject's messages to this session, as kind, through the
// gateway's router until the session stops.
func (s *session) listen(kind routeKind, subject string) error {
	if err := s.srv.router.add(kind, subject, s); err != nil {
		return err
	}
	s.routed = append(s.routed, subject)
	return nil
}

// handle processes one client frame. It runs on the read loop.
//
// Sends, acks and reads in their encoders' form are decoded by the fast
// paths and handled here. Any other frame is decoded by encoding/json and
// is most often a request to a function: calls deep enough to grow a
// stack past 4 KiB, and the read loop's stack, parked in a read between
// frames, would then stay at 8 KiB for the rest of the session (the
// runtime halves a parked goroutine's stack only while a quarter of it
// is in use, and the read path alone is more than that of 4 KiB). So such
// a frame is handled on a goroutine of its own while the read loop waits
// for it: frames are still handled one at a time and in order, and the
// inbound state (s.in) is still touched by one goroutine at a time.
//
// The fast paths decode into a Frame from fastFrames, given back once it
// is handled: handleFrame keeps fields of an ack, a read or a 1:1 send,
// never the Frame itself.
func (s *session) handle(data []byte) {
	f := fastFrames.Get().(*protocol.Frame)
	if protocol.DecodeClientFastInto(data, f) {
		s.handleFrame(f)
		*f = protocol.Frame{}
		fastFrames.Put(f)
		return
	}
	fastFrames.Put(f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.handleSlow(data)
	}()
	<-done
}

// fastFrames are the Frames the fast paths decode into: a Frame is
// larger than most frames, and sends and acks are most of them.
var fastFrames = sync.Pool{New: func() any { return new(protocol.Frame) }}

// handleSlow decodes a frame off the fast paths and handles it.
func (s *session) handleSlow(data []byte) {
	f, err := protocol.DecodeClient(data)
	if err != nil {
		var de *protocol.DecodeError
		if errors.As(err, &de) && s.allow(s.in.frame, de.ID) {
			s.sendError(de.Code, de.Reason, de.ID, 0, 0)
		}
		return
	}
	s.handleFrame(f)
}

// handleFrame handles a decoded client frame.
func (s *session) handleFrame(f *protocol.Frame) {
	s.srv.metrics.frameIn[f.Type].Inc() // DecodeClient returns only these types
	switch f.Type {
	case protocol.TypeSend:
		if s.allow(s.in.send, f.ID) {
			s.send(f)
		} else {
			s.pubs.hold(f.ID) // the sends behind it wait for its resend
		}
	case protocol.TypeAck:
		if f.Group != "" {
			// Of a group read from its log: taken at any rate, as below.
			if !s.groups.ack(f.Group, f.GSeq) && s.allowSeq(s.in.frame, f) {
				s.refuseFrame(protocol.TypeAck, f.Group, protocol.ErrUnknownSeq, "nothing of this group delivered and unacked up to this gseq", f.GSeq, 0)
			}
			return
		}
		// An ack of a message delivered and unacked is taken at any
		// rate: there are never more of them than deliveries, and one
		// dropped would leave its message unsettled for the rest of
		// the session, which stops delivery once max-inflight are (the
		// SDKs do not resend acks). Any other ack counts as a frame.
		if s.feed.acked(f.Seq) {
			s.ticks.kick()
		} else if s.allowSeq(s.in.frame, f) {
			s.ack(f.Seq)
		}
	case protocol.TypeRead:
		switch {
		case !s.allowSeq(s.in.frame, f): // refused with its seq, which the SDKs resend by
		case f.Group != "":
			s.readGroupLog(f.Group, f.GSeq)
		default:
			s.read(f.Seq)
		}
	case protocol.TypeStatus:
		if s.allowSeq(s.in.frame, f) {
			s.status(f.Seq, f.Group, f.To)
		}
	case protocol.TypeSettings:
		// Its own bucket: a settings frame can be a KV write of up to a
		// frame's size.
		if s.allow(s.in.settings, f.ID) {
			s.settings(f)
		}
	case protocol.TypePresenceSub:
		if s.allowN(s.in.frame, s.presenceCost(f), "") {
			if f.Group != "" {
				s.follows.subscribeGroup(f.Group)
			} else {
				s.follows.subscribe(f.Users)
			}
		}
	case protocol.TypePresenceUnsub:
		if s.allowN(s.in.frame, s.presenceCost(f), "") {
			if f.Group != "" {
				s.follows.unsubscribeGroup(f.Group)
			} else {
				s.follows.unsubscribe(f.Users)
			}
		}
	case protocol.TypeGroup:
		// Its own bucket: each is a request to the groups function, and
		// a change is fanned out to every member.
		if s.allow(s.in.group, f.ID) {
			s.group(f)
		}
	case protocol.TypeTyping:
		if f.Group != "" {
			if s.allow(s.in.typing, "") {
				s.typingGroup(f.Group)
			}
			return
		}
		if s.allow(s.in.typing, "") && f.To != s.id.User {
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
	return s.allowFor(l, 1, id, nil)
}

// allowSeq is allow for a frame named by its seq (ack, read, status):
// the refusal names it (type, seq, and a status's group), so the client
// knows which frame to resend.
func (s *session) allowSeq(l *rate.Limiter, f *protocol.Frame) bool {
	return s.allowFor(l, 1, "", f)
}

// allowN is allow for a frame that costs n frames' tokens (at most the
// bucket's burst, so it can always be let through once the bucket is full).
func (s *session) allowN(l *rate.Limiter, n int, id string) bool {
	return s.allowFor(l, n, id, nil)
}

// allowFor takes n tokens from l for a frame named by id, or by seq (f),
// or refuses it rate_limited under those names.
func (s *session) allowFor(l *rate.Limiter, n int, id string, f *protocol.Frame) bool {
	r := l.ReserveN(time.Now(), min(n, l.Burst()))
	if d := r.Delay(); d > 0 {
		r.Cancel()
		s.in.strikes++
		if s.in.strikes >= s.srv.cfg.FloodStrikes {
			s.t.Close(protocol.ClosePolicy, protocol.ReasonFlood)
			return false
		}
		if f != nil {
			group, seq := "", f.Seq // named by a status, or an ack or read of a group's log
			switch {
			case f.GSeq != 0:
				group, seq = f.Group, f.GSeq
			case f.Type == protocol.TypeStatus:
				group = f.Group
			}
			s.refuseFrame(f.Type, group, protocol.ErrRateLimited, "too many frames", seq, d.Milliseconds()+1)
		} else {
			s.sendError(protocol.ErrRateLimited, "too many frames", id, 0, d.Milliseconds()+1)
		}
		return false
	}
	s.in.strikes = 0
	return true
}

// presenceCost is what a presence_sub or presence_unsub frame takes from
// the frame bucket. One naming users is one presence request at most
// (256 users); one naming a group reads the group's record and may follow
// up to MaxPresenceSubs members, asked about MaxPresenceGet at a time, so
// it costs the record's read and each request it may make: otherwise one
// frame token bought five calls.
func (s *session) presenceCost(f *protocol.Frame) int {
	if f.Group == "" {
		return 1
	}
	return 1 + (s.srv.cfg.MaxPresenceSubs+contract.MaxPresenceGet-1)/contract.MaxPresenceGet
}

// queue hands a write to the PubAck queue, waiting for a slot while
// MaxPendingSends are owed: the read loop then stops reading from this
// socket.
func (s *session) queue(it *pubItem) {
	select {
	case s.pubs.slots <- struct{}{}:
	case <-s.t.Done():
		return
	}
	s.pubs.add(it)
}

func (s *session) send(f *protocol.Frame) {
	if s.shutting.Load() {
		s.refuseSend(protocol.ErrShuttingDown, "gateway is shutting down", f.ID)
		return
	}
	if f.Media != nil && protocol.MediaOwner(f.Media.Key) != s.id.User {
		s.sendError(protocol.ErrBadMedia, "media.key is not under your upload prefix", f.ID, 0, 0)
		return
	}
	ts := time.Now().UnixMilli()
	if f.Group != "" {
		s.sendGroup(f, ts)
		return
	}
	inbox := contract.InboxSubject(f.To)
	// The header's values share one array, each capped at its own: one
	// allocation for the six.
	vals := &[6]string{contract.MsgDedupID(s.id.User, f.ID), contract.KindMsg, s.id.User, s.id.Device, f.ID, strconv.FormatInt(ts, 10)}
	m := &nats.Msg{
		Subject: inbox,
		Header: nats.Header{
			contract.HdrMsgID:  vals[0:1:1],
			contract.HdrKind:   vals[1:2:2],
			contract.HdrFrom:   vals[2:3:3],
			contract.HdrDevice: vals[3:4:4],
			contract.HdrID:     vals[4:5:5],
			contract.HdrTS:     vals[5:6:6],
		},
		Data: f.Body,
	}
	if code, why := s.srv.regions.address(m, f.To, f.Media != nil); code != "" { // regions.go
		s.refuseSend(code, why, f.ID)
		return
	}
	it := &pubItem{msg: m, id: f.ID, to: f.To, ts: ts, media: f.Media}
	switch {
	case m.Subject != inbox:
		// To another region, through OUTBOX: stored whether or not the
		// user has another device (its seq is set once the send is
		// stored).
		it.own = contract.OwnCopy(m.Header, f.To, 0, f.Body)
	case f.To != s.id.User:
		// Copied if the user has another device (owncheck.go).
		it.checkOwn = true
	}
	s.queue(it)
}

// refuseSend answers send id with code before it is queued. A send the
// client resends (a retryable code) holds the sends after it back until
// it comes again (pubqueue.go).
func (s *session) refuseSend(code protocol.ErrorCode, message, id string) {
	if protocol.Retryable(code) {
		s.pubs.hold(id)
	}
	s.sendError(code, message, id, 0, 0)
}

// ack records that the device has the message or receipt at seq. It is
// settled once the device has acked everything before it too and, for
// chat messages, their senders' delivered ticks are stored (ticks.go).
func (s *session) ack(seq uint64) {
	if !s.feed.acked(seq) {
		s.refuseFrame(protocol.TypeAck, "", protocol.ErrUnknownSeq, "nothing delivered and unacked with this seq", seq, 0)
		return
	}
	s.ticks.kick()
}

// refuseFrame answers a frame of type of named by seq (an ack, a read, a
// status; group for a status naming one) with an error frame naming it,
// and counts it.
func (s *session) refuseFrame(of, group string, code protocol.ErrorCode, message string, seq uint64, retryMS int64) {
	s.srv.metrics.errors.WithLabelValues(string(code)).Inc()
	s.t.Send(protocol.EncodeRefusal(code, message, of, group, seq, retryMS))
}

// sendError answers a frame with an error frame and counts it.
func (s *session) sendError(code protocol.ErrorCode, message, id string, seq uint64, retryMS int64) {
	s.srv.metrics.errors.WithLabelValues(string(code)).Inc()
	s.t.Send(protocol.EncodeError(code, message, id, seq, retryMS))
}

// The session is its PubAck queue's pubEnv.

func (s *session) publish(m *nats.Msg, n, a uint64) error {
	m.Reply = s.srv.replies.subject(s.owner, replyPub, n, a)
	return s.srv.nc.PublishMsg(m)
}

func (s *session) grant(it *pubItem) {
	m := it.msg
	if it.media == nil {
		gid, again := it.group, it.rechecks > 0
		go func() {
			code, message := s.checkGroupSend(gid, m, again)
			s.pubs.granted(it, nil, code, message, s.storedAlready(code, m))
		}()
		return
	}
	media, to := *it.media, it.to
	go func() {
		ref, code, message := s.grantMedia(media, to)
		s.pubs.granted(it, ref, code, message, s.storedAlready(code, m))
	}()
}

// neverAMsgID is a Nats-Msg-Id no message is stored under (the dedup ids
// have a kind and a colon): expected as the stream's last, it makes a
// store refuse whatever its duplicate check lets through.
const neverAMsgID = "-"

// storedAlready tells whether send m, refused by a check (code) that no
// longer lets it through, was stored before, and under which seq (0: it
// was not, or the code is not such a refusal): a resend of a send stored
// whose answer was lost (a dropped connection), made after its sender
// was removed from the group, or after its media's grant changed. Such a
// resend is answered "sent" with the seq it has, not refused, as a
// resend of a send stored is anywhere else: the app must not show as
// failed a message its recipients got. The store is asked with the send
// itself under its dedup id, expecting a last message id no message has:
// it answers a duplicate before it checks that, and refuses anything
// else unstored. Within the store's duplicate window (2 minutes), as any
// resend's answer.
func (s *session) storedAlready(code protocol.ErrorCode, m *nats.Msg) uint64 {
	switch code {
	case protocol.ErrNotMember, protocol.ErrUnknownGroup, protocol.ErrBadMedia:
	default:
		return 0
	}
	h := maps.Clone(m.Header)
	h.Set(contract.HdrExpectLastMsgID, neverAMsgID)
	// A group send's condition on the group's changes may be checked
	// before the duplicate is (on one server it is).
	h.Del(contract.HdrExpectLastSubjSeq)
	h.Del(contract.HdrExpectLastSubjSeqSubject)
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
	defer cancel()
	ack, err := s.srv.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Header: h})
	switch {
	case err == nil && ack.Duplicate:
		return ack.Sequence
	case err == nil:
		s.log.Error("a probe for a stored send was stored", "subject", m.Subject, "seq", ack.Sequence)
	}
	return 0
}

func (s *session) checkOwn(it *pubItem, seq uint64) (other, known bool) {
	if s.otherDevice.Load() {
		s.srv.metrics.ownCopies.Inc()
		return true, true
	}
	s.srv.own.ask(ownQuestion{user: s.id.User, device: s.id.Device, seq: seq, alone: s.alone.Load(), answer: func(a ownAnswer) {
		switch {
		case a.other:
			s.otherDevice.Store(true)
		case a.alone != 0:
			s.alone.Store(a.alone)
		}
		if a.copy {
			s.srv.metrics.ownCopies.Inc()
		}
		s.pubs.ownChecked(it, a.copy)
	}})
	return false, false
}

func (s *session) answer(frame []byte) { s.t.Send(frame) }

func (s *session) refuse(code protocol.ErrorCode, message, id string, seq uint64) {
	s.sendError(code, message, id, seq, 0)
}

func (s *session) wakeAt(at time.Time) { s.timer.set(opPubs, at) }

func (s *session) stored() { s.srv.metrics.stored.Inc() }

func (s *session) republished(reason string) { s.srv.metrics.republished[reason].Inc() }
