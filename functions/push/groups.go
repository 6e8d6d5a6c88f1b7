package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Messages of groups whose members read the group's log
// (docs/GROUP-LOG.md) are in no member's inbox, so the durable push-groups
// on GROUPS (messages only) reads them. A message of a group still on
// copies is acked at once: each copy is its own INBOX message, pushed as
// a 1:1 message is. For a log group, each member as of the message (the
// group's last change stored before it), the sender aside, is one user
// of the same path as a chat message's recipient: online, no device,
// the same PUSH window coalescing their group and 1:1 messages, each
// device skipped once its place in the group's log has passed the
// message. A member homed in another region has no devices in this one
// and is skipped: that region's push wakes them for their copy.

// groupWorkers is how many members of one group message are worked on at
// once: each is a few round trips, a webhook call for the offline.
const groupWorkers = 16

// handleGroup decides one GROUPS message, ending in ack, nak or term
// like handle.
func (s *Service) handleGroup(m jetstream.Msg) {
	if s.stopping.Load() {
		_ = m.Nak()
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		s.log.Error("group message without metadata", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	gseq := meta.Sequence.Stream
	n, err := fromGroup(m.Subject(), m.Headers(), gseq)
	if err != nil {
		s.reject(m, meta, n, err)
		return
	}
	ctx := context.Background()
	g, err := s.groupAt(ctx, n.Group, gseq)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax) || errors.As(err, &typ):
		// The groups function skips an unreadable change too: nobody
		// reads this group's messages by it.
		s.log.Error("unreadable group change; message not pushed", "group", n.Group, "gseq", gseq, "err", err)
		_ = m.Term()
		return
	case err != nil:
		// Nobody to file a dead letter under yet: tried again, with
		// backoff, until the log can be read.
		s.log.Warn("reading the group failed; will retry", "group", n.Group, "gseq", gseq, "err", err)
		_ = m.NakWithDelay(backoff(meta.NumDelivered, s.cfg.BaseBackoff, s.cfg.MaxBackoff, 0))
		return
	case !g.Log, !g.IsMember(n.From):
		// On copies: each copy is pushed from INBOX. From a non-member:
		// the groups function takes it out of the log; nobody gets it.
		s.counters.ignored.Add(1)
		_ = m.Ack()
		return
	}
	members := make([]string, 0, len(g.Members))
	for u := range g.Members {
		if u != n.From && protocol.ValidID(u) {
			members = append(members, u)
		}
	}
	slices.Sort(members)
	users := make([]woken, len(members))
	sem := make(chan struct{}, groupWorkers)
	var wg sync.WaitGroup
	for i, u := range members {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			un := n
			un.User = u
			users[i] = woken{un, s.wakeUser(ctx, m, meta.NumDelivered, un)}
		}()
	}
	wg.Wait()
	s.settle(m, meta.NumDelivered, m.Subject(), users)
}

// fromGroup reads a stored group message's subject
// (group.<partition>.<group>.m) and headers into the notification its
// members get, User left empty. On error the notification holds what
// could be read, filed under an unknown user.
func fromGroup(subject string, h nats.Header, gseq uint64) (Notification, error) {
	n := Notification{User: "unknown", Group: "unknown", GSeq: gseq}
	tok := strings.Split(subject, ".")
	if len(tok) != 4 || tok[0]+"." != contract.GroupsPrefix || tok[3] != "m" || !protocol.ValidID(tok[2]) {
		return n, fmt.Errorf("%w: subject %q does not name a group's message", ErrMalformed, subject)
	}
	n.Group = tok[2]
	if err := n.readHeaders(h); err != nil {
		return n, err
	}
	n.User = ""
	return n, nil
}

// groupChange is what the push function reads of a change in a group's
// log (contract.GroupEventSubject): the change before it, and the group
// as it left it.
type groupChange struct {
	Prev  uint64               `json:"prev"`
	Group contract.GroupRecord `json:"group"`
}

// groupAt is group gid as of its last change stored before seq (no
// members if none), read from the log through the stream's leader,
// walking back from the latest change: usually that one.
func (s *Service) groupAt(ctx context.Context, gid string, seq uint64) (contract.GroupRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	sm, err := contract.GetMsg(ctx, s.nc, contract.GroupsStream, 0, contract.GroupEventSubject(gid))
	for err == nil {
		var c groupChange
		if err := json.Unmarshal(sm.Data, &c); err != nil {
			return contract.GroupRecord{}, fmt.Errorf("push: change %d of group %s: %w", sm.Sequence, gid, err)
		}
		if sm.Sequence < seq {
			return c.Group, nil
		}
		if c.Prev == 0 {
			break
		}
		sm, err = contract.GetMsg(ctx, s.nc, contract.GroupsStream, c.Prev, "")
	}
	if err != nil && !errors.Is(err, contract.ErrNoMsg) {
		return contract.GroupRecord{}, fmt.Errorf("push: group %s: %w", gid, err)
	}
	return contract.GroupRecord{}, nil
}

// pendingGroup is pending for the message of group gid at gseq: whether
// the device's place in the group's log has passed it, and what waits for
// the device, in its inbox and in the group's log past its place (the
// message alone when it has no place there yet).
func (s *Service) pendingGroup(ctx context.Context, user, device, gid string, gseq uint64) (uint64, bool, error) {
	var at uint64
	e, err := s.cursorsKV.Get(ctx, contract.GroupCursorKey(user, device))
	switch {
	case err == nil:
		// A malformed record is the gateway's to fix: the device is
		// woken rather than left asleep.
		if places, err := contract.ParseGroupCursors(e.Value()); err == nil {
			at = places[gid].At
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, false, fmt.Errorf("push: places of %s/%s: %w", user, device, err)
	}
	if at >= gseq {
		return 0, true, nil
	}
	inbox, err := s.inboxWaiting(ctx, user, device, 0)
	if err != nil {
		return 0, false, err
	}
	in := uint64(1)
	if at > 0 {
		if in, _, err = contract.WaitingOn(ctx, s.nc, contract.GroupsStream, contract.GroupMsgSubject(gid), at); err != nil {
			return 0, false, fmt.Errorf("push: log of group %s: %w", gid, err)
		}
	}
	return max(1, inbox+in), false, nil
}
