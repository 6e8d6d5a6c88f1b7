package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Group ticks.
//
// A member's copies of a group's log carry their place in it
// (Sb-Group-Seq). When a device's acked stretch holds copies of a group,
// the ticker asks the receipts function, once per group, to raise the
// member's delivered position in that group to the highest of them
// (contract.GroupPositionRequest), with the 1:1 ticks of the stretch and
// before the stretch is settled, so a crash asks again and nothing is
// kept per message. A read of a group copy raises the member's read
// position the same way. The function tells the senders when every
// member has their messages (functions/receipts/groups.go).
//
// As for 1:1 ticks, delivery does not wait on the function: a request it
// does not answer in time is stored in TICKS (Sb-Kind group-position) for
// it to apply when it is back.

// groupSeq is a group copy's place in its group's log, 0 if it has none.
func groupSeq(h nats.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(contract.HdrGroupSeq), 10, 64)
	return n
}

// groupReceiptFrame is the frame of a group receipt stored at seq, nil
// if it is malformed.
func groupReceiptFrame(h nats.Header, group, by, device string, seq uint64, ts int64) []byte {
	fromSeq, _ := strconv.ParseUint(h.Get(contract.HdrSeqFrom), 10, 64)
	toSeq, _ := strconv.ParseUint(h.Get(contract.HdrSeqTo), 10, 64)
	st := h.Get(contract.HdrStatus)
	if fromSeq == 0 || toSeq < fromSeq || (st != protocol.StatusDelivered && st != protocol.StatusRead) {
		return nil
	}
	return protocol.AppendGroupReceipt(nil, st, group, by, device, fromSeq, toSeq, seq, ts)
}

// groupPositions are the delivered requests for the group copies in the
// device's unsettled messages up to through: per group, the highest
// place in its log, in the order the groups first appear.
func (f *feed) groupPositions(through uint64) []contract.GroupPositionRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []contract.GroupPositionRequest
	at := map[string]int{}
	for _, q := range f.unsettled {
		if q > through {
			break
		}
		p := f.pending[q]
		if !p.group || p.gseq == 0 {
			continue
		}
		i, ok := at[p.gid]
		if !ok {
			i = len(out)
			at[p.gid] = i
			out = append(out, contract.GroupPositionRequest{Group: p.gid, Member: f.s.id.User, Device: f.s.id.Device,
				Status: protocol.StatusDelivered})
		}
		out[i].Seq = max(out[i].Seq, p.gseq)
	}
	return out
}

// groupTicks asks for each of reqs, storing in TICKS those the receipts
// function does not answer. Positions in groups homed here go with other
// sessions' in the gateway's gathered requests (positions.go).
func (t *ticker) groupTicks(reqs []contract.GroupPositionRequest) error {
	here := reqs[:0:0]
	for _, req := range reqs {
		home, err := t.s.groupHomeElsewhere(req.Group)
		if err != nil {
			return err
		}
		if home == "" {
			here = append(here, req)
			continue
		}
		if err := t.s.sendPosition(home, req); err != nil {
			return err
		}
		t.s.srv.metrics.ticks.Inc()
	}
	for len(here) > 0 {
		n := min(len(here), contract.GroupPositionsMax)
		failed, err := t.s.srv.positions.ask(here[:n])
		if errors.Is(err, contract.ErrUnavailable) {
			failed, err = nil, t.queueGroups(here[:n], nil)
		} else if err == nil && len(failed) > 0 {
			err = t.queueGroups(here[:n], failed)
		}
		if err != nil {
			return err
		}
		t.s.srv.metrics.ticks.Add(float64(n))
		here = here[n:]
	}
	return nil
}

// queueGroups stores in TICKS those of reqs in the groups named in only
// (nil: all of them).
func (t *ticker) queueGroups(reqs []contract.GroupPositionRequest, only []string) error {
	for _, req := range reqs {
		if only != nil && !slices.Contains(only, req.Group) {
			continue
		}
		if err := t.queueGroup(req); err != nil {
			return err
		}
	}
	return nil
}

func (t *ticker) queueGroup(req contract.GroupPositionRequest) error {
	if err := t.s.storePosition(contract.TicksSubject(req.Member), req); err != nil {
		return err
	}
	t.s.srv.metrics.ticksQueued.Inc()
	return nil
}

// storePosition stores req on subject, for the receipts function to
// apply from TICKS: here, or in the group's home region once its TICKS
// has sourced it from this region's OUTBOX. Its dedup id keeps a repeat
// single on either path.
func (s *session) storePosition(subject string, req contract.GroupPositionRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
	defer cancel()
	b, _ := json.Marshal(req)
	m := &nats.Msg{Subject: subject, Data: b, Header: nats.Header{
		contract.HdrMsgID: {contract.QueuedGroupTickDedupID(req.Member, req.Device, req.Group, req.Status, req.Seq)},
		contract.HdrKind:  {contract.KindGroupPosition},
	}}
	_, err := s.srv.js.PublishMsg(ctx, m)
	return err
}

// sendPosition stores req for a group homed in region home: through this
// region's OUTBOX into the home's TICKS, so it is taken here at once,
// and applied there when the link lets it through.
func (s *session) sendPosition(home string, req contract.GroupPositionRequest) error {
	req.Region = s.srv.regions.self // where the member's read_sync goes
	return s.storePosition(contract.OutboxTicksSubject(home, req.Member), req)
}

// groupHomeElsewhere is group gid's home region when that is another
// region, else "" (a group not found is asked about here, as in one
// region).
func (s *session) groupHomeElsewhere(gid string) (string, error) {
	if s.srv.regions == nil {
		return "", nil
	}
	g, err := s.srv.groups.get(gid)
	switch {
	case errors.Is(err, contract.ErrUnknownGroup):
		return "", nil
	case err != nil:
		return "", err
	}
	return s.srv.regions.elsewhere(&g), nil
}

// readGroup takes a read of the group copy rm, stored at seq in this
// user's inbox: the member has read the group's log up to its place.
func (s *session) readGroup(ctx context.Context, seq uint64, h nats.Header) {
	gid, at := h.Get(contract.HdrGroup), groupSeq(h)
	if !protocol.ValidID(gid) || at == 0 {
		s.refuseFrame(protocol.TypeRead, "", protocol.ErrUnknownSeq, "no message to you with this seq", seq, 0)
		return
	}
	req := contract.GroupPositionRequest{Group: gid, Member: s.id.User, Device: s.id.Device, Status: protocol.StatusRead, Seq: at, InboxSeq: seq}
	home, err := s.groupHomeElsewhere(gid)
	if err == nil && home != "" {
		err = s.sendPosition(home, req)
	} else if err == nil {
		err = contract.Call(ctx, s.srv.calls, contract.GroupPositionSubject, req, nil)
	}
	if err != nil {
		s.refuseFrame(protocol.TypeRead, "", protocol.ErrUnavailable, "read receipt not taken; resend", seq, 0)
	}
}

// groupStatus answers a status frame about the message this user sent
// to group at seq: the receipts function checks that this user sent it
// there.
func (s *session) groupStatus(seq uint64, group string) {
	ok := s.goCall(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		defer cancel()
		var reply contract.StatusReply
		err := s.askGroupStatus(ctx, seq, group, &reply)
		var fe *contract.FnError
		switch {
		case errors.As(err, &fe) && fe.Code == contract.ErrCodeUnknownSeq:
			s.refuseFrame(protocol.TypeStatus, group, protocol.ErrUnknownSeq, "you sent no message with this seq in this group", seq, 0)
			return
		case errors.Is(err, errInTransit):
			s.refuseFrame(protocol.TypeStatus, group, protocol.ErrUnavailable, err.Error(), seq, 0)
			return
		case err != nil:
			s.refuseFrame(protocol.TypeStatus, group, protocol.ErrUnavailable, "receipts are unavailable", seq, 0)
			return
		}
		to := make(map[string]protocol.Ticks, len(reply.Recipients))
		for u, t := range reply.Recipients {
			if protocol.ValidID(u) {
				to[u] = protocol.Ticks{Delivered: t.Delivered, Read: t.Read}
			}
		}
		s.t.Send(protocol.EncodeGroupStatus(seq, group, to, reply.AllDelivered, reply.AllRead))
	})
	if !ok {
		s.refuseFrame(protocol.TypeStatus, group, protocol.ErrRateLimited, "too many requests in flight", seq, 100)
	}
}

// errInTransit is a status asked about a send to another region (a group
// or a user homed there) that has not reached it yet: nobody can have it,
// and that region does not know of it until it has.
var errInTransit = errors.New("the message has not reached the other region yet; ask again")

// askGroupStatus asks the receipts function about the message this user
// sent to group at seq. For a group homed here seq is its place in the
// group's log. For one homed in another region seq is this region's
// OUTBOX sequence (its "sent": every send to such a group goes through
// OUTBOX), and the home answers, through this region's receipts function
// (contract/xrstatus.go). A send still in OUTBOX is not in the log: the
// home, asked after OUTBOX was looked in, answers unknown_seq, and that
// is errInTransit.
func (s *session) askGroupStatus(ctx context.Context, seq uint64, group string, reply *contract.StatusReply) error {
	home, err := s.groupHomeElsewhere(group)
	if err != nil {
		return err
	}
	if home == "" {
		return contract.Call(ctx, s.srv.calls, contract.StatusSubject, contract.StatusRequest{Sender: s.id.User, Group: group, Seq: seq}, reply)
	}
	if !contract.IsOutboxSeq(seq) {
		return &contract.FnError{Status: 404, Code: contract.ErrCodeUnknownSeq}
	}
	return s.askElsewhere(ctx, contract.OutboxGroupSubject(home, group),
		contract.StatusRemoteRequest{Sender: s.id.User, Group: group, Seq: seq, Region: s.srv.regions.self, Home: home}, reply)
}

// askElsewhere asks this region's receipts function, which asks
// req.Home's, about the send this user stored in OUTBOX at req.Seq on
// subject (contract/xrstatus.go). The other region answers unknown_seq
// for a send that has not reached it; one OUTBOX still holds is
// errInTransit.
func (s *session) askElsewhere(ctx context.Context, subject string, req contract.StatusRemoteRequest, reply *contract.StatusReply) error {
	pending, err := s.srv.regions.inOutbox(ctx, subject, s.id.User, req.Seq)
	if err != nil {
		return err
	}
	err = contract.Call(ctx, s.srv.calls, contract.StatusRemoteSubject, req, reply)
	var fe *contract.FnError
	if pending && errors.As(err, &fe) && fe.Code == contract.ErrCodeUnknownSeq {
		return errInTransit
	}
	return err
}
