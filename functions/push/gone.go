package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Devices that go with a message waiting.
//
// A message that lands while its user is online wakes nobody (notify).
// But online means a lease, and a lease outlives its connection: a phone
// whose network went away keeps it until the gateway's pong timeout ends
// the session, and a message stored meanwhile went to a socket nobody
// reads; one stored while the session was ending found the lease too.
// Once the lease goes (deleted by the gateway at the session's end, or
// expired by the server after its gateway died) nothing else would wake
// the device for it, and its user would hear of it only on opening the
// app.
//
// So the function reads the leases' changes too, through its second
// durable (push-gone on KV_PRESENCE, headers only, shared by the
// instances, with worker slots of their own). A lease taken or refreshed
// is acked. A lease gone, of a user left with no device online (as
// notify sees it: the presence record, or a lease the record does not
// list yet), wakes that device, and only that one, for the newest chat
// message past its position, if it was stored before the lease went: a newer one is the
// message's own path's, which finds the user offline. Not if the device
// was woken within the user's window already: the user's claim lists it,
// or a wake of its own for this message or a newer one. A wake holds key
// <user>=<device> in PUSH ({lease, seq, sent}), created before the
// webhook call, so two instances never both make it, marked sent after
// it, and kept one window past the change's ack, as a message's claim is;
// a message's push leaves out a device whose key says sent, as it leaves
// out one its claim lists. A key another change left unsent (its retry
// will not come: the lease was put again since, and the bucket keeps a
// key's latest change only) or sent for an older message is taken over.
// A device that acked everything before it went costs a read of the
// presence record and leases, its position, and the inbox's newest
// message.
//
// Only the device that went: the user's other devices, offline all along,
// were skipped by the same rule (no push while the user is online) and
// are left to it, and a device behind for good (a phone no longer used)
// is not woken again each time another goes.
//
// Limits: a message stored just before the lease went, whose own turn in
// the push durable comes only after it went (a backlog there) and at the
// same moment as the lease's, is decided by both paths at once, and its
// device can be posted twice; so can a device to which a message comes
// while its wake for a lease gone is being posted (a webhook call's
// time: the key says sent only after it), or that comes back and goes
// again within that time (the newer change takes the key over). A lease
// that expired (its session's delete lost to a refresh) is told by the
// server's marker, which can be written a moment after the key reads as
// gone: a message stored in that moment is decided by both paths too.
// And on a cluster the inbox's leader and the leases' may be two servers: a
// message stored within their clocks' difference of the lease going can
// be taken for one stored after it, and then woken for by neither path.

// goneScanMax bounds how much of an inbox a lease gone reads looking for
// the newest chat message before it past receipts and own copies: past
// it, the device is woken for the newest found (its pending count is
// still the whole backlog).
const goneScanMax = 4096

// goneMark is the value of key <user>=<device> in the PUSH bucket.
type goneMark struct {
	Lease uint64 `json:"lease"` // the lease change's sequence in KV_PRESENCE
	Seq   uint64 `json:"seq"`   // the message the device is woken for
	// Group is set when that message is a group's read from its log: Seq
	// is then its place in GROUPS.
	Group string `json:"group,omitempty"`
	Sent  bool   `json:"sent"` // posted
	// Dead: the notification was dead-lettered. The change is done, but
	// nobody was woken: it opens no window.
	Dead bool `json:"dead,omitempty"`
}

// goneKey is a device's key in PUSH for a lease gone. "=" is in no id, so
// no two devices share it, and it is one token of the bucket's subjects.
func goneKey(user, device string) string { return user + "=" + device }

// handleGone is the path of one lease change.
func (s *Service) handleGone(m jetstream.Msg) {
	if s.stopping.Load() {
		_ = m.Nak()
		return
	}
	user, device, ok := leaseOf(m.Subject())
	if !ok {
		s.log.Error("not a lease", "subject", m.Subject())
		_ = m.Term()
		return
	}
	h := m.Headers()
	if h.Get("KV-Operation") == "" && h.Get(jetstream.MarkerReasonHeader) == "" {
		_ = m.Ack() // taken or refreshed
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		s.log.Error("lease change without metadata", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	attempt := meta.NumDelivered
	if attempt == 1 {
		s.counters.leasesGone.Add(1)
	}
	ctx := context.Background()
	// Most leases gone in a gateway's restart find their user back on
	// another gateway already: a read or two, nothing else.
	if online, _, err := s.online(ctx, user); err == nil && online {
		_ = m.Ack()
		return
	}
	n, found, err := s.waitingFor(ctx, user, device, meta.Timestamp)
	var rev uint64
	if err == nil && found {
		rev, err = s.takeWake(ctx, user, device, meta.Sequence.Stream, n.ref())
		found = rev > 0
	}
	switch {
	case err != nil && attempt < uint64(s.cfg.MaxAttempts):
		s.counters.retried.Add(1)
		s.log.Info("will retry a lease gone", "user", user, "device", device, "err", err)
		_ = m.NakWithDelay(backoff(attempt, s.cfg.BaseBackoff, s.cfg.MaxBackoff, 0))
		return
	case err != nil:
		// No notification was made: there is nothing to dead-letter.
		s.counters.goneGaveUp.Add(1)
		s.log.Warn("gave up on a lease gone", "user", user, "device", device, "err", err)
		_ = m.Term()
		return
	case !found:
		_ = m.Ack()
		return
	}
	s.wake(ctx, m, attempt, meta.Sequence.Stream, rev, n, device)
}

// takeWake takes the device's wake key for lease change lease and
// message seq, and returns its revision, or 0 when there is nothing to
// do: the device was woken within the user's window already (by a
// message's push, or a lease gone of its own for this message or a newer
// one), a newer change of the device has the key, or this change's wake
// is done. Another change's key that woke nobody (its change will not
// come again: the lease was put again since) or woke the device for an
// older message is taken over.
func (s *Service) takeWake(ctx context.Context, user, device string, lease uint64, r ref) (uint64, error) {
	e, err := s.pushKV.Get(ctx, user)
	switch {
	case err == nil:
		var c claim
		if json.Unmarshal(e.Value(), &c) == nil && c.done(device) {
			s.counters.coalesced.Add(1)
			return 0, nil
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, fmt.Errorf("push: coalescing key: %w", err)
	}
	key := goneKey(user, device)
	b, _ := json.Marshal(goneMark{Lease: lease, Seq: r.seq, Group: r.group})
	for range 5 {
		rev, err := s.pushKV.Create(ctx, key, b, jetstream.KeyTTL(ttlSeconds(s.hold(0))))
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("push: wake key: %w", err)
		}
		e, err := s.pushKV.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired between the two
		}
		if err != nil {
			return 0, fmt.Errorf("push: wake key: %w", err)
		}
		var mark goneMark
		if json.Unmarshal(e.Value(), &mark) == nil {
			switch {
			case mark.Lease == lease && (mark.Sent || mark.Dead):
				return 0, nil // a later delivery of this change, done
			case mark.Lease == lease:
				// A later delivery of this change: its key lives on
				// from now.
				return s.writeWake(ctx, key, e.Value(), e.Revision(), s.hold(0))
			case mark.Lease > lease:
				return 0, nil // a newer change of the device has it
			case mark.Sent && mark.Group == r.group && mark.Seq >= r.seq:
				s.counters.coalesced.Add(1)
				return 0, nil
			}
		}
		rev, err = s.writeWake(ctx, key, b, e.Revision(), s.hold(0))
		if err == nil {
			return rev, nil
		}
		if !contract.IsConflict(err) {
			return 0, fmt.Errorf("push: wake key: %w", err)
		}
	}
	return 0, errors.New("push: wake key too contended")
}

// writeWake writes a wake key's value if the key is still at revision
// rev, with a TTL (KeyValue.Update cannot set one).
func (s *Service) writeWake(ctx context.Context, key string, b []byte, rev uint64, ttl time.Duration) (uint64, error) {
	m := &nats.Msg{Subject: contract.KVSubject(contract.PushKV, key), Data: b}
	ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttlSeconds(ttl)))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// wokenByGone reports whether device was woken by a lease gone of its
// own within the window (its wake key says sent; a dead-lettered one
// woke nobody): a message's push leaves it out, as it leaves out a
// device its window's claim lists.
func (s *Service) wokenByGone(ctx context.Context, user, device string) bool {
	e, err := s.pushKV.Get(ctx, goneKey(user, device))
	if err != nil {
		return false // none, or unreadable: better a push too many
	}
	var mark goneMark
	return json.Unmarshal(e.Value(), &mark) == nil && mark.Sent
}

// wake posts the device's notification for n and records it: sent or
// dead-lettered, the wake's key (at revision rev) is marked and the
// change acked, and the key then lives one window; a failure the webhook
// may get over is tried again with backoff, the key kept unsent.
func (s *Service) wake(ctx context.Context, m jetstream.Msg, attempt, lease, rev uint64, n Notification, device string) {
	subject := contract.InboxSubject(n.User)
	key := goneKey(n.User, device)
	dn := n
	dn.Device = device
	_ = m.InProgress() // slow reads must not hand the change to another instance
	pending, delivered, err := s.pendingOf(ctx, n, device)
	if err == nil && delivered {
		_ = s.pushKV.Delete(ctx, key, jetstream.LastRevision(rev))
		_ = m.Ack()
		return
	}
	if err == nil {
		dn.Pending = pending
		_ = m.InProgress()
		err = s.hook.post(ctx, dn)
	}
	dead := false
	switch {
	case err == nil:
		s.counters.gone.Add(1)
		s.counters.pushed.Add(1)
		s.log.Debug("pushed for a lease gone", "user", n.User, "device", device, "seq", n.Seq, "pending", pending)
	case isPermanent(err) || attempt >= uint64(s.cfg.MaxAttempts):
		if dlErr := deadLetter(ctx, s.js, dn, subject, err.Error(), attempt); dlErr != nil {
			s.log.Error("dead-lettering failed; will retry", "user", n.User, "device", device, "err", dlErr)
			_ = m.NakWithDelay(backoff(attempt, s.cfg.BaseBackoff, s.cfg.MaxBackoff, 0))
			return
		}
		s.counters.deadLettered.Add(1)
		s.log.Warn("wake for a lease gone dead-lettered", "user", n.User, "device", device, "seq", n.Seq, "err", err)
		dead = true
	default:
		delay := backoff(attempt, s.cfg.BaseBackoff, s.cfg.MaxBackoff, retryAfter(err))
		s.counters.retried.Add(1)
		s.log.Info("will retry a wake for a lease gone", "user", n.User, "device", device, "attempt", attempt, "delay", delay, "err", err)
		_ = m.NakWithDelay(delay) // the key stays this change's: the retry finds it unsent
		return
	}
	// Marked before the ack, living past the ack wait: a delivery after
	// a lost ack finds it done. Then one window, as a message's claim.
	r := n.ref()
	b, _ := json.Marshal(goneMark{Lease: lease, Seq: r.seq, Group: r.group, Sent: !dead, Dead: dead})
	err = contract.ThroughReconnect(ctx, func() error {
		var err error
		rev, err = s.writeWake(ctx, key, b, rev, s.hold(0))
		return err
	})
	if err != nil {
		s.log.Warn("recording a wake failed", "user", n.User, "device", device, "err", err)
	}
	if err := contract.ThroughReconnect(ctx, func() error { return m.DoubleAck(ctx) }); err != nil || rev == 0 {
		return
	}
	if _, err := s.writeWake(ctx, key, b, rev, s.cfg.Window); err != nil && !contract.IsConflict(err) {
		s.log.Warn("closing a wake's window failed", "user", n.User, "device", device, "err", err)
	}
}

// leaseOf is the user and device of a lease key's subject,
// $KV.PRESENCE.lease.<user>.<device>.
func leaseOf(subject string) (user, device string, ok bool) {
	rest, ok := strings.CutPrefix(subject, contract.KVSubject(contract.PresenceKV, "lease."))
	user, device, cut := strings.Cut(rest, ".")
	return user, device, ok && cut && protocol.ValidID(user) && protocol.ValidID(device)
}

// waitingFor finds the newest chat message from someone else past the
// device's position, if it was stored by before, in its inbox or in the
// logs of the groups it reads from there: a newer one is its own path's,
// which finds the user offline and wakes the device (or, in the user's
// window, has woken it). found is false when nothing of the kind waits,
// or what waits is not this path's.
func (s *Service) waitingFor(ctx context.Context, user, device string, before time.Time) (Notification, bool, error) {
	newest, stored, found, err := s.waitingInInbox(ctx, user, device, before)
	if err != nil {
		return Notification{}, false, err
	}
	logged, at, inLog, err := s.waitingInLogs(ctx, user, device, before)
	if err != nil {
		return Notification{}, false, err
	}
	if inLog && (!found || at.After(stored)) {
		return logged, true, nil
	}
	return newest, found, nil
}

// waitingInInbox is waitingFor in the device's inbox, with when the
// message was stored.
func (s *Service) waitingInInbox(ctx context.Context, user, device string, before time.Time) (Notification, time.Time, bool, error) {
	pos, err := contract.DevicePosition(ctx, s.devicesKV, s.cursorsKV, s.inbox.CachedInfo().Created, user, device)
	if err != nil {
		return Notification{}, time.Time{}, false, fmt.Errorf("push: %w", err)
	}
	last, err := contract.GetMsg(ctx, s.nc, contract.Inbox, 0, contract.InboxSubject(user))
	switch {
	case errors.Is(err, contract.ErrNoMsg):
		return Notification{}, time.Time{}, false, nil
	case err != nil:
		return Notification{}, time.Time{}, false, fmt.Errorf("push: inbox of %s: %w", user, err)
	case last.Sequence <= pos:
		return Notification{}, time.Time{}, false, nil
	}
	newest, stored, found := Notification{}, last.Time, false
	if h, err := nats.DecodeHeadersMsg(last.Header); err == nil {
		newest, found = waitingChat(user, last.Sequence, h)
	}
	if !found {
		// The newest is a receipt or an own copy: read from the
		// position on.
		var reached uint64
		reached, err = scanInbox(ctx, s.nc, user, pos+1, last.Sequence, func(seq uint64, h nats.Header) {
			if n, ok := waitingChat(user, seq, h); ok {
				newest, found = n, true
				stored, _ = time.Parse(time.RFC3339Nano, h.Get(contract.HdrStamp))
			}
		})
		if err == nil && reached < last.Sequence {
			// Direct gets may be answered by a replica, one behind the
			// leader that had the newest: read again later.
			err = fmt.Errorf("push: inbox of %s read up to %d of %d", user, reached, last.Sequence)
		}
	}
	if err != nil || !found || stored.After(before) {
		return Notification{}, time.Time{}, false, err
	}
	return newest, stored, true, nil
}

// waitingInLogs finds, among the groups the device reads from their logs
// (its places in CURSORS), the newest group's last message, from someone
// else, past the device's place there and stored by before, with when it
// was stored: one batched direct get of each group's last message. A
// group whose last message is the user's own is passed: they were there.
func (s *Service) waitingInLogs(ctx context.Context, user, device string, before time.Time) (Notification, time.Time, bool, error) {
	e, err := s.cursorsKV.Get(ctx, contract.GroupCursorKey(user, device))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Notification{}, time.Time{}, false, nil
	}
	if err != nil {
		return Notification{}, time.Time{}, false, fmt.Errorf("push: places of %s/%s: %w", user, device, err)
	}
	places, err := contract.ParseGroupCursors(e.Value())
	if err != nil {
		return Notification{}, time.Time{}, false, nil // the gateway's to fix; nothing to go by
	}
	var subjects []string
	for gid, c := range places {
		if c.Out == 0 && protocol.ValidID(gid) && len(subjects) < maxLoggedGroups {
			subjects = append(subjects, contract.GroupMsgSubject(gid))
		}
	}
	var newest Notification
	var stored time.Time
	found := false
	err = contract.LastPerSubject(ctx, s.nc, contract.GroupsStream, subjects, 0, len(subjects)+1, func(m *nats.Msg) error {
		seq, err := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
		if err != nil {
			return nil
		}
		n, err := fromGroup(m.Header.Get(contract.HdrSubject), m.Header, seq)
		at, terr := time.Parse(time.RFC3339Nano, m.Header.Get(contract.HdrStamp))
		switch {
		case err != nil, terr != nil, n.From == user, seq <= places[n.Group].At, at.After(before):
		case !found || at.After(stored):
			n.User = user
			newest, stored, found = n, at, true
		}
		return nil
	})
	if err != nil {
		return Notification{}, time.Time{}, false, fmt.Errorf("push: logs of %s/%s: %w", user, device, err)
	}
	return newest, stored, found, nil
}

// maxLoggedGroups bounds the groups a lease gone looks at in one read (the
// server's multi_last bound).
const maxLoggedGroups = 1024

// waitingChat makes the notification of a message stored at seq with
// headers h if it is a chat message from someone else.
func waitingChat(user string, seq uint64, h nats.Header) (Notification, bool) {
	if h.Get(contract.HdrKind) != contract.KindMsg || contract.IsOwnCopy(user, h) {
		return Notification{}, false
	}
	n, err := fromInbox(contract.InboxSubject(user), h, seq)
	return n, err == nil
}

// scanInbox passes each message of user's inbox from sequence from up to
// sequence to to each, in order, with batched direct gets of up to 256,
// reading at most goneScanMax. It returns how far it has read: to, or
// past it, unless the stream answering ended before (or it stopped at
// goneScanMax, which counts as to).
func scanInbox(ctx context.Context, nc *nats.Conn, user string, from, to uint64, each func(seq uint64, h nats.Header)) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, contract.WaitingTimeout)
	defer cancel()
	sub, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	for read := 0; from <= to; {
		if read >= goneScanMax {
			return to, nil
		}
		req, _ := json.Marshal(map[string]any{"seq": from, "next_by_subj": contract.InboxSubject(user), "batch": min(256, goneScanMax-read)})
		if err := nc.PublishRequest(contract.DirectGetSubject(contract.Inbox), sub.Subject, req); err != nil {
			return 0, err
		}
		start := from
		for {
			m, err := sub.NextMsgWithContext(ctx)
			if err != nil {
				return 0, fmt.Errorf("push: inbox of %s: %w", user, err)
			}
			seq, end, more, err := contract.DirectAnswer(m)
			if err != nil {
				return 0, fmt.Errorf("push: inbox of %s: %w", user, err)
			}
			if end {
				if !more || from == start {
					return from - 1, nil
				}
				break
			}
			read++
			from = seq + 1
			if seq <= to {
				each(seq, m.Header)
			}
		}
	}
	return from - 1, nil
}
