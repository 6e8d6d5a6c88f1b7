package receipts

// Message info about a message sent from another region (contract/
// xrstatus.go): to a group homed here, or to a user homed here.
//
// The sender knows the message by its sequence in their region's OUTBOX
// ("sent"); its ticks are the members' positions in the group's log, or
// the recipient's in their inbox, here. So the sender's region's function
// passes the request to this region's, which finds the message that came
// from that OUTBOX sequence, checks the sender sent it, and answers as
// for a message sent here.
//
// Finding it. Nothing maps an OUTBOX sequence to a log or inbox
// sequence, and nothing may be kept per message to do so. But GROUPS and
// INBOX here source each other region's OUTBOX through one source each,
// and a source stores what it takes in the order of the stream it takes
// it from (nats-server skips anything not past the last origin sequence
// it stored): the messages on one subject (a group's log, a user's inbox)
// that came from one region carry, in their Nats-Stream-Source, strictly
// rising OUTBOX sequences. So the subject is bisected between its first
// and last message: at each probe it reads on from the middle, in small
// batches of that subject only, to the first message from that region,
// and keeps the half the sequence must be in. That is about log2 of the
// subject's length probes, each one small direct get while the region's
// messages are not rare on it (and at worst one read of the stretch
// between them), with nothing stored. The other ways cost more: the
// sender's own copy in their inbox names both sequences, but finding it
// there is a scan of everything the sender received, and copies of
// different groups reach it in no fixed order; a plain scan grows with
// the log or the inbox.
//
// Reading a user's inbox to find a message is why this function may read
// INBOX: a direct get returns whole messages, so it reads bodies too,
// but only to answer a sender's status, which carries ticks and never a
// body. A search reads at most 2,048 batches of 16 (answered
// unavailable past them), and an instance answers at most maxForwarded
// such requests at once, so one cannot take the workers ticks need.
//
// A message still in the sender's region's OUTBOX has not arrived yet,
// and this region answers unknown_seq; the sender's gateway, which looked
// in OUTBOX before asking, makes that unavailable (ask again).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// probeBatch is the most messages one probe of the bisection reads at
// once: most probes find a message from the region in the first few.
const probeBatch = 16

// defaultProbeReads bounds the direct gets of one search (Config's
// probeReads; up to 2,048 × 16 messages read): past it, where the
// region's messages are rare on a very long subject, the answer is
// unavailable rather than a read of it all.
const defaultProbeReads = 2048

// probeBytes bounds the bytes of one probe's read.
const probeBytes = 256 << 10

// maxForwarded bounds the status requests from other regions answered at
// once by an instance; more are answered unavailable at once.
const maxForwarded = 8

// errSearchTooLong is a search that read its budget of batches without
// finding its message or its absence.
var errSearchTooLong = errors.New("receipts: the search for a message from another region read too far")

// errForwardedBusy is a status request from another region that found
// maxForwarded being answered.
var errForwardedBusy = errors.New("receipts: too many status requests from other regions at once; ask again")

// startRegions binds, when the server has a JetStream domain (its region,
// in a regions deployment), the endpoints of status requests about
// messages sent to other regions (to a group or a user homed there): the
// gateways' here, and other regions' receipts functions' about messages
// sent to groups and users homed here.
func (s *Service) startRegions(ctx context.Context) error {
	info, err := s.js.AccountInfo(ctx)
	if err != nil {
		return err
	}
	if info.Domain == "" {
		return nil
	}
	s.region = info.Domain
	if err := s.svc.AddEndpoint("status-remote", s.async(s.handleStatusRemote), micro.WithEndpointSubject(contract.StatusRemoteSubject),
		micro.WithEndpointMetadata(map[string]string{"request": `{"sender":"bob","group":"friends","seq":4503599627370500,"region":"eu","home":"us"}`,
			"request_to_user": `{"sender":"bob","to":"alice","seq":4503599627370500,"region":"eu","home":"us"}`})); err != nil {
		return err
	}
	return s.svc.AddEndpoint("status-forwarded", s.async(s.handleStatusForwarded), micro.WithEndpointSubject(contract.ReceiptsForwardSubject(s.region)))
}

// handleStatusRemote passes a gateway's status request about a message
// sent to another region to that region's receipts function and relays
// its answer: as is for a group; for a user, with the sender's own
// read-receipt setting applied, which is kept here, in the sender's
// region (the other region applied the recipient's).
func (s *Service) handleStatusRemote(ctx context.Context, r micro.Request) error {
	var req contract.StatusRemoteRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	switch {
	case !protocol.ValidID(req.Sender) || !protocol.ValidID(req.Home):
		return badRequest{"sender and home must be valid ids"}
	case !oneTarget(req):
		return badRequest{"one of group and to must be a valid id"}
	case req.Region != s.region || req.Home == s.region:
		return badRequest{"region must be this region and home another"}
	case !contract.IsOutboxSeq(req.Seq):
		return badRequest{"seq must be an OUTBOX sequence"}
	}
	m, err := s.forwardStatus(ctx, req.Home, r.Data())
	if err != nil {
		return err
	}
	if req.To != "" && m.Header.Get(micro.ErrorCodeHeader) == "" {
		var reply contract.StatusReply
		if err := json.Unmarshal(m.Data, &reply); err != nil {
			return fmt.Errorf("region %s answered %q: %w", req.Home, m.Data, err)
		}
		on, err := s.readReceiptsOn(ctx, req.Sender)
		if err != nil {
			return err
		}
		if t, ok := reply.Recipients[req.To]; ok && t.Read && !on {
			t.Read = false // still delivered: the message was on a device
			reply.Recipients[req.To] = t
		}
		return r.RespondJSON(reply)
	}
	if r.Reply() == "" {
		return nil
	}
	return s.nc.PublishMsg(&nats.Msg{Subject: r.Reply(), Data: m.Data, Header: m.Header})
}

// oneTarget reports whether req names a group or a user, as a valid id,
// and not both.
func oneTarget(req contract.StatusRemoteRequest) bool {
	if (req.Group == "") == (req.To == "") {
		return false
	}
	id := req.Group
	if id == "" {
		id = req.To
	}
	return protocol.ValidID(id)
}

// forwardStatus asks region's receipts function with data and returns
// its answer. The reply subject crosses the leaf links
// (contract.ReceiptsForwardReply); the request goes out after the
// subscription on the same connection, so the interest reaches the other
// region ahead of the request.
func (s *Service) forwardStatus(ctx context.Context, region string, data []byte) (*nats.Msg, error) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	reply := contract.ReceiptsForwardReply(s.region) + hex.EncodeToString(b)
	sub, err := s.nc.SubscribeSync(reply)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishMsg(&nats.Msg{Subject: contract.ReceiptsForwardSubject(region), Reply: reply, Data: data}); err != nil {
		return nil, err
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("region %s did not answer: %w", region, err)
	}
	if m.Header.Get("Status") == "503" && len(m.Data) == 0 {
		// The server's "no responders": no receipts function of that
		// region can be reached (a cut link, or none running there).
		return nil, fmt.Errorf("region %s unreachable: %w", region, nats.ErrNoResponders)
	}
	return m, nil
}

// handleStatusForwarded answers another region's status request about a
// message sent from there to a group or a user homed here. At most
// maxForwarded are answered at once, so a flood of them (each may read a
// stretch of an inbox) leaves the workers for ticks.
func (s *Service) handleStatusForwarded(ctx context.Context, r micro.Request) error {
	select {
	case s.forwarded <- struct{}{}:
		defer func() { <-s.forwarded }()
	default:
		return errForwardedBusy // at once: a worker waiting here would be one fewer for ticks
	}
	var req contract.StatusRemoteRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	switch {
	case !protocol.ValidID(req.Sender) || !protocol.ValidID(req.Region):
		return badRequest{"sender and region must be valid ids"}
	case !oneTarget(req):
		return badRequest{"one of group and to must be a valid id"}
	case req.Home != s.region:
		return badRequest{"home must be this region"}
	case !contract.IsOutboxSeq(req.Seq):
		return unknownSeq(r)
	}
	if req.To != "" {
		return s.userStatusForwarded(ctx, req, r)
	}
	seq, from, err := s.sentFrom(ctx, req.Group, req.Region, req.Seq)
	switch {
	case err != nil:
		return err
	case seq == 0 || from != req.Sender:
		return unknownSeq(r)
	}
	reply, ok, err := s.groupTicksOf(ctx, req.Group, req.Sender, seq)
	switch {
	case err != nil:
		return err
	case !ok:
		return unknownSeq(r)
	}
	return r.RespondJSON(reply)
}

// userStatusForwarded answers, for the sender in another region, the
// status of the message it sent to req.To: found in To's inbox, it is
// answered as a status asked here (handleStatus).
func (s *Service) userStatusForwarded(ctx context.Context, req contract.StatusRemoteRequest, r micro.Request) error {
	seq, err := s.sentTo(ctx, req.Sender, req.To, req.Region, req.Seq)
	switch {
	case err != nil:
		return err
	case seq == 0:
		return unknownSeq(r)
	}
	t, err := s.ticksOf(ctx, req.Sender, req.To, seq)
	if err != nil {
		return err
	}
	return r.RespondJSON(contract.StatusReply{Recipients: map[string]contract.Ticks{req.To: t}})
}

// sentTo finds, in to's inbox, the chat message sender sent to them from
// region, stored there at OUTBOX sequence oseq: its inbox sequence, 0 if
// there is none (not arrived, not a chat message to the user, such as a
// member's copy of a group message or a tick, or not sender's).
func (s *Service) sentTo(ctx context.Context, sender, to, region string, oseq uint64) (uint64, error) {
	p, err := s.cameFrom(ctx, s.inboxes, contract.Inbox, contract.InboxSubject(to), region, oseq)
	if err != nil || p.kind != contract.KindMsg || p.group != "" || p.from != sender {
		return 0, err
	}
	return p.seq, nil
}

// sentFrom finds the message of group gid's log that came from region's
// OUTBOX sequence oseq: its log sequence and sender, 0 if there is none.
func (s *Service) sentFrom(ctx context.Context, gid, region string, oseq uint64) (uint64, string, error) {
	p, err := s.cameFrom(ctx, s.groups, contract.GroupsStream, contract.GroupMsgSubject(gid), region, oseq)
	return p.seq, p.from, err
}

// cameFrom finds the message on subject subj of stream (named name)
// that came from region's OUTBOX sequence oseq; none: seq 0. It bisects
// the subject (see the top of this file).
func (s *Service) cameFrom(ctx context.Context, stream jetstream.Stream, name, subj, region string, oseq uint64) (probed, error) {
	last, err := stream.GetLastMsgForSubject(ctx, subj)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return probed{}, nil
	case err != nil:
		return probed{}, err
	}
	lo, hi := uint64(1), last.Sequence
	reads := 0
	for lo <= hi {
		mid := lo + (hi-lo)/2
		p, err := s.probe(ctx, name, subj, region, mid, hi, &reads)
		switch {
		case err != nil:
			return probed{}, err
		case p.seq == 0 || p.oseq > oseq:
			hi = mid - 1 // anything from the region at or past mid is later
		case p.oseq == oseq:
			return p, nil
		default:
			lo = p.seq + 1
		}
	}
	return probed{}, nil
}

// probed is a message that came from another region: its sequence here,
// its sequence in that region's OUTBOX, its sender, its kind and its
// group (a member's copy of a group message).
type probed struct {
	seq, oseq         uint64
	from, kind, group string
}

// probe reads subject subj of stream from lo up to hi to the first
// message that came from region's OUTBOX; none: seq 0. It counts its
// direct gets in reads, and stops past the budget.
func (s *Service) probe(ctx context.Context, stream, subj, region string, lo, hi uint64, reads *int) (probed, error) {
	for from := lo; from <= hi; {
		if *reads++; *reads > s.probeReads() {
			return probed{}, errSearchTooLong
		}
		var p probed
		var last uint64
		status, err := s.directGet(ctx, stream,
			directGet{Seq: from, NextFor: subj, Batch: probeBatch, MaxBytes: probeBytes}, func(m *nats.Msg) {
				seq, _ := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
				last = max(last, seq)
				if p.seq != 0 || seq < from || seq > hi || m.Header.Get(contract.HdrOriginRegion) != region {
					return
				}
				if o := contract.OriginSeq(m.Header.Get(contract.HdrStreamSource)); contract.IsOutboxSeq(o) {
					p = probed{seq: seq, oseq: o, from: m.Header.Get(contract.HdrFrom), kind: m.Header.Get(contract.HdrKind),
						group: m.Header.Get(contract.HdrGroup)}
				}
			})
		switch {
		case err != nil:
			return probed{}, err
		case p.seq != 0:
			return p, nil
		case status == "404" || last == 0 || last >= hi:
			return probed{}, nil
		}
		from = last + 1
	}
	return probed{}, nil
}

// probeReads is the direct gets a search may make.
func (s *Service) probeReads() int {
	if s.cfg.probeReads > 0 {
		return s.cfg.probeReads
	}
	return defaultProbeReads
}
