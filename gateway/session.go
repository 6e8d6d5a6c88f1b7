package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/switchboard-im/switchboard/gateway/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

// pubKind says what a PubAck completes.
type pubKind uint8

const (
	pubSend      pubKind = iota // a chat message: answer "sent"
	pubDelivered                // a delivered receipt: then ack the message
	pubRead                     // a read receipt: nothing more to do
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
	// For a delivered receipt: the message to ack once the receipt is stored.
	ack jetstream.Msg
}

// session is one device's connection: it publishes the device's sends,
// delivers its queue from the durable consumer, and turns its acks into
// JetStream acks and receipts.
//
// Goroutines: the read loop calls handle; deliverLoop and pubAckLoop run on
// their own. handle must not block except on pubq (backpressure on sends).
type session struct {
	srv *Server
	id  Identity
	sid string
	t   transport
	log *slog.Logger

	sendLim  *rate.Limiter
	frameLim *rate.Limiter
	strikes  int // rate-limited frames in a row; read loop only

	mu      sync.Mutex // guards pending and msgs
	pending map[uint64]jetstream.Msg
	msgs    jetstream.MessagesContext

	pubq     chan pubItem
	shutting atomic.Bool

	kickSub *nats.Subscription
	expiry  *time.Timer

	loops    sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}
}

func newSession(srv *Server, id Identity, t transport) *session {
	cfg := &srv.cfg
	sid := nats.NewInbox()[len(nats.InboxPrefix):]
	return &session{
		srv:      srv,
		id:       id,
		sid:      sid,
		t:        t,
		log:      srv.log.With("user", id.User, "device", id.Device, "session", sid),
		sendLim:  rate.NewLimiter(rate.Limit(cfg.SendRate), cfg.SendBurst),
		frameLim: rate.NewLimiter(rate.Limit(cfg.FrameRate), cfg.FrameBurst),
		pending:  make(map[uint64]jetstream.Msg),
		pubq:     make(chan pubItem, cfg.MaxPendingSends),
		stopped:  make(chan struct{}),
	}
}

func kickSubject(user, device string) string { return "sb.kick." + user + "." + device }

// start takes over the device (ending any older session of it), prepares
// its consumer, greets the client and starts delivery.
func (s *session) start(ctx context.Context) error {
	nc := s.srv.nc
	subj := kickSubject(s.id.User, s.id.Device)
	// Ask any older session of this device, on any gateway, to close, and
	// wait for it so two sessions never pull from one consumer.
	if _, err := nc.Request(subj, []byte(s.sid), s.srv.cfg.KickTimeout); err != nil &&
		!errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrTimeout) {
		return err
	}
	sub, err := nc.Subscribe(subj, s.onKick)
	if err != nil {
		return err
	}
	s.kickSub = sub

	cons, err := s.srv.devices.ensure(ctx, s.id.User, s.id.Device)
	if err != nil {
		return err
	}
	s.t.Send(protocol.EncodeWelcome(s.id.User, s.id.Device, s.sid, s.srv.cfg.MaxFrameBytes))

	msgs, err := cons.Messages(jetstream.PullMaxMessages(s.srv.maxInflight))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.msgs = msgs
	s.mu.Unlock()
	s.loops.Add(2)
	go s.deliverLoop(msgs)
	go s.pubAckLoop()

	if d := time.Until(s.id.Expires); d > 0 {
		s.expiry = time.AfterFunc(d, func() { s.t.Close(protocol.ClosePolicy, protocol.ReasonTokenExpired) })
	} else {
		s.t.Close(protocol.ClosePolicy, protocol.ReasonTokenExpired)
	}
	return nil
}

// onKick runs when a newer session of the same device starts: close this
// one, wait until it has stopped pulling, then answer so the newer one
// proceeds.
func (s *session) onKick(m *nats.Msg) {
	if string(m.Data) == s.sid {
		return
	}
	s.t.Close(protocol.CloseReplaced, "replaced")
	select {
	case <-s.stopped:
	case <-time.After(s.srv.cfg.KickTimeout):
	}
	_ = m.Respond(nil)
}

// stop ends delivery, lets in-flight PubAcks finish (bounded) and saves the
// device's position. Messages delivered but not acked stay pending in
// JetStream; the next session resets the consumer to its ack floor.
func (s *session) stop() {
	s.stopOnce.Do(func() {
		if s.expiry != nil {
			s.expiry.Stop()
		}
		if s.kickSub != nil {
			_ = s.kickSub.Unsubscribe()
		}
		s.stopDelivery()
		close(s.pubq)
		s.loops.Wait()
		close(s.stopped)
	})
}

// beginShutdown is the graceful path: refuse new sends, stop delivering,
// wait for stored sends to be answered, then close with 1012.
func (s *session) beginShutdown(ctx context.Context) {
	s.shutting.Store(true)
	s.stopDelivery()
	for len(s.pubq) > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-s.t.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	s.t.Close(protocol.CloseServiceRestart, "gateway shutting down")
}

func (s *session) stopDelivery() {
	s.mu.Lock()
	msgs := s.msgs
	s.mu.Unlock()
	if msgs != nil {
		msgs.Stop()
	}
}

func (s *session) deliverLoop(msgs jetstream.MessagesContext) {
	defer s.loops.Done()
	for {
		m, err := msgs.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			s.log.Warn("delivery stopped", "err", err)
			s.t.Close(protocol.CloseInternal, "delivery stopped")
			return
		}
		s.deliver(m)
	}
}

func (s *session) deliver(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		s.log.Error("message without metadata", "err", err)
		return
	}
	seq := meta.Sequence.Stream
	h := m.Headers()
	ts, _ := strconv.ParseInt(h.Get(hdrTS), 10, 64)
	if ts == 0 {
		ts = meta.Timestamp.UnixMilli()
	}
	from, dev, id := h.Get(hdrFrom), h.Get(hdrDevice), h.Get(hdrID)
	var frame []byte
	switch h.Get(hdrKind) {
	case kindMsg:
		frame = protocol.AppendMsg(nil, id, from, dev, seq, ts, m.Data())
	case kindReceipt:
		frame = protocol.AppendReceipt(nil, id, h.Get(hdrStatus), from, dev, seq, ts)
	default:
		// Not written by a gateway (for example published by hand with the
		// nats CLI). Terminate it so it cannot block the queue; it stays
		// in the stream for an operator to inspect.
		s.log.Warn("terminating foreign message in inbox", "seq", seq)
		_ = m.Term()
		return
	}
	if !protocol.ValidID(from) || !protocol.ValidID(dev) || !protocol.ValidID(id) {
		s.log.Warn("terminating malformed message in inbox", "seq", seq)
		_ = m.Term()
		return
	}
	s.mu.Lock()
	s.pending[seq] = m
	s.mu.Unlock()
	s.t.Send(frame)
}

func (s *session) pubAckLoop() {
	defer s.loops.Done()
	for it := range s.pubq {
		var ack *jetstream.PubAck
		var err error
		select {
		case ack = <-it.fut.Ok():
		case err = <-it.fut.Err():
		}
		if err != nil {
			s.log.Warn("store failed", "err", err)
		}
		switch {
		case it.kind == pubDelivered && err == nil:
			_ = it.ack.Ack()
		case it.kind == pubDelivered:
			// The receipt was not stored: have the message redelivered so
			// the device acks it again.
			_ = it.ack.Nak()
		case it.kind == pubSend && err == nil:
			s.t.Send(protocol.AppendSent(nil, it.id, ack.Sequence, it.ts, ack.Duplicate))
		case it.kind == pubSend:
			s.t.Send(protocol.EncodeError(protocol.ErrStoreFailed, "message was not stored; resend with the same id", it.id, 0, 0))
		case err != nil:
			s.t.Send(protocol.EncodeError(protocol.ErrStoreFailed, "read receipt was not stored; resend", "", it.seq, 0))
		}
	}
}

// handle processes one client frame. It runs on the read loop.
func (s *session) handle(data []byte) {
	f, err := protocol.DecodeClient(data)
	if err != nil {
		var de *protocol.DecodeError
		if errors.As(err, &de) && s.allow(s.frameLim, de.ID) {
			s.t.Send(protocol.EncodeError(de.Code, de.Reason, de.ID, 0, 0))
		}
		return
	}
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
		s.t.Send(protocol.EncodeError(protocol.ErrRateLimited, "too many frames", id, 0, d.Milliseconds()+1))
		return false
	}
	s.strikes = 0
	return true
}

func (s *session) enqueue(it pubItem) {
	select {
	case s.pubq <- it:
	case <-s.t.Done():
	}
}

func (s *session) send(f *protocol.Frame) {
	if s.shutting.Load() {
		s.t.Send(protocol.EncodeError(protocol.ErrShuttingDown, "gateway is shutting down", f.ID, 0, 0))
		return
	}
	ts := time.Now().UnixMilli()
	m := &nats.Msg{
		Subject: streams.InboxSubject(f.To),
		Header: nats.Header{
			hdrMsgID:  {msgDedupID(s.id.User, f.ID)},
			hdrKind:   {kindMsg},
			hdrFrom:   {s.id.User},
			hdrDevice: {s.id.Device},
			hdrID:     {f.ID},
			hdrTS:     {strconv.FormatInt(ts, 10)},
		},
		Data: f.Body,
	}
	fut, err := s.srv.js.PublishMsgAsync(m)
	if err != nil {
		s.log.Warn("publish failed", "err", err)
		s.t.Send(protocol.EncodeError(protocol.ErrStoreFailed, "message was not stored; resend with the same id", f.ID, 0, 0))
		return
	}
	s.enqueue(pubItem{fut: fut, kind: pubSend, id: f.ID, ts: ts})
}

func (s *session) ack(seq uint64) {
	s.mu.Lock()
	m := s.pending[seq]
	delete(s.pending, seq)
	s.mu.Unlock()
	if m == nil {
		s.t.Send(protocol.EncodeError(protocol.ErrUnknownSeq, "nothing pending with this seq", "", seq, 0))
		return
	}
	h := m.Headers()
	if h.Get(hdrKind) != kindMsg {
		_ = m.Ack()
		return
	}
	// The delivered receipt is stored in the sender's inbox before the
	// message is acked, so a crash between the two redelivers the message
	// and the receipt's dedup id keeps the receipt single.
	from, id := h.Get(hdrFrom), h.Get(hdrID)
	fut, err := s.srv.js.PublishMsgAsync(s.receipt(protocol.StatusDelivered, from, id))
	if err != nil {
		_ = m.Nak()
		return
	}
	s.enqueue(pubItem{fut: fut, kind: pubDelivered, ack: m})
}

func (s *session) receipt(status, from, id string) *nats.Msg {
	return &nats.Msg{
		Subject: streams.InboxSubject(from),
		Header: nats.Header{
			hdrMsgID:  {receiptDedupID(status, from, id, s.id.User, s.id.Device)},
			hdrKind:   {kindReceipt},
			hdrStatus: {status},
			hdrFrom:   {s.id.User},
			hdrDevice: {s.id.Device},
			hdrID:     {id},
			hdrTS:     {strconv.FormatInt(time.Now().UnixMilli(), 10)},
		},
	}
}

// read sends a read receipt for the message stored at seq. The message is
// looked up so a device can only mark messages sent to its own user, and
// the receipt goes to their real sender.
func (s *session) read(seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rm, err := s.srv.inbox.GetMsg(ctx, seq)
	if err != nil || rm.Subject != streams.InboxSubject(s.id.User) || rm.Header.Get(hdrKind) != kindMsg {
		s.t.Send(protocol.EncodeError(protocol.ErrUnknownSeq, "no message to you with this seq", "", seq, 0))
		return
	}
	from, id := rm.Header.Get(hdrFrom), rm.Header.Get(hdrID)
	fut, err := s.srv.js.PublishMsgAsync(s.receipt(protocol.StatusRead, from, id))
	if err != nil {
		s.t.Send(protocol.EncodeError(protocol.ErrStoreFailed, "read receipt was not stored; resend", "", seq, 0))
		return
	}
	s.enqueue(pubItem{fut: fut, kind: pubRead, seq: seq})
}
