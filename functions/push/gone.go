package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

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
// instances). A lease taken or refreshed is acked. A lease gone, of a
// user left with no device online, wakes that device, and only that one,
// for what waits for it: the message of the user's claim if the device
// is past neither it nor done in it (an attempt, the message's own or an
// earlier delivery of this change, that has still to wake it), otherwise
// the newest chat message past the device's position. It goes down the
// push path with that message's claim, so the device is woken once per
// window however many attempts come to it at once (the reservations in
// coalesce.go), and a device that acked everything before going costs a
// read of the presence record and leases, the device's position and the
// inbox's newest message.
//
// Only the device that went: the user's other devices, offline all along,
// were skipped by the same rule (no push while the user is online) and
// are left to it, and a device behind for good (a phone no longer used)
// is not woken again each time another goes.

// goneScanMax bounds how much of an inbox a lease gone reads looking for
// the newest chat message past receipts and own copies: past it, the
// device is woken for the newest found (its pending count is still the
// whole backlog).
const goneScanMax = 4096

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
	s.counters.leasesGone.Add(1)
	ctx := context.Background()
	// Most leases gone in a gateway's restart find their user back on
	// another gateway already: one read, nothing else.
	if rec, err := contract.LoadLivePresence(ctx, s.presenceKV, user); err == nil && rec.Online() {
		_ = m.Ack()
		return
	}
	n, found, err := s.waitingFor(ctx, user, device)
	switch {
	case err != nil && meta.NumDelivered < uint64(s.cfg.MaxAttempts):
		s.counters.retried.Add(1)
		s.log.Info("will retry a lease gone", "user", user, "device", device, "err", err)
		_ = m.NakWithDelay(backoff(meta.NumDelivered, s.cfg.BaseBackoff, s.cfg.MaxBackoff, 0))
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
	s.counters.gone.Add(1)
	s.notify(m, meta.NumDelivered, contract.InboxSubject(user), n, device)
}

// leaseOf is the user and device of a lease key's subject,
// $KV.PRESENCE.lease.<user>.<device>.
func leaseOf(subject string) (user, device string, ok bool) {
	rest, ok := strings.CutPrefix(subject, contract.KVSubject(contract.PresenceKV, "lease."))
	user, device, cut := strings.Cut(rest, ".")
	return user, device, ok && cut && protocol.ValidID(user) && protocol.ValidID(device)
}

// waitingFor finds the message to wake device for: its user's claim's, if
// the device is past neither it nor done in it, else the newest chat
// message from someone else past the device's position. found is false
// when nothing of the kind waits.
func (s *Service) waitingFor(ctx context.Context, user, device string) (Notification, bool, error) {
	pos, err := contract.DevicePosition(ctx, s.devicesKV, s.cursorsKV, s.inbox.CachedInfo().Created, user, device)
	if err != nil {
		return Notification{}, false, fmt.Errorf("push: %w", err)
	}
	subject := contract.InboxSubject(user)
	e, err := s.pushKV.Get(ctx, user)
	switch {
	case err == nil:
		var c claim
		if json.Unmarshal(e.Value(), &c) == nil && c.Seq > pos && !c.done(device) {
			sm, err := contract.GetMsg(ctx, s.nc, contract.Inbox, c.Seq, "")
			switch {
			case err == nil && sm.Subject == subject:
				if h, err := nats.DecodeHeadersMsg(sm.Header); err == nil {
					if n, ok := waitingChat(user, c.Seq, h); ok {
						return n, true, nil
					}
				}
			case err != nil && !errors.Is(err, contract.ErrNoMsg):
				return Notification{}, false, fmt.Errorf("push: inbox: %w", err)
			}
			// Gone from the stream: what waits is found below.
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return Notification{}, false, fmt.Errorf("push: coalescing key: %w", err)
	}
	last, err := contract.GetMsg(ctx, s.nc, contract.Inbox, 0, subject)
	switch {
	case errors.Is(err, contract.ErrNoMsg):
		return Notification{}, false, nil
	case err != nil:
		return Notification{}, false, fmt.Errorf("push: inbox of %s: %w", user, err)
	case last.Sequence <= pos:
		return Notification{}, false, nil
	}
	if h, err := nats.DecodeHeadersMsg(last.Header); err == nil {
		if n, ok := waitingChat(user, last.Sequence, h); ok {
			return n, true, nil
		}
	}
	// The newest is a receipt or an own copy: read from the position on.
	var newest Notification
	found := false
	err = scanInbox(ctx, s.nc, user, pos+1, last.Sequence, func(seq uint64, h nats.Header) {
		if n, ok := waitingChat(user, seq, h); ok {
			newest, found = n, true
		}
	})
	return newest, found, err
}

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
// reading at most goneScanMax.
func scanInbox(ctx context.Context, nc *nats.Conn, user string, from, to uint64, each func(seq uint64, h nats.Header)) error {
	ctx, cancel := context.WithTimeout(ctx, contract.WaitingTimeout)
	defer cancel()
	sub, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	for read := 0; from <= to && read < goneScanMax; {
		req, _ := json.Marshal(map[string]any{"seq": from, "next_by_subj": contract.InboxSubject(user), "batch": min(256, goneScanMax-read)})
		if err := nc.PublishRequest(contract.DirectGetSubject(contract.Inbox), sub.Subject, req); err != nil {
			return err
		}
		start := from
		for {
			m, err := sub.NextMsgWithContext(ctx)
			if err != nil {
				return fmt.Errorf("push: inbox of %s: %w", user, err)
			}
			seq, end, more, err := contract.DirectAnswer(m)
			if err != nil {
				return fmt.Errorf("push: inbox of %s: %w", user, err)
			}
			if end {
				if !more || from == start {
					return nil
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
	return nil
}
