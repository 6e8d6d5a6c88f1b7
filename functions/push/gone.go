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
// expired by the server after a gateway died) nothing else would wake the
// device for it, and the user would hear of it only on opening the app.
//
// So the function reads every lease change too, through its second
// durable (push-gone on KV_PRESENCE, headers only, shared by the
// instances). A lease taken or refreshed is acked. A lease gone, of a
// user with no other device online, sends the newest chat message waiting
// for any of the user's devices down the push path as if it had just
// landed: the same window and claim, so a device already woken for it, or
// past it, is not woken again, and a message that landed once the user
// was offline was pushed on its own. It waits until the message's own
// delivery to the function is decided (the push durable's ack floor has
// passed it): that delivery may have found the user online a moment
// before the lease went, and deciding both at once could post a device
// twice. Nothing waiting: acked. A device that merely went while its
// user has read everything costs a read of the user's devices, their
// positions and the inbox's newest message.

// goneScanMax bounds how much of an inbox a lease gone reads looking for
// the newest chat message past receipts and own copies; past it, the
// newest one found is the notification's.
const goneScanMax = 4096

// handleGone is the path of one lease change.
func (s *Service) handleGone(m jetstream.Msg) {
	if s.stopping.Load() {
		_ = m.Nak()
		return
	}
	user, ok := leaseUser(m.Subject())
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
	ctx := context.Background()
	n, found, err := s.newestWaiting(ctx, user)
	switch {
	case err != nil && meta.NumDelivered < uint64(s.cfg.MaxAttempts):
		s.counters.retried.Add(1)
		s.log.Info("will retry a lease gone", "user", user, "err", err)
		_ = m.NakWithDelay(backoff(meta.NumDelivered, s.cfg.BaseBackoff, s.cfg.MaxBackoff, 0))
		return
	case err != nil:
		// Nothing to dead-letter: no notification was made.
		s.log.Warn("gave up on a lease gone", "user", user, "err", err)
		_ = m.Term()
		return
	case !found:
		_ = m.Ack()
		return
	}
	if done, err := s.settled(ctx, n.Seq); err != nil || !done {
		// The message's own delivery is still being decided (or it
		// cannot be told): decided after it, never beside it, as two
		// attempts at one message on one claim could each post a device.
		if meta.NumDelivered >= uint64(s.cfg.MaxAttempts) {
			s.log.Warn("gave up on a lease gone: its message is still being decided", "user", user, "seq", n.Seq, "err", err)
			_ = m.Term()
			return
		}
		s.counters.retried.Add(1)
		_ = m.NakWithDelay(backoff(meta.NumDelivered, s.cfg.BaseBackoff, s.cfg.MaxBackoff, 0))
		return
	}
	s.counters.gone.Add(1)
	s.notify(m, meta.NumDelivered, contract.InboxSubject(user), n)
}

// settled reports whether the push durable has acked every INBOX message
// up to seq: their push is decided.
func (s *Service) settled(ctx context.Context, seq uint64) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	c, err := s.js.Consumer(ctx, contract.Inbox, "push")
	if err != nil {
		return false, fmt.Errorf("push: %w", err)
	}
	return c.CachedInfo().AckFloor.Stream >= seq, nil
}

// leaseUser is the user of a lease key's subject,
// $KV.PRESENCE.lease.<user>.<device>.
func leaseUser(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, contract.KVSubject(contract.PresenceKV, "lease."))
	user, device, cut := strings.Cut(rest, ".")
	return user, ok && cut && protocol.ValidID(user) && protocol.ValidID(device)
}

// newestWaiting finds the newest chat message in user's inbox past the
// lowest position of their devices, not their own: what a device gone
// may not have had. found is false when nothing is waiting, the user has
// no device, or only receipts and own copies wait.
func (s *Service) newestWaiting(ctx context.Context, user string) (Notification, bool, error) {
	devices, err := s.devices(ctx, user)
	if err != nil || len(devices) == 0 {
		return Notification{}, false, err
	}
	floor := uint64(0)
	for i, d := range devices {
		p, err := contract.DevicePosition(ctx, s.devicesKV, s.cursorsKV, s.inbox.CachedInfo().Created, user, d)
		if err != nil {
			return Notification{}, false, fmt.Errorf("push: %w", err)
		}
		if i == 0 || p < floor {
			floor = p
		}
	}
	subject := contract.InboxSubject(user)
	last, err := contract.GetMsg(ctx, s.nc, contract.Inbox, 0, subject)
	switch {
	case errors.Is(err, contract.ErrNoMsg):
		return Notification{}, false, nil
	case err != nil:
		return Notification{}, false, fmt.Errorf("push: inbox of %s: %w", user, err)
	case last.Sequence <= floor:
		return Notification{}, false, nil
	}
	if h, err := nats.DecodeHeadersMsg(last.Header); err == nil {
		if n, ok := waitingChat(user, last.Sequence, h); ok {
			return n, true, nil
		}
	}
	// The newest is a receipt or an own copy: read from the floor on.
	var newest Notification
	found := false
	err = scanInbox(ctx, s.nc, user, floor+1, last.Sequence, func(seq uint64, h nats.Header) {
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
// sequence to to each, with batched direct gets of up to 256, reading at
// most goneScanMax.
func scanInbox(ctx context.Context, nc *nats.Conn, user string, from, to uint64, each func(seq uint64, h nats.Header)) error {
	ctx, cancel := context.WithTimeout(ctx, contract.WaitingTimeout)
	defer cancel()
	sub, err := nc.SubscribeSync(nc.NewRespInbox())
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	read := 0
	for from <= to && read < goneScanMax {
		req, _ := json.Marshal(map[string]any{"seq": from, "next_by_subj": contract.InboxSubject(user), "batch": 256})
		if err := nc.PublishRequest(contract.DirectGetSubject(contract.Inbox), sub.Subject, req); err != nil {
			return err
		}
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
				if !more {
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
