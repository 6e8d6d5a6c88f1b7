package gateway

import (
	"context"
	"errors"
	"strings"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Requests to the worker functions (receipts status, presence answers)
// and the settings frame.

// goCall runs fn (a request to a worker function) without blocking the
// read loop, at most maxFunctionCalls at a time per connection, so a
// client cannot pile up goroutines and requests. It reports false, having
// run nothing, when that many are in flight.
func (s *session) goCall(fn func()) bool {
	select {
	case s.calls <- struct{}{}:
	default:
		return false
	}
	go func() {
		defer func() { <-s.calls }()
		fn()
	}()
	return true
}

// refuseBusy answers a frame that found maxFunctionCalls in flight.
func (s *session) refuseBusy(id string) {
	s.sendError(protocol.ErrRateLimited, "too many requests in flight", id, 0, 100)
}

// status answers a status frame: the ticks of the message stored at seq,
// if this user sent it, from the receipts function. The message is read
// (off the read loop) to learn its sender and recipient.
//
// A status naming a group asks about a message this user sent there,
// seq being its place in the group's log (groupticks.go); a seq that is
// a member's copy of a group message gets unknown_seq. One naming an
// OUTBOX sequence asks about a message to a user homed in another region,
// named by to (remoteStatus).
func (s *session) status(seq uint64, group, to string) {
	switch {
	case group != "":
		s.groupStatus(seq, group)
		return
	case contract.IsOutboxSeq(seq):
		s.remoteStatus(seq, to)
		return
	}
	ok := s.goCall(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		defer cancel()
		rm, err := s.srv.inbox.GetMsg(ctx, seq)
		if err != nil || rm.Header.Get(contract.HdrKind) != contract.KindMsg || rm.Header.Get(contract.HdrFrom) != s.id.User ||
			rm.Header.Get(contract.HdrGroup) != "" || rm.Header.Get(contract.HdrTo) != "" {
			s.refuseFrame(protocol.TypeStatus, "", protocol.ErrUnknownSeq, "you sent no message with this seq", seq, 0)
			return
		}
		var reply contract.StatusReply
		req := contract.StatusRequest{Sender: s.id.User, Recipient: strings.TrimPrefix(rm.Subject, contract.InboxPrefix), Seq: seq}
		if err := contract.Call(ctx, s.srv.calls, contract.StatusSubject, req, &reply); err != nil {
			s.refuseFrame(protocol.TypeStatus, "", protocol.ErrUnavailable, "receipts are unavailable", seq, 0)
			return
		}
		to := make(map[string]protocol.Ticks, len(reply.Recipients))
		for u, t := range reply.Recipients {
			if protocol.ValidID(u) {
				to[u] = protocol.Ticks{Delivered: t.Delivered, Read: t.Read}
			}
		}
		s.t.Send(protocol.EncodeStatus(seq, to))
	})
	if !ok {
		s.refuseFrame(protocol.TypeStatus, "", protocol.ErrRateLimited, "too many requests in flight", seq, 100)
	}
}

// remoteStatus answers a status frame about the message this user sent
// at seq, an OUTBOX sequence, to user to, homed in another region: that
// region's receipts function finds where it landed in to's inbox and
// answers as for a message sent there (contract/xrstatus.go), through
// this region's. A send still in OUTBOX has not landed: unavailable
// (ask again), as for a group.
func (s *session) remoteStatus(seq uint64, to string) {
	if to == "" || s.srv.regions == nil {
		s.refuseFrame(protocol.TypeStatus, "", protocol.ErrUnknownSeq, "no message sent here has this seq; a message sent to another region is asked about with its recipient (to)", seq, 0)
		return
	}
	ok := s.goCall(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		defer cancel()
		home, err := s.srv.regions.home(to)
		switch {
		case errors.Is(err, errNoHome) || (err == nil && home == s.srv.regions.self):
			s.refuseFrame(protocol.TypeStatus, "", protocol.ErrUnknownSeq, "you sent this user no message with this seq", seq, 0)
			return
		case err != nil:
			s.refuseFrame(protocol.TypeStatus, "", protocol.ErrUnavailable, "the directory of home regions did not answer; ask again", seq, 0)
			return
		}
		var reply contract.StatusReply
		err = s.askElsewhere(ctx, contract.OutboxSubject(home, to),
			contract.StatusRemoteRequest{Sender: s.id.User, To: to, Seq: seq, Region: s.srv.regions.self, Home: home}, &reply)
		var fe *contract.FnError
		switch {
		case errors.Is(err, errInTransit):
			s.refuseFrame(protocol.TypeStatus, "", protocol.ErrUnavailable, err.Error(), seq, 0)
			return
		case errors.As(err, &fe) && fe.Code == contract.ErrCodeUnknownSeq:
			s.refuseFrame(protocol.TypeStatus, "", protocol.ErrUnknownSeq, "you sent this user no message with this seq", seq, 0)
			return
		case err != nil:
			s.refuseFrame(protocol.TypeStatus, "", protocol.ErrUnavailable, "receipts are unavailable", seq, 0)
			return
		}
		t := reply.Recipients[to]
		s.t.Send(protocol.EncodeStatus(seq, map[string]protocol.Ticks{to: {Delivered: t.Delivered, Read: t.Read}}))
	})
	if !ok {
		s.refuseFrame(protocol.TypeStatus, "", protocol.ErrRateLimited, "too many requests in flight", seq, 100)
	}
}

// read takes a read frame: the user has seen everything up to the message
// at seq from its sender. The message must have been delivered to this
// device and be a chat message to this user; the receipts function moves
// the user's read position in that chat and tells the sender, if the
// user's settings allow it. A read of a member's copy of a group message
// or change raises the member's read position in the group
// (groupticks.go).
func (s *session) read(seq uint64) {
	if seq > s.feed.lastSeq() {
		// A read made on the device's last connection, of a message
		// that comes again in this one, waits for it.
		switch s.feed.waitRead(seq) {
		case readHeld:
			return
		case readRefused:
			s.refuseRead(seq)
			return
		}
	}
	if !s.goCall(func() { s.readNow(seq) }) {
		s.refuseFrame(protocol.TypeRead, "", protocol.ErrRateLimited, "too many requests in flight", seq, 100)
	}
}

// readsDue makes the reads held for the backlog (feed.waitRead) whose
// messages have come again, on one goroutine that waits for a call slot
// rather than being refused: their frames were taken long ago, and a
// backlog can bring more of them due at once than a connection may have
// calls in flight. They are bounded by maxReadWait. Reads due in separate
// batches may be made in any order: a read is a position, and the
// receipts function keeps the highest.
func (s *session) readsDue(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	go func() {
		select {
		case s.calls <- struct{}{}:
		case <-s.t.Done():
			return
		}
		defer func() { <-s.calls }()
		for _, seq := range seqs {
			s.readNow(seq)
		}
	}()
}

// readNow makes the read of seq, delivered to this device: it asks the
// receipts function to move the user's read position.
func (s *session) readNow(seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
	defer cancel()
	rm, err := s.srv.inbox.GetMsg(ctx, seq)
	if err == nil && rm.Subject == contract.InboxSubject(s.id.User) && !deliverable(rm.Header, rm.Data) {
		// Skipped by the feed (malformed, stored by hand or by an
		// earlier version): never delivered, so never read.
		s.refuseFrame(protocol.TypeRead, "", protocol.ErrUnknownSeq, "no message delivered to you with this seq", seq, 0)
		return
	}
	if err == nil && rm.Subject == contract.InboxSubject(s.id.User) && rm.Header.Get(contract.HdrGroup) != "" {
		switch rm.Header.Get(contract.HdrKind) {
		case contract.KindMsg, contract.KindEvent:
			s.readGroup(ctx, seq, rm.Header)
			return
		}
	}
	if err == nil && rm.Subject == contract.InboxSubject(s.id.User) && contract.IsOwnCopy(s.id.User, rm.Header) {
		return // this user's own message: taken, and it changes nothing
	}
	if err != nil || rm.Subject != contract.InboxSubject(s.id.User) || rm.Header.Get(contract.HdrKind) != contract.KindMsg {
		s.refuseFrame(protocol.TypeRead, "", protocol.ErrUnknownSeq, "no message to you with this seq", seq, 0)
		return
	}
	req := contract.ReadRequest{Reader: s.id.User, Device: s.id.Device, Sender: rm.Header.Get(contract.HdrFrom), Seq: seq}
	req.Region, req.Origin = s.srv.regions.origin(rm.Header) // a sender homed elsewhere: regions.go
	if err := contract.Call(ctx, s.srv.calls, contract.ReadSubject, req, nil); err != nil {
		s.refuseFrame(protocol.TypeRead, "", protocol.ErrUnavailable, "read receipt not taken; resend", seq, 0)
	}
}

// settings applies a settings frame's changes (none: just asking) and
// answers with the settings stored. It runs on the read loop and waits
// for the write, so one device's settings frames are applied in the order
// sent, and a frame after one (a read, say) is judged by them; settings
// frames are limited to a few per second (SettingsRate).
func (s *session) settings(f *protocol.Frame) {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
	defer cancel()
	var set contract.Settings
	var err error
	if f.ReadReceipts == nil && f.LastSeenPrivacy == "" && f.Contacts == nil {
		set, _, err = contract.LoadSettings(ctx, s.srv.settingsKV, s.id.User)
	} else {
		set, err = contract.UpdateSettings(ctx, s.srv.settingsKV, s.id.User, func(set *contract.Settings) error {
			if f.ID != "" {
				if set.Applied[s.id.Device] == f.ID {
					return errRepeat // applied before: answered as it is now
				}
				if set.Applied == nil {
					set.Applied = map[string]string{}
				}
				set.Applied[s.id.Device] = f.ID
			}
			if f.ReadReceipts != nil {
				set.ReadReceipts = *f.ReadReceipts
			}
			if f.LastSeenPrivacy != "" {
				set.LastSeen = f.LastSeenPrivacy
			}
			if f.Contacts != nil {
				set.Contacts = dedupe(*f.Contacts)
			}
			return set.Validate(protocol.ValidID)
		})
	}
	if errors.Is(err, errRepeat) {
		set, _, err = contract.LoadSettings(ctx, s.srv.settingsKV, s.id.User)
	}
	if err != nil {
		s.sendError(protocol.ErrStoreFailed, "settings were not stored; resend", f.ID, 0, 0)
		return
	}
	s.t.Send(protocol.EncodeSettings(f.ID, set.ReadReceipts, set.LastSeen, set.Contacts))
	if f.LastSeenPrivacy != "" || f.Contacts != nil {
		// Followers see the new privacy at once, not at the user's next
		// change: the current state goes out under it. The presence
		// function is the one publisher of updates; waiting for it is
		// no business of the read loop's. Settings frames are limited
		// to a few per second, so these are few.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
			defer cancel()
			if err := contract.Call(ctx, s.srv.calls, contract.PresenceAnnounceSubject, contract.AnnounceRequest{User: s.id.User}, nil); err != nil {
				s.log.Debug("presence not announced after a privacy change", "err", err)
			}
		}()
	}
}

// errRepeat ends a settings change asked again after it was applied.
var errRepeat = errors.New("gateway: settings change applied before")

func dedupe(users []string) []string {
	seen := make(map[string]bool, len(users))
	out := make([]string, 0, len(users))
	for _, u := range users {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// refuseRead answers a read of a seq this session did not deliver.
func (s *session) refuseRead(seq uint64) {
	s.refuseFrame(protocol.TypeRead, "", protocol.ErrUnknownSeq, "no message with this seq was delivered to this device", seq, 0)
}
