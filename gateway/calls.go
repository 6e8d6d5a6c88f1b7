package gateway

import (
	"context"
	"encoding/json"
	"errors"

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

// errNotFound is a function's 404.
var errNotFound = errors.New("not found")

// callFunction makes a request to a worker function and decodes its JSON
// answer. A micro error reply (its code in a header) becomes an error.
func (s *session) callFunction(subject string, req []byte, reply any) error {
	m, err := s.srv.nc.Request(subject, req, s.srv.cfg.FunctionTimeout)
	if err != nil {
		return err
	}
	if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
		if code == "404" {
			return errNotFound
		}
		return errors.New(m.Header.Get("Nats-Service-Error"))
	}
	return json.Unmarshal(m.Data, reply)
}

// status answers a status frame: the ticks of message id that this user
// sent, from the receipts function.
func (s *session) status(id string) {
	ok := s.goCall(func() {
		req, _ := json.Marshal(contract.StatusRequest{User: s.id.User, ID: id})
		var reply contract.StatusReply
		err := s.callFunction(contract.StatusSubject, req, &reply)
		switch {
		case errors.Is(err, errNotFound):
			s.t.Send(protocol.EncodeStatus(id, nil))
		case err != nil:
			s.sendError(protocol.ErrUnavailable, "receipts are unavailable: "+err.Error(), id, 0, 0)
		default:
			to := make(map[string]protocol.Ticks, len(reply.To))
			for u, t := range reply.To {
				if t != nil {
					to[u] = protocol.Ticks{Delivered: t.Delivered, Read: t.Read}
				}
			}
			s.t.Send(protocol.EncodeStatus(id, to))
		}
	})
	if !ok {
		s.refuseBusy(id)
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
	if err != nil {
		s.sendError(protocol.ErrStoreFailed, "settings were not stored; resend", "", 0, 0)
		return
	}
	s.t.Send(protocol.EncodeSettings(set.ReadReceipts, set.LastSeen, set.Contacts))
	if f.LastSeenPrivacy != "" || f.Contacts != nil {
		// Followers see the new privacy at once, not at the user's next
		// change: the current state goes out under it. The presence
		// function is the one publisher of updates; waiting for it is
		// no business of the read loop's. Settings frames are limited
		// to a few per second, so these are few.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
			defer cancel()
			if err := contract.Call(ctx, s.srv.nc, contract.PresenceAnnounceSubject, contract.AnnounceRequest{User: s.id.User}, nil); err != nil {
				s.log.Debug("presence not announced after a privacy change", "err", err)
			}
		}()
	}
}

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
