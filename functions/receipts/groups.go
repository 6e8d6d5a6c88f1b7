package receipts

// Group receipts, on the same positions as 1:1 ones.
//
// A member's place in a group is two numbers, in GROUP_TICKS under
// <group>.<member>: the GROUPS sequence up to which one of their devices
// has acked the group's copies (delivered), and up to which they have
// read (read). A gateway asks once per group per acked stretch, and once
// per read (contract.GroupPositionRequest); the function raises the
// record with compare-and-set, so both only rise and a request asked
// again changes nothing.
//
// A sender's group message is delivered when every member as of now but
// the sender has it, read when every one has read it (WhatsApp's rule,
// and like WhatsApp regardless of members' read-receipt settings: a
// member who joins a group shares their reads there). So what a sender
// may be told is the lowest position of the other members. The aggregate
// record (key <group>, contract.GroupAggregate) keeps, per status, up to
// where senders have been told, and two witnesses: the member that was
// lowest when it was computed (its own messages are told up to the
// second lowest), and the one that was second lowest. While the two stay
// where they were, no sender can be owed anything, whoever else moves; so
// a request reads the aggregate and the witnesses' records (a few gets),
// and only when a witness has moved past what was told, or the group's
// membership changed, reads every member's position again (one batched
// direct get, multi_last over <group>.*) and recomputes. The witness is
// drawn at random among the members tied at the lowest position; a member
// who is away is soon the only one there, and stays the witness without
// a recompute until they come back.
//
// When the minimum rises, the function reads the group's messages in the
// range that became due (a batched direct get on the group's message
// subject, no other group's) to learn their senders, and stores ONE
// receipt per sender into that sender's inbox: a receipt with the group,
// the range in GROUPS sequences, the status, and as `by` the member whose
// move made it due. Its dedup id is group, status, sender and range, so a
// repeat stores nothing twice. Receipts are stored before the aggregate
// moves: a crash in between leaves a witness past the aggregate, so the
// next request for the group (the gateway asks again until answered)
// recomputes and stores the same receipts once.
//
// Cost, for a group of N members where every message reaches every member
// and each member's device acks it (the worst case, no acks coinciding):
// per message, N position writes for delivered (one per member, the same
// request the ack makes anyway) and N more when all read it; the
// recomputes, each a read of N small records in one request, happen when
// a witness moves: with the witness drawn at random among the tied,
// about ln N times per rise of the lowest (and as many of the second
// lowest), whatever order the members move in; each recompute writes
// the aggregate once; and one receipt per sender per advance per status. So
// stored writes per message are at most 2N + 2 + a few aggregate writes
// (the 2N as many as the copies and reads themselves, fewer when acks
// coincide: a device that acks 200 copies of a group at once raises its
// position once), and records read about N ln N, where reading every
// position on every ack would be N × N. Measured (TestGroupTicks-
// ConcurrentMembers, 1,024 members acking and reading at once on two
// instances): 2.01 writes per member per message and 17 to 44
// recomputes per message, both statuses together.

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// groupSettleRounds bounds how often one request recomputes a group's
// aggregate after losing a race for it.
const groupSettleRounds = 16

// groupScanBatch is the most group messages one direct get returns.
const groupScanBatch = 256

func (s *Service) handleGroupPosition(ctx context.Context, r micro.Request) error {
	var req contract.GroupPositionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := s.groupPosition(ctx, req); err != nil {
		return err
	}
	return r.Respond([]byte("{}"))
}

// groupPosition raises req.Member's position in req.Group and tells the
// senders whatever that makes due.
func (s *Service) groupPosition(ctx context.Context, req contract.GroupPositionRequest) error {
	if err := checkPosition(req); err != nil {
		return err
	}
	g, err := s.records.get(ctx, req.Group)
	switch {
	case errors.Is(err, contract.ErrUnknownGroup), errors.Is(err, contract.ErrBadRecord):
		return nil // no group (or none readable): nobody to tell
	case err != nil:
		return err
	case !g.IsMember(req.Member):
		// Added since the record in hand was read, or removed: a kept
		// record may be behind (its change's news still to come), and a
		// new member's first position must not be lost.
		if g, err = s.records.fresh(ctx, req.Group); err != nil {
			if errors.Is(err, contract.ErrUnknownGroup) || errors.Is(err, contract.ErrBadRecord) {
				return nil
			}
			return err
		}
		if !g.IsMember(req.Member) {
			return nil // removed since: their position counts for nothing
		}
	}
	read := req.Status == protocol.StatusRead
	if read {
		if err := s.syncGroupRead(ctx, req); err != nil { // before the position, as for 1:1
			return err
		}
	}
	mine, changed, err := s.raisePosition(ctx, req.Group, req.Member, req.Seq, read)
	if err != nil {
		return err
	}
	if read {
		s.groupRead.Add(1)
	} else {
		s.groupDelivered.Add(1)
	}
	return s.settleGroup(ctx, g, &settling{known: map[string]memberPos{req.Member: mine}, only: changed,
		by: req.Member, device: req.Device, read: read})
}

// checkPosition refuses a position request that is not well formed.
func checkPosition(req contract.GroupPositionRequest) error {
	switch {
	case !protocol.ValidID(req.Group) || !protocol.ValidID(req.Member) || !protocol.ValidID(req.Device):
		return badRequest{"group, member and device must be valid ids"}
	case req.Status != protocol.StatusDelivered && req.Status != protocol.StatusRead:
		return badRequest{"status must be delivered or read"}
	case req.Seq == 0:
		return badRequest{"seq must be a positive sequence"}
	case req.Region != "" && !protocol.ValidID(req.Region):
		return badRequest{"region must be a valid id"}
	}
	return nil
}

// raisePosition raises member's delivered position in group gid to seq,
// and their read position too when read, with compare-and-set: it
// returns the position as left and whether this call moved it.
func (s *Service) raisePosition(ctx context.Context, gid, member string, seq uint64, read bool) (memberPos, bool, error) {
	changed := false
	var mine contract.GroupPosition
	rev, err := contract.Swap(ctx, s.groupTicks, contract.GroupTickKey(gid, member), func(cur []byte, _ uint64) ([]byte, error) {
		var p contract.GroupPosition
		_ = json.Unmarshal(cur, &p) // unreadable: from nothing
		next := p
		next.Delivered = max(next.Delivered, seq)
		if read {
			next.Read = max(next.Read, seq)
		}
		mine = next
		if changed = next != p || cur == nil; !changed {
			return nil, nil // there already: a position never goes back
		}
		return json.Marshal(next)
	})
	return memberPos{p: mine, rev: rev}, changed, err
}

// memberPos is a member's record and its revision (0: none).
type memberPos struct {
	p   contract.GroupPosition
	rev uint64
}

func (m memberPos) at(read bool) uint64 {
	if read {
		return m.p.Read
	}
	return m.p.Delivered
}

// settling is what a settle of a group knows of the request that
// started it.
type settling struct {
	// known are positions the request wrote (or found), by member,
	// current as of then; others are read.
	known map[string]memberPos
	// only: look only at the witnesses among known, which the request
	// moved; otherwise at every witness.
	only bool
	// by, on device, is the member whose move this is: the receipts name
	// them. With by "" (positions gathered from many members, or a change
	// of the membership) they name the member now at the bottom, on its
	// device in devices if there.
	by, device string
	devices    map[string]string
	// read: the read track may have moved too.
	read bool
}

// settleGroup recomputes group g's aggregate while it is due, telling
// the senders what became due each time.
//
// A request that moved its member recomputes only if its member is a
// witness: another witness that moved is its own request's to handle, so
// members moving at once do not all recompute. Every request that wrote
// the aggregate (or lost the race to write it) then looks at both
// witnesses, whoever they are, and so does a request that moved nothing
// (a repeat, after a crash that may have cut the one before short): a
// witness chosen from positions read just before it moved is caught by
// the writer that chose it.
//
// st.known holds the positions as this request left them: those members'
// records are not read in the first round. After a write they are: the
// witnesses chosen then may include such a member, chosen from a position
// read before another request of theirs (a read right after an ack,
// another device) moved it, and that request looked at the aggregate as
// it was before this write, where the member may have been no witness;
// only this writer can see that move.
func (s *Service) settleGroup(ctx context.Context, g *contract.GroupRecord, st *settling) error {
	checked := false // the record was read fresh before telling, this round
	for range groupSettleRounds {
		var agg contract.GroupAggregate
		var rev uint64
		e, err := s.leaderTick(ctx, contract.GroupAggregateKey(g.ID))
		switch {
		case err == nil:
			rev = e.rev
			if json.Unmarshal(e.value, &agg) != nil {
				agg = contract.GroupAggregate{}
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return err
		}
		if agg.Seq > g.Seq {
			// Computed from a newer record than the one in hand (kept
			// until the watch's news of a change): never go back to an
			// older membership.
			if g, err = s.records.fresh(ctx, g.ID); err != nil || agg.Seq > g.Seq {
				if errors.Is(err, contract.ErrUnknownGroup) || errors.Is(err, contract.ErrBadRecord) {
					err = nil
				}
				return err
			}
		}
		due := rev == 0 || agg.Seq != g.Seq
		if !due {
			if due, err = s.witnessMoved(ctx, g, &agg.Delivered, false, st); err != nil {
				return err
			}
		}
		if !due && st.read {
			if due, err = s.witnessMoved(ctx, g, &agg.Read, true, st); err != nil {
				return err
			}
		}
		if !due {
			return nil
		}
		s.recomputes.Add(1)
		pos, err := s.lowestPositions(ctx, g)
		if err != nil {
			return err
		}
		next := contract.GroupAggregate{Seq: g.Seq,
			Delivered: nextTrack(g, pos, &agg.Delivered, false),
			Read:      nextTrack(g, pos, &agg.Read, true)}
		if !checked && (rises(&agg.Delivered, &next.Delivered) || rises(&agg.Read, &next.Read)) {
			// Something is to be told: never from a record behind. A
			// record kept until the watch's news of a change may miss a
			// member added before the messages now due (their copies
			// came after the record was written, so a read through the
			// leader sees it). Read once per settle that tells, not per
			// position.
			checked = true
			cur, err := s.records.fresh(ctx, g.ID)
			switch {
			case errors.Is(err, contract.ErrUnknownGroup), errors.Is(err, contract.ErrBadRecord):
				return nil
			case err != nil:
				return err
			}
			if cur.Seq != g.Seq {
				g = cur
				continue // recomputed with the membership as it is
			}
		}
		if err := s.tellSenders(ctx, g, protocol.StatusDelivered, st, &agg.Delivered, &next.Delivered); err != nil {
			return err
		}
		if err := s.tellSenders(ctx, g, protocol.StatusRead, st, &agg.Read, &next.Read); err != nil {
			return err
		}
		b, _ := json.Marshal(next)
		if rev == 0 {
			_, err = s.groupTicks.Create(ctx, contract.GroupAggregateKey(g.ID), b)
		} else {
			_, err = s.groupTicks.Update(ctx, contract.GroupAggregateKey(g.ID), b, rev)
		}
		if err != nil && !contract.IsConflict(err) {
			return err
		}
		// Written or lost to another: either way look again, at every
		// witness of both tracks (this wrote both), for one that moved
		// while this was computed, the request's own members' records too.
		// What that round tells is checked against the record again: it
		// may have changed since this one read it.
		st = &settling{by: st.by, device: st.device, devices: st.devices, read: true}
		checked = false
	}
	return contract.ErrContended
}

// rises reports whether next tells any sender more than old did: every
// sender but next's witness is told up to next.Told (old told them up to
// old.Told at least), the witness up to next.Told2.
func rises(old, next *contract.GroupTrack) bool {
	return next.Told > old.Told || (next.Witness != "" && next.Told2 > toldTo(old, next.Witness))
}

// witnessMoved reports whether a witness of track t has moved past what
// was told, or is no longer a member: only then may a sender be owed.
// With st.only, of the witnesses' moves it looks at those in st.known.
// Positions in st.known are taken from there; the others are read.
func (s *Service) witnessMoved(ctx context.Context, g *contract.GroupRecord, t *contract.GroupTrack, read bool, st *settling) (bool, error) {
	for _, w := range []struct {
		who  string
		told uint64
	}{{t.Witness, t.Told}, {t.Witness2, t.Told2}} {
		if w.who == "" {
			if len(g.Members) > 1 || t.Witness == "" {
				return true, nil // computed for a smaller group
			}
			continue
		}
		if !g.IsMember(w.who) {
			return true, nil
		}
		p, known := st.known[w.who]
		if st.only && !known {
			continue
		}
		if !known {
			var err error
			if p, err = s.memberPosition(ctx, g.ID, w.who); err != nil {
				return false, err
			}
		}
		if p.at(read) > w.told {
			return true, nil
		}
	}
	return false, nil
}

func (s *Service) memberPosition(ctx context.Context, gid, member string) (memberPos, error) {
	e, err := s.leaderTick(ctx, contract.GroupTickKey(gid, member))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return memberPos{}, nil
	case err != nil:
		return memberPos{}, err
	}
	var p contract.GroupPosition
	_ = json.Unmarshal(e.value, &p)
	return memberPos{p: p, rev: e.rev}, nil
}

// nextTrack is track old recomputed from the members' positions: the
// lowest member is the witness, told up to the second lowest; everyone
// else is told up to the lowest. Among members tied at the lowest the
// witness is drawn at random, so however the members move after it,
// the witness is expected to be among the last about half the time,
// and a rise through N tied members costs about ln N recomputes; a
// witness still among the lowest stays. What was told never goes back.
func nextTrack(g *contract.GroupRecord, pos map[string]memberPos, old *contract.GroupTrack, read bool) contract.GroupTrack {
	lowest := func(skip, keep string) (string, uint64) {
		var who string
		var at uint64
		tied := 0
		for m := range g.Members {
			if m == skip {
				continue
			}
			a := pos[m].at(read)
			switch {
			case who == "" || a < at:
				who, at, tied = m, a, 1
			case a == at:
				tied++ // one of tied, each as likely
				if rand.IntN(tied) == 0 {
					who = m
				}
			}
		}
		if keep != "" && keep != skip && g.IsMember(keep) && pos[keep].at(read) == at {
			// Still among the lowest: it stays, and so does what it was
			// told of its own messages.
			who = keep
		}
		return who, at
	}
	var t contract.GroupTrack
	var min1, min2 uint64
	t.Witness, min1 = lowest("", old.Witness)
	t.Told = max(old.Told, min1)
	t.Witness2, min2 = lowest(t.Witness, old.Witness2)
	t.Told2 = t.Told
	if t.Witness2 != "" {
		t.Told2 = max(t.Told, min2)
	}
	if t.Witness == old.Witness {
		t.Told2 = max(t.Told2, old.Told2)
	}
	return t
}

// toldTo is up to where sender has been told on track t.
func toldTo(t *contract.GroupTrack, sender string) uint64 {
	if sender == t.Witness {
		return t.Told2
	}
	return t.Told
}

// before reports whether the message at seq of g's log is from an
// earlier group of g's id, one left empty and made again since.
func before(seq uint64, g *contract.GroupRecord) bool { return seq < g.Made }

// tellSenders stores one receipt per sender of group g's messages that
// became due between tracks old and next. A message of an earlier group
// of the same id (left empty and made again) is nobody's to tell: its
// members are gone, and this group's positions say nothing of it.
func (s *Service) tellSenders(ctx context.Context, g *contract.GroupRecord, status string, st *settling, old, next *contract.GroupTrack) error {
	gid := g.ID
	// A span is in the log's sequences; for a sender homed in another
	// region (whose messages came through its region's OUTBOX), also in
	// the OUTBOX sequences the sender's app knows them by ("sent"), and
	// the receipt goes back there through this region's OUTBOX.
	type span struct {
		from, to   uint64
		region     string
		ofrom, oto uint64
	}
	due := map[string]span{}
	see := func(seq uint64, from string, h nats.Header) {
		if !protocol.ValidID(from) {
			return
		}
		lo, hi := toldTo(old, from), toldTo(next, from)
		if seq <= lo || seq > hi {
			return
		}
		if before(seq, g) {
			return
		}
		sp := due[from]
		sp.from, sp.to = max(lo+1, g.Made), hi // nothing of an earlier group of this id
		if region, oseq := h.Get(contract.HdrOriginRegion), contract.OriginSeq(h.Get(contract.HdrStreamSource)); protocol.ValidID(region) && contract.IsOutboxSeq(oseq) {
			sp.region = region
			if sp.ofrom == 0 || oseq < sp.ofrom {
				sp.ofrom = oseq
			}
			sp.oto = max(sp.oto, oseq)
		}
		due[from] = sp
	}
	// Everyone's messages up to the new lowest; the witness's own up to
	// the second lowest.
	if next.Told > old.Told {
		if err := s.scanGroup(ctx, gid, old.Told, next.Told, see); err != nil {
			return err
		}
	}
	if lo := max(next.Told, toldTo(old, next.Witness)); next.Told2 > lo && next.Witness != "" {
		if err := s.scanGroup(ctx, gid, lo, next.Told2, func(seq uint64, from string, h nats.Header) {
			if from == next.Witness {
				see(seq, from, h)
			}
		}); err != nil {
			return err
		}
	}
	var futs []jetstream.PubAckFuture
	for sender, sp := range due {
		who, device := st.by, st.device
		if who == "" {
			// No one member's request: the witness this sender's told
			// waited on, if the request moved them (their move completed
			// it); else (a change of the membership) the member now at
			// the bottom, the last to get there.
			who = old.Witness
			if sender == old.Witness {
				who = old.Witness2
			}
			if _, moved := st.devices[who]; !moved || who == "" {
				who = next.Witness
				if sender == next.Witness {
					who = next.Witness2
				}
			}
			if who == "" {
				who = sender // nobody else is left
			}
			device = st.devices[who]
		}
		m := groupTick(gid, status, who, device, sender, sp.from, sp.to)
		if sp.region != "" {
			m = groupTick(gid, status, who, device, sender, sp.ofrom, sp.oto)
			m.Subject = contract.OutboxSubject(sp.region, sender)
		}
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	if err := wait(ctx, futs); err != nil {
		return err
	}
	s.stored.Add(int64(len(futs)))
	return nil
}

// groupTick is a group receipt for sender's inbox: every member has
// (status) sender's messages in group gid stored in GROUPS from from to
// to; by, on device, was the last to get there.
func groupTick(gid, status, by, device, sender string, from, to uint64) *nats.Msg {
	return &nats.Msg{Subject: contract.InboxSubject(sender), Header: nats.Header{
		contract.HdrMsgID:   {contract.GroupTickDedupID(gid, status, sender, from, to)},
		contract.HdrKind:    {contract.KindReceipt},
		contract.HdrStatus:  {status},
		contract.HdrGroup:   {gid},
		contract.HdrFrom:    {by},
		contract.HdrDevice:  {device},
		contract.HdrSeqFrom: {strconv.FormatUint(from, 10)},
		contract.HdrSeqTo:   {strconv.FormatUint(to, 10)},
		contract.HdrTS:      {strconv.FormatInt(nowMS(), 10)},
	}}
}

// scanGroup passes each chat message of group gid stored after lo and up
// to hi to each, with its sender and headers, in order.
func (s *Service) scanGroup(ctx context.Context, gid string, lo, hi uint64, each func(seq uint64, from string, h nats.Header)) error {
	subj := contract.GroupMsgSubject(gid)
	for from := lo + 1; from <= hi; {
		var last uint64
		status, err := s.directGet(ctx, contract.GroupsStream,
			directGet{Seq: from, NextFor: subj, Batch: groupScanBatch, MaxBytes: 1 << 20}, func(m *nats.Msg) {
				seq, _ := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
				if seq > last {
					last = seq
				}
				if seq >= from && seq <= hi {
					each(seq, m.Header.Get(contract.HdrFrom), m.Header)
				}
			})
		if err != nil {
			return err
		}
		if status == "404" || last == 0 || last >= hi {
			return nil
		}
		from = last + 1
	}
	return nil
}

// memberPositions reads the positions of g's members: one direct get of
// the last record of every <group>.* key, or, for a group whose keys are
// more than a direct get answers (members removed leave theirs), one get
// per member.
func (s *Service) memberPositions(ctx context.Context, g *contract.GroupRecord) (map[string]memberPos, error) {
	return s.readPositions(ctx, g, nil)
}

// readPositions reads the positions of members of g (nil: all of them)
// in one batched read, or one by one when the batch is too large.
func (s *Service) readPositions(ctx context.Context, g *contract.GroupRecord, members []string) (map[string]memberPos, error) {
	n := len(members)
	if members == nil {
		n = len(g.Members)
	}
	pos := make(map[string]memberPos, n)
	prefix := contract.KVSubject(contract.GroupTicksKV, g.ID+".")
	subjects := []string{prefix + "*"}
	if members != nil {
		subjects = make([]string, len(members))
		for i, m := range members {
			subjects[i] = prefix + m
		}
	} else {
		members = make([]string, 0, len(g.Members))
		for m := range g.Members {
			members = append(members, m)
		}
	}
	status, err := s.directGet(ctx, "KV_"+contract.GroupTicksKV, directGet{MultiLast: subjects}, func(m *nats.Msg) {
		member, ok := strings.CutPrefix(m.Header.Get(contract.HdrSubject), prefix)
		if !ok || !g.IsMember(member) {
			return
		}
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return
		}
		var p contract.GroupPosition
		_ = json.Unmarshal(m.Data, &p)
		rev, _ := strconv.ParseUint(m.Header.Get(contract.HdrSequence), 10, 64)
		pos[member] = memberPos{p: p, rev: rev}
	})
	switch {
	case err != nil:
		return nil, err
	case status != "413":
		return pos, nil
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	sem := make(chan struct{}, 32)
	for _, m := range members {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p, err := s.memberPosition(ctx, g.ID, m)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			pos[m] = p
		}()
	}
	wg.Wait()
	return pos, firstErr
}

// groupStatus answers a status request for a group message: the sender's
// only, each member's ticks from their positions.
func (s *Service) groupStatus(ctx context.Context, req contract.StatusRequest, r micro.Request) error {
	if !protocol.ValidID(req.Group) {
		return badRequest{"group must be a valid id"}
	}
	unknown := func() error { return unknownSeq(r) }
	m, err := s.groups.GetMsg(ctx, req.Seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return unknown()
	case err != nil:
		return err
	case m.Subject != contract.GroupMsgSubject(req.Group) || m.Header.Get(contract.HdrFrom) != req.Sender:
		return unknown()
	}
	reply, ok, err := s.groupTicksOf(ctx, req.Group, req.Sender, req.Seq)
	switch {
	case err != nil:
		return err
	case !ok:
		return unknown()
	}
	return r.RespondJSON(reply)
}

// groupTicksOf is the status of the message sender stored at seq in
// group gid's log: each member's ticks but the sender's, from their
// positions. Not ok when the sender is no longer a member, or the message
// is from a group of the same id that was left empty and made again: its
// members are not the message's, and are not the sender's to see.
func (s *Service) groupTicksOf(ctx context.Context, gid, sender string, seq uint64) (contract.StatusReply, bool, error) {
	reply := contract.StatusReply{Recipients: map[string]contract.Ticks{}, AllDelivered: true, AllRead: true}
	g, err := s.records.get(ctx, gid)
	switch {
	case errors.Is(err, contract.ErrUnknownGroup), errors.Is(err, contract.ErrBadRecord):
		return reply, true, nil
	case err != nil:
		return reply, false, err
	case !g.IsMember(sender) || before(seq, g):
		return reply, false, nil
	}
	pos, err := s.memberPositions(ctx, g)
	if err != nil {
		return reply, false, err
	}
	for member := range g.Members {
		if member == sender {
			continue
		}
		p := pos[member]
		t := contract.Ticks{Delivered: p.p.Delivered >= seq, Read: p.p.Read >= seq}
		reply.Recipients[member] = t
		reply.AllDelivered = reply.AllDelivered && t.Delivered
		reply.AllRead = reply.AllRead && t.Read
	}
	return reply, true, nil
}

// unknownSeq refuses a group status request: the sender sent no message
// with that seq in that group.
func unknownSeq(r micro.Request) error {
	b, _ := json.Marshal(map[string]string{"code": contract.ErrCodeUnknownSeq, "message": "you sent no message with this seq in this group"})
	return r.Error("404", contract.ErrCodeUnknownSeq, b)
}

func nowMS() int64 { return time.Now().UnixMilli() }
