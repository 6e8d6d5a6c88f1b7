package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

// workers is how many messages one instance works on at once. A push is
// I/O bound (a few NATS round trips and one HTTP call per device), so this
// is well above the core count; the durable's max_ack_pending bounds all
// instances together.
const workers = 32

// groupMessages is how many group messages one instance works on at once,
// each by up to groupWorkers members at a time.
const groupMessages = 8

// Service is one running instance. Its methods are safe for concurrent use.
type Service struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cfg  Config
	log  *slog.Logger
	hook *webhook

	inbox      jetstream.Stream
	devicesKV  jetstream.KeyValue
	cursorsKV  jetstream.KeyValue
	presenceKV jetstream.KeyValue
	pushKV     jetstream.KeyValue
	// ackWait is the durable's: how long a message this instance holds
	// stays its own before the server hands it to another.
	ackWait time.Duration

	svc micro.Service
	// stop is closed by Stop; stopping mirrors it for the hot path.
	stop     chan struct{}
	stopping atomic.Bool
	stopOnce sync.Once

	// sources are the durables pulled from: new INBOX messages, lease
	// changes (gone.go) and new group messages (groups.go).
	sources []*source
	// mu guards the sources' iterators and stopped, and orders wg.Add
	// by the notify endpoint before Stop's wg.Wait.
	mu      sync.Mutex
	stopped bool
	// wg counts the pull loops, the messages in hand and notify requests.
	wg sync.WaitGroup

	counters counters
}

// source is one durable consumer an instance pulls from, with slots of
// its own: a storm of leases gone (a gateway restarting) does not hold
// new messages back.
type source struct {
	stream string
	cfg    jetstream.ConsumerConfig
	handle func(jetstream.Msg)
	sem    chan struct{}             // one slot per message being worked on
	iter   jetstream.MessagesContext // guarded by Service.mu
}

// Start checks cfg, binds the durable consumers `push` on INBOX,
// `push-gone` on KV_PRESENCE and `push-groups` on GROUPS and the micro
// service, and begins pulling. The streams and buckets must exist
// (streams.Apply). A `push-gone` or `push-groups` that cannot be bound is
// logged and bound later (pull): chat messages are pushed meanwhile. ctx bounds only the setup; the instance runs until
// Stop. An empty WebhookURL returns ErrNotConfigured.
func Start(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		nc:   nc,
		js:   js,
		cfg:  cfg,
		log:  log.WithGroup("push"),
		hook: newWebhook(cfg),
		stop: make(chan struct{}),
	}
	var err error
	if s.inbox, err = js.Stream(ctx, contract.Inbox); err != nil {
		return nil, fmt.Errorf("push: stream %s: %w", contract.Inbox, err)
	}
	if s.devicesKV, err = js.KeyValue(ctx, contract.DevicesKV); err != nil {
		return nil, fmt.Errorf("push: bucket %s: %w", contract.DevicesKV, err)
	}
	if s.cursorsKV, err = js.KeyValue(ctx, contract.CursorsKV); err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	if s.presenceKV, err = js.KeyValue(ctx, contract.PresenceKV); err != nil {
		return nil, fmt.Errorf("push: bucket %s: %w", contract.PresenceKV, err)
	}
	if s.pushKV, err = js.KeyValue(ctx, contract.PushKV); err != nil {
		return nil, fmt.Errorf("push: bucket %s: %w", contract.PushKV, err)
	}
	st, err := s.pushKV.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("push: bucket %s: %w", contract.PushKV, err)
	}
	if st.LimitMarkerTTL() <= 0 {
		// Without per-key TTLs a window would never close and each user
		// would be pushed once, ever.
		return nil, fmt.Errorf("push: bucket %s has no limit_marker_ttl, so per-key TTLs are off", contract.PushKV)
	}
	s.sources = []*source{
		{stream: contract.Inbox, handle: s.handle, sem: make(chan struct{}, workers)},
		{stream: "KV_" + contract.PresenceKV, handle: s.handleGone, sem: make(chan struct{}, workers)},
		// A group message is worked on by up to groupWorkers at once.
		{stream: contract.GroupsStream, handle: s.handleGroup, sem: make(chan struct{}, groupMessages)},
	}
	for i, name := range []string{"push", contract.PushGoneDurable, contract.PushGroupsDurable} {
		if s.sources[i].cfg, err = streams.ConsumerConfig(name); err != nil {
			return nil, err
		}
		// A claim's hold must outlive the next delivery of whichever
		// message made it.
		s.ackWait = max(s.ackWait, s.sources[i].cfg.AckWait)
	}
	inbox, gone, groups := s.sources[0], s.sources[1], s.sources[2]
	if inbox.iter, err = s.bind(ctx, inbox); err != nil {
		return nil, err
	}
	if gone.iter, err = s.bind(ctx, gone); err != nil {
		// Messages are still pushed; wakes for leases gone wait for the
		// durable, which pull binds as soon as it may (an upgrade that
		// came before the push role's new rights, say).
		s.log.Error("lease changes are not read: no wake for a lease gone until the durable is bound; trying again", "durable", gone.cfg.Durable, "err", err)
	}
	if groups.iter, err = s.bind(ctx, groups); err != nil {
		// As above: chat messages are pushed meanwhile.
		s.log.Error("group messages are not read: no push for groups read from their log until the durable is bound; trying again", "durable", groups.cfg.Durable, "err", err)
	}
	if s.svc, err = s.addService(); err != nil {
		for _, src := range s.sources {
			if src.iter != nil {
				src.iter.Stop()
			}
		}
		return nil, err
	}
	for _, src := range s.sources {
		s.wg.Add(1)
		go s.pull(src)
	}
	s.log.Info("started", "window", cfg.Window, "max_attempts", cfg.MaxAttempts)
	return s, nil
}

// Stop stops pulling and waits for the messages in hand. A message whose
// webhook call is under way finishes that call and records it; its other
// devices and every message not yet started are handed back (nak) at once
// for another instance, which skips whatever the claim records as done.
// Stop is safe to call more than once.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		close(s.stop)
		_ = s.svc.Stop()
		s.mu.Lock()
		s.stopped = true
		for _, src := range s.sources {
			if src.iter != nil {
				src.iter.Drain()
			}
		}
		s.mu.Unlock()
		s.wg.Wait()
		s.log.Info("stopped")
	})
}

// enter counts a notify request in wg unless Stop has begun.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.wg.Add(1)
	return true
}

// bind creates or updates src's durable and starts pulling from it.
func (s *Service) bind(ctx context.Context, src *source) (jetstream.MessagesContext, error) {
	cons, err := s.js.CreateOrUpdateConsumer(ctx, src.stream, src.cfg)
	if err != nil {
		return nil, fmt.Errorf("push: consumer %s: %w", src.cfg.Durable, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(workers))
	if err != nil {
		return nil, fmt.Errorf("push: consume %s: %w", src.cfg.Durable, err)
	}
	return it, nil
}

// pull hands src's messages to workers, and binds the durable again when
// its iterator dies (consumer deleted by an operator, connection lost for
// good) or was never made, waiting longer after each failure (up to 30 s).
func (s *Service) pull(src *source) {
	defer s.wg.Done()
	wait := time.Second
	for {
		s.mu.Lock()
		iter := src.iter
		s.mu.Unlock()
		if iter != nil {
			s.dispatch(iter, src)
			if s.stopping.Load() || s.nc.IsClosed() {
				return
			}
			s.log.Warn("message iterator ended; rebinding the consumer", "durable", src.cfg.Durable)
		}
		select {
		case <-s.stop:
			return
		case <-time.After(wait):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		it, err := s.bind(ctx, src)
		cancel()
		if err != nil {
			wait = min(2*wait, 30*time.Second)
			s.log.Error("binding the consumer failed", "durable", src.cfg.Durable, "err", err, "next_try", wait)
			s.mu.Lock()
			src.iter = nil
			s.mu.Unlock()
			continue
		}
		wait = time.Second
		s.mu.Lock()
		if s.stopped {
			it.Stop()
		} else {
			src.iter = it
		}
		s.mu.Unlock()
	}
}

func (s *Service) dispatch(iter jetstream.MessagesContext, src *source) {
	for {
		m, err := iter.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			// A terminal error closes the iterator; the next call says so.
			s.log.Warn("pull", "err", err)
			continue
		}
		if s.stopping.Load() {
			_ = m.Nak()
			continue
		}
		src.sem <- struct{}{}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-src.sem }()
			src.handle(m)
		}()
	}
}

// handle decides one INBOX message. Every path ends in ack, nak or term:
// nothing is dropped silently and nothing is retried forever.
func (s *Service) handle(m jetstream.Msg) {
	if s.stopping.Load() {
		_ = m.Nak()
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		// Not a JetStream delivery; nothing to retry or dead-letter.
		s.log.Error("message without metadata", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	h := m.Headers()
	switch h.Get(contract.HdrKind) {
	case contract.KindMsg:
		if contract.IsOwnCopy(lastToken(m.Subject()), h) {
			// The user's own message, for their other devices: it
			// wakes nobody.
			s.counters.ignored.Add(1)
			_ = m.Ack()
			return
		}
	case "":
		n := Notification{User: lastToken(m.Subject()), MessageID: h.Get(contract.HdrID), From: h.Get(contract.HdrFrom), Seq: meta.Sequence.Stream}
		s.reject(m, meta, n, fmt.Errorf("%w: missing %s header", ErrMalformed, contract.HdrKind))
		return
	default:
		// Receipts, and kinds added later, wake nobody.
		s.counters.ignored.Add(1)
		_ = m.Ack()
		return
	}
	n, err := fromInbox(m.Subject(), h, meta.Sequence.Stream)
	if err != nil {
		s.reject(m, meta, n, err)
		return
	}
	s.notify(m, meta.NumDelivered, m.Subject(), n)
}

// reject dead-letters a message that can never become a notification.
func (s *Service) reject(m jetstream.Msg, meta *jetstream.MsgMetadata, n Notification, why error) {
	ctx := context.Background()
	if err := deadLetter(ctx, s.js, n, m.Subject(), why.Error(), meta.NumDelivered); err != nil {
		s.log.Error("dead-lettering failed; will retry", "seq", n.Seq, "err", err)
		_ = m.NakWithDelay(backoff(meta.NumDelivered, s.cfg.BaseBackoff, s.cfg.MaxBackoff, 0))
		return
	}
	s.counters.deadLettered.Add(1)
	s.log.Warn("dead-lettered", "seq", n.Seq, "subject", m.Subject(), "reason", why)
	_ = m.Term()
}

// hold is the TTL of a claim still in progress: it must outlive the next
// delivery of the message (after delay, or after the ack wait if this
// instance dies), or that delivery would find no claim, open a new window
// and push the devices already done a second time.
func (s *Service) hold(delay time.Duration) time.Duration {
	return delay + s.ackWait + s.cfg.Window
}

// stale is the age past which a claim cannot be live: no hold is longer
// than hold(MaxBackoff), so a key older than twice that lost its TTL.
func (s *Service) stale() time.Duration { return 2 * s.hold(s.cfg.MaxBackoff) }

// notify is the push path of one chat message, n, stored on subject and
// delivered as m for the attempt'th time; m is acked once n is done with.
func (s *Service) notify(m jetstream.Msg, attempt uint64, subject string, n Notification) {
	s.settle(m, attempt, subject, []woken{{n, s.wakeUser(context.Background(), m, attempt, n)}})
}

// waking is what one attempt at waking a user's devices for a message
// came to.
type waking struct {
	// t is the user's window, when this message holds it; nil when the
	// user was online, had no device, or the message was coalesced.
	t *ticket
	// failed are the devices to try again, and err the last error: of a
	// failed device, or of the attempt as a whole when t is nil.
	failed map[string]Notification
	err    error
	// held: the window is held by a message that has woken no device
	// yet (errHeld, also in err); decided again later.
	held bool
	// stopped: the instance is stopping; the claim records what is done.
	stopped bool
}

// wakeUser decides whether n's user is woken for n and wakes their devices
// that lack it, delivered as m for the attempt'th time. It neither acks
// nor naks m: a chat message is one user's, a group's message many.
func (s *Service) wakeUser(ctx context.Context, m jetstream.Msg, attempt uint64, n Notification) (w waking) {
	online, devices, err := s.online(ctx, n.User)
	switch {
	case err != nil:
		w.err = err
		return w
	case online:
		s.counters.skippedOnline.Add(1)
		s.log.Debug("online; no push", "user", n.User, "seq", n.Seq, "gseq", n.GSeq)
		if attempt > 1 {
			// An earlier attempt may hold the window having woken nobody.
			if err := releaseIdle(ctx, s.pushKV, n.User, n.ref()); err != nil {
				s.log.Warn("releasing the claim failed", "user", n.User, "err", err)
			}
		}
		return w
	case len(devices) == 0:
		// Never connected: there is no device to wake, and its first
		// connection delivers everything anyway.
		s.counters.skippedNoDevice.Add(1)
		s.log.Debug("no device to wake", "user", n.User, "seq", n.Seq, "gseq", n.GSeq)
		return w
	}
	t, ours, err := acquire(ctx, s.js, s.pushKV, n.User, n.ref(), s.hold(0), s.stale())
	switch {
	case errors.Is(err, errHeld):
		if attempt < uint64(s.cfg.MaxAttempts) {
			s.counters.waited.Add(1)
			s.log.Debug("window held by a message that woke no device yet", "user", n.User, "seq", n.Seq, "gseq", n.GSeq)
		}
		w.held, w.err = true, err
		return w
	case err != nil:
		w.err = err
		return w
	case !ours:
		s.counters.coalesced.Add(1)
		s.log.Debug("coalesced", "user", n.User, "seq", n.Seq, "gseq", n.GSeq)
		return w
	}
	w.t = t
	for _, d := range devices {
		if t.st.done(d) {
			continue
		}
		if s.wokenByGone(ctx, n.User, d) {
			// Woken within the window when its lease went (gone.go).
			s.log.Debug("woken for its lease gone; not again", "user", n.User, "device", d, "seq", n.Seq, "gseq", n.GSeq)
			continue
		}
		if s.stopping.Load() {
			w.stopped = true
			return w
		}
		_ = m.InProgress() // one slow device must not hand the message to another instance
		dn := n
		dn.Device = d
		fail := func(err error) {
			if w.failed == nil {
				w.failed = map[string]Notification{}
			}
			w.failed[d], w.err = dn, err
		}
		pending, delivered, err := s.pendingOf(ctx, n, d)
		if err != nil {
			fail(err)
			continue
		}
		if delivered {
			s.log.Debug("device has the message; not woken", "user", n.User, "device", d, "seq", n.Seq, "gseq", n.GSeq)
			continue
		}
		dn.Pending = pending
		err = s.hook.post(ctx, dn)
		switch {
		case err == nil:
			s.counters.pushed.Add(1)
			s.log.Debug("pushed", "user", n.User, "device", d, "seq", n.Seq, "gseq", n.GSeq, "pending", pending)
			t.st.Sent = append(t.st.Sent, d)
		case isPermanent(err):
			if dlErr := deadLetter(ctx, s.js, dn, m.Subject(), err.Error(), attempt); dlErr != nil {
				fail(dlErr)
				continue
			}
			s.counters.deadLettered.Add(1)
			s.log.Warn("webhook refused the notification; dead-lettered", "user", n.User, "device", d, "seq", n.Seq, "gseq", n.GSeq, "err", err)
			t.st.Dead = append(t.st.Dead, d)
		default:
			fail(err)
			continue
		}
		if err := t.save(ctx, s.hold(0)); err != nil {
			// The final save tries again with the same state.
			s.log.Warn("recording a pushed device failed", "user", n.User, "device", d, "err", err)
		}
	}
	return w
}

// woken is one user's part of a message: their notification, and what
// the attempt at waking them came to.
type woken struct {
	n Notification
	w waking
}

// settle ends the attempt'th delivery of m, stored on subject, from what
// waking each of its users came to: nak'd if the instance is stopping;
// acked when every user is done with, after which each user's window
// closes (finish); else the next attempt is scheduled, or, once the
// attempts are spent, what failed is dead-lettered and m terminated.
func (s *Service) settle(m jetstream.Msg, attempt uint64, subject string, users []woken) {
	ctx := context.Background()
	var open []*ticket
	var todo []woken
	held := true // every user left to do waits on a held window
	var lastErr error
	for _, u := range users {
		if u.w.stopped {
			// The claims record what is done; the next delivery does the rest.
			_ = m.Nak()
			return
		}
		if u.w.t != nil {
			open = append(open, u.w.t)
		}
		if u.w.err != nil {
			todo = append(todo, u)
			held = held && u.w.held
			if !u.w.held || lastErr == nil {
				lastErr = u.w.err
			}
		}
	}
	switch {
	case len(todo) == 0 && len(open) == 0:
		// Online, no device, coalesced: no window of this message's to
		// keep through a redelivery.
		_ = m.Ack()
	case len(todo) == 0:
		s.finish(ctx, m, open)
	case attempt < uint64(s.cfg.MaxAttempts):
		// Decided again later: a held window once its holder has (coalesced
		// if it woke a device, pushed if it took its claim away having
		// woken none); a failure after backoff.
		delay := backoff(attempt, s.cfg.BaseBackoff, s.cfg.MaxBackoff, retryAfter(lastErr))
		for _, u := range users {
			t := u.w.t
			switch {
			case t == nil:
			case u.w.err == nil && len(t.st.Sent) == 0:
				// Done, having woken nobody (another member of a group
				// message is what is tried again): its window is not
				// held for that member's sake, or the user's next
				// messages would wait on it.
				if err := t.close(ctx, s.cfg.Window); err != nil {
					s.log.Warn("closing the claim failed", "user", t.user, "err", err)
				}
			default:
				if err := t.save(ctx, s.hold(delay)); err != nil {
					s.log.Warn("extending the claim failed", "user", t.user, "err", err)
				}
			}
		}
		if !held {
			s.counters.retried.Add(1)
			s.log.Info("will retry", "subject", subject, "attempt", attempt, "delay", delay, "err", lastErr)
		}
		nakCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		_ = contract.ThroughReconnect(nakCtx, func() error { return m.NakWithDelay(delay) })
		cancel()
	default:
		s.giveUp(ctx, m, attempt, subject, todo, open, lastErr)
	}
}

// finish acks the message, then closes each user's part of the window:
// a claim lives one window from now. In that order: until the ack is
// confirmed the message may come again, after the ack wait, which can be
// longer than a window, and must then find the claim with every device
// done; an instance that dies between the two leaves the claim its longer
// hold.
func (s *Service) finish(ctx context.Context, m jetstream.Msg, open []*ticket) {
	if err := contract.ThroughReconnect(ctx, func() error { return m.DoubleAck(ctx) }); err != nil {
		// The message may come again after the ack wait; keep the claims
		// that long so that delivery finds every device done.
		s.log.Warn("ack not confirmed", "subject", m.Subject(), "err", err)
		for _, t := range open {
			_ = t.save(ctx, s.hold(0))
		}
		return
	}
	for _, t := range open {
		if err := t.close(ctx, s.cfg.Window); err != nil {
			s.log.Warn("closing the claim failed", "user", t.user, "err", err)
		}
	}
}

// giveUp dead-letters what is left to do once the attempts are spent:
// each failed device's notification, or a user's as a whole, with no
// device, when none was tried. Then m is terminated and the windows
// closed, in finish's order.
func (s *Service) giveUp(ctx context.Context, m jetstream.Msg, attempt uint64, subject string, todo []woken, open []*ticket, lastErr error) {
	for _, u := range todo {
		failed := u.w.failed
		if failed == nil {
			failed = map[string]Notification{"": u.n}
		}
		for _, d := range slices.Sorted(maps.Keys(failed)) {
			if err := deadLetter(ctx, s.js, failed[d], subject, u.w.err.Error(), attempt); err != nil {
				s.log.Error("dead-lettering failed; will retry", "subject", subject, "err", err)
				_ = m.NakWithDelay(backoff(attempt, s.cfg.BaseBackoff, s.cfg.MaxBackoff, 0))
				return
			}
			s.counters.deadLettered.Add(1)
			if u.w.t != nil && d != "" {
				u.w.t.st.Dead = append(u.w.t.st.Dead, d)
			}
		}
	}
	s.log.Warn("gave up; dead-lettered", "subject", subject, "attempts", attempt, "err", lastErr)
	_ = m.Term()
	for _, t := range open {
		if err := t.close(ctx, s.cfg.Window); err != nil {
			s.log.Warn("closing the claim failed", "user", t.user, "err", err)
		}
	}
}

// online reports whether user is online as both push paths read it, and,
// when the presence record alone does not say so, their devices. Online
// is a device the record lists with its lease, or one holding a lease the
// record does not list yet (the presence function applies changes in its
// own time): it is online all the same, and a message stored before its
// lease goes is that lease's to wake for (gone.go), not a message's push.
func (s *Service) online(ctx context.Context, user string) (bool, []string, error) {
	rec, err := contract.LoadLivePresence(ctx, s.presenceKV, user)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax) || errors.As(err, &typ):
		// An unreadable record is the presence function's to fix; better
		// a push too many than a message nobody hears about.
		s.log.Warn("unreadable presence record; treating the user as offline", "user", user, "err", err)
	case err != nil:
		return false, nil, fmt.Errorf("push: presence: %w", err)
	case rec.Online():
		return true, nil, nil
	}
	devices, err := s.devices(ctx, user)
	if err != nil {
		return false, nil, err
	}
	for _, d := range devices {
		if _, listed := rec.Devices[d]; listed {
			continue // LoadLivePresence read its lease
		}
		_, err := s.presenceKV.Get(ctx, contract.LeaseKey(user, d))
		switch {
		case err == nil:
			return true, devices, nil
		case !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted):
			return false, nil, fmt.Errorf("push: lease of %s/%s: %w", user, d, err)
		}
	}
	return false, devices, nil
}

// devices returns the names of the user's devices in the DEVICES bucket,
// sorted so every instance walks them in the same order.
func (s *Service) devices(ctx context.Context, user string) ([]string, error) {
	e, err := s.devicesKV.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("push: devices of %s: %w", user, err)
	}
	var rec contract.Devices
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("push: devices of %s: %w", user, err)
	}
	names := make([]string, 0, len(rec.Devices))
	for d := range rec.Devices {
		if protocol.ValidID(d) {
			names = append(names, d)
		}
	}
	slices.Sort(names)
	return names, nil
}

// pendingOf is pending for n's message: its INBOX sequence, or its place
// in a group's log (pendingGroup).
func (s *Service) pendingOf(ctx context.Context, n Notification, device string) (uint64, bool, error) {
	if n.Group != "" {
		return s.pendingGroup(ctx, n.User, device, n.Group, n.GSeq)
	}
	return s.pending(ctx, n.User, device, n.Seq)
}

// pending counts what waits for a device in its inbox (messages and
// receipts past its position) and reports whether the device has already
// settled seq (0: do not ask), so a device that read a message on another
// path is not woken for it.
func (s *Service) pending(ctx context.Context, user, device string, seq uint64) (uint64, bool, error) {
	n, err := s.inboxWaiting(ctx, user, device, seq)
	if errors.Is(err, errSettled) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, err
	}
	return max(1, n), false, nil // settled meanwhile, or purged: it still was news
}

// errSettled is a device whose position has passed the message asked of
// inboxWaiting.
var errSettled = errors.New("push: the device has settled the message")

// inboxWaiting counts what waits for a device in its inbox past its
// position, or returns errSettled if that has passed seq (0: do not ask).
func (s *Service) inboxWaiting(ctx context.Context, user, device string, seq uint64) (uint64, error) {
	floor, err := contract.DevicePosition(ctx, s.devicesKV, s.cursorsKV, s.inbox.CachedInfo().Created, user, device)
	if err != nil {
		return 0, fmt.Errorf("push: %w", err)
	}
	if seq > 0 && floor >= seq {
		return 0, errSettled
	}
	n, _, err := contract.Waiting(ctx, s.nc, user, floor)
	if err != nil {
		return 0, fmt.Errorf("push: %w", err)
	}
	return n, nil
}
