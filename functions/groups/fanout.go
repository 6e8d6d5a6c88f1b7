package groups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/worker"
	"github.com/switchboard-im/switchboard/protocol"
)

// partition fans out one partition of the group logs, one message at a
// time, in stream order.
type partition struct {
	s    *Service
	id   int
	cons jetstream.Consumer

	// cache holds groups' members as of the consumer's position. It is
	// trusted only while this instance handled every delivery of the
	// partition in a row: lastDelivery is the consumer's delivery
	// sequence of the last one.
	cache        map[string]*members
	cached       int // members in cache
	lastDelivery uint64
}

// members is a group as of its last event before the consumer's
// position.
type members struct {
	g    contract.GroupRecord
	list []string // in the order they joined
}

func newMembers(g contract.GroupRecord) *members { return &members{g: g, list: sortedMembers(&g)} }

func (p *partition) start() error {
	p.s.pwg.Add(1)
	go p.run()
	return nil
}

// pullWait is how long one pull waits for a message; a stopping instance
// waits at most this long for its pulls to end.
const pullWait = 2 * time.Second

func (p *partition) run() {
	defer p.s.pwg.Done()
	for p.s.ctx.Err() == nil {
		// One message per pull: the durable holds one at a time anyway.
		ctx, cancel := context.WithTimeout(p.s.ctx, pullWait)
		batch, err := p.cons.Fetch(1, jetstream.FetchContext(ctx))
		if err != nil {
			cancel()
			p.s.log.Debug("pull", "partition", p.id, "err", err)
			select {
			case <-p.s.ctx.Done():
			case <-time.After(pullWait):
			}
			continue
		}
		for m := range batch.Messages() {
			p.handle(m)
		}
		cancel()
	}
}

func (p *partition) handle(m jetstream.Msg) {
	s := p.s
	if s.ctx.Err() != nil {
		_ = m.Nak() // stopping: another instance takes it now
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		s.log.Error("group message without metadata", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	if meta.Sequence.Consumer != p.lastDelivery+1 {
		// Someone else handled deliveries in between: what they applied
		// is not here.
		p.forget()
	}
	p.lastDelivery = meta.Sequence.Consumer
	err = p.apply(m, meta.Sequence.Stream)
	s.log.Debug("fanned out", "seq", meta.Sequence.Stream, "err", err)
	switch {
	case err == nil:
		_ = m.Ack()
	case s.ctx.Err() != nil:
		_ = m.Nak()
	default:
		s.log.Warn("fan-out will retry", "subject", m.Subject(), "seq", meta.Sequence.Stream, "attempt", meta.NumDelivered, "err", err)
		_ = m.NakWithDelay(worker.Backoff(int(meta.NumDelivered), 100*time.Millisecond, 30*time.Second))
	}
}

// apply fans out the message stored at seq.
func (p *partition) apply(m jetstream.Msg, seq uint64) error {
	s := p.s
	tok := strings.Split(m.Subject(), ".")
	if len(tok) != 4 {
		s.log.Error("not a group subject", "subject", m.Subject())
		return nil
	}
	gid := tok[2]
	switch tok[3] {
	case "e":
		ev, err := parseEvent(&storedMsg{Subject: m.Subject(), Sequence: seq, Data: m.Data()})
		if err != nil {
			s.log.Error("unreadable group event skipped", "group", gid, "seq", seq, "err", err)
			if old, ok := p.cache[gid]; ok {
				p.cached -= len(old.list)
				delete(p.cache, gid)
			}
			return nil
		}
		// GROUP_INFO has the change before its members hear of it: the
		// instance that stored it writes the record at once, but may have
		// failed to (a timeout, a crash in between), and the gateways check
		// senders against the record. Taken again for followTries
		// deliveries; past that the change goes out anyway, rather than
		// hold the partition's other groups for good (the next change or
		// request repairs the record).
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
		err = s.follow(ctx, ev.Group)
		cancel()
		if err != nil {
			if meta, merr := m.Metadata(); merr == nil && meta.NumDelivered < followTries {
				return err
			}
			s.log.Warn("group record behind its log; its change fanned out anyway", "group", gid, "seq", seq, "err", err)
		}
		// Each user's list of groups first: a member told of the change
		// finds it there.
		if !s.cfg.noMemberships {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
			err := s.changeMemberships(ctx, gid, seq, ev)
			cancel()
			if err != nil {
				return err
			}
		}
		to := sortedMembers(&ev.Group)
		switch {
		case ev.Op == contract.GroupRemove:
			to = append(to, ev.Users...)
		case ev.Op == contract.GroupLeave:
			to = append(to, ev.Actor)
		}
		// A group on its log: who starts reading it at this change.
		var readers map[string]bool
		if ev.Group.Log {
			var err error
			if to, readers, err = p.logCopies(gid, seq, ev, to); err != nil {
				return err
			}
		}
		// An add in a group that shares its history: the users it adds
		// get its latest messages, before they are told of the add (by
		// copy), or read the log from the first of them.
		start := seq
		if ev.Op == contract.GroupAdd && ev.Group.History > 0 {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
			hist, err := s.recent(ctx, gid, seq, ev.Group.Made, ev.Group.History)
			cancel()
			if err != nil {
				return err
			}
			if len(hist) > 0 {
				start = hist[0].seq - 1
			}
			var added []string
			for _, u := range to {
				if slices.Contains(ev.Users, u) && !readers[u] {
					added = append(added, u)
				}
			}
			for _, hm := range hist {
				if err := p.fanOut(m, added, hm.m.Data, msgCopyHeader(gid, hm.seq, hm.m.Header, "")); err != nil {
					return err
				}
			}
		}
		body, _ := json.Marshal(ev.systemMessage())
		h := func(member string) nats.Header {
			hdr := nats.Header{
				contract.HdrMsgID:    {contract.GroupCopyDedupID(gid, seq, member)},
				contract.HdrKind:     {contract.KindEvent},
				contract.HdrFrom:     {ev.Actor},
				contract.HdrDevice:   {ev.Device},
				contract.HdrID:       {protocol.SystemIDPrefix + strconv.FormatUint(seq, 10)},
				contract.HdrTS:       {strconv.FormatInt(ev.TS, 10)},
				contract.HdrGroup:    {gid},
				contract.HdrGroupSeq: {strconv.FormatUint(seq, 10)},
			}
			switch {
			case readers[member] && slices.Contains(ev.Users, member):
				hdr.Set(contract.HdrGroupLog, strconv.FormatUint(start, 10))
			case readers[member]:
				// A member already (this add is the switch): they had
				// what came before it.
				hdr.Set(contract.HdrGroupLog, strconv.FormatUint(seq, 10))
			}
			return hdr
		}
		if err := p.fanOut(m, to, body, h); err != nil {
			return err
		}
		p.remember(gid, newMembers(ev.Group))
		return nil
	case "m":
		from := m.Headers().Get(contract.HdrFrom)
		g, err := p.membersAt(gid, seq)
		if err != nil {
			return err
		}
		if from == "" || !g.g.IsMember(from) {
			// Taken out of the log too, so nothing counts it as sent to
			// the group: the receipts function, reading the log for
			// senders, would tell its sender delivered and read. A gateway
			// stores one for a group homed in another region, checked
			// against its copy of the record, or checked against a record
			// without its change's sequence; a send to a group homed here
			// is stored only if no change came after the record it was
			// checked against (the gateway's checkGroupSend). Deleted
			// before any later message of the group is fanned out, so
			// before any member's position passes it.
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
			err := s.deleteMsg(ctx, seq)
			cancel()
			if err != nil {
				return err
			}
			s.dropped.Add(1)
			s.log.Info("group message from a non-member dropped", "group", gid, "seq", seq, "from", from)
			return nil
		}
		to := make([]string, 0, len(g.list))
		for _, u := range g.list {
			if u != from {
				to = append(to, u)
			}
		}
		src := m.Headers()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
		if g.g.Log {
			// Members here read the log, the sender's devices too: copies
			// go only to those homed in another region, the sender
			// whatever their devices there.
			to, err = s.elsewhere(ctx, append(to, from))
		} else {
			// The sender's own copy, for their other devices (the gateway
			// skips it on the device that sent it): only for a sender who
			// has another. A sender homed in another region has their
			// devices there: they get it whatever.
			var other bool
			if other, err = s.otherDevice(ctx, from, src.Get(contract.HdrDevice)); err == nil && other {
				to = append(to, from)
			}
		}
		cancel()
		if err != nil {
			return err
		}
		// A sender homed in another region knows the message by its
		// sequence in their region's OUTBOX ("sent"), and so must their
		// other devices, whose ticks name it by that.
		sentAt := ""
		if contract.IsOutboxSeq(contract.OriginSeq(src.Get(contract.HdrStreamSource))) && src.Get(contract.HdrOriginRegion) != "" {
			sentAt = strconv.FormatUint(contract.OriginSeq(src.Get(contract.HdrStreamSource)), 10)
		}
		return p.fanOut(m, to, m.Data(), msgCopyHeader(gid, seq, src, sentAt))
	default:
		s.log.Error("not a group subject", "subject", m.Subject())
		return nil
	}
}

// msgCopyHeader gives the headers of a member's copy of group gid's
// message stored at seq with headers src; sentAt, when set, is where
// the sender's region stored it (its sent seq), for the sender's copy.
func msgCopyHeader(gid string, seq uint64, src nats.Header, sentAt string) func(member string) nats.Header {
	from := src.Get(contract.HdrFrom)
	return func(member string) nats.Header {
		hdr := nats.Header{
			contract.HdrMsgID:    {contract.GroupCopyDedupID(gid, seq, member)},
			contract.HdrKind:     {contract.KindMsg},
			contract.HdrFrom:     {from},
			contract.HdrDevice:   {src.Get(contract.HdrDevice)},
			contract.HdrID:       {src.Get(contract.HdrID)},
			contract.HdrTS:       {src.Get(contract.HdrTS)},
			contract.HdrGroup:    {gid},
			contract.HdrGroupSeq: {strconv.FormatUint(seq, 10)},
		}
		if media := src.Get(contract.HdrMedia); media != "" {
			hdr.Set(contract.HdrMedia, media)
		}
		if member == from && sentAt != "" {
			hdr.Set(contract.HdrSentSeq, sentAt)
		}
		return hdr
	}
}

// logMsg is a message of a group's log, with its sequence.
type logMsg struct {
	seq uint64
	m   *nats.Msg
}

// recent reads group gid's latest n messages stored before seq and after
// made (the group's create), oldest first: each the last on the group's
// message subject up to the one before (a direct get, multi_last up to a
// sequence), so it reads n messages however long the group has been
// quiet, and none stored after seq.
func (s *Service) recent(ctx context.Context, gid string, seq, made uint64, n int) ([]logMsg, error) {
	subject := contract.GroupMsgSubject(gid)
	var found []logMsg // newest first
	for upTo := seq - 1; len(found) < n && upTo > made; {
		var got *nats.Msg
		err := s.lastOf(ctx, contract.GroupsStream, []string{subject}, upTo, func(m *nats.Msg) error {
			got = m
			return nil
		})
		if err != nil {
			return nil, err
		}
		if got == nil {
			break
		}
		at, err := strconv.ParseUint(got.Header.Get(contract.HdrSequence), 10, 64)
		if err != nil || at > upTo {
			return nil, fmt.Errorf("groups: read GROUPS: an answer at %q for up to %d", got.Header.Get(contract.HdrSequence), upTo)
		}
		if at <= made {
			break // an earlier group's, under the same id
		}
		found = append(found, logMsg{at, got})
		upTo = at - 1
	}
	slices.Reverse(found)
	return found, nil
}

// logCopies is who of to (the members after change ev stored at seq, and
// those it took out) gets a copy of it in a group on its log, and which
// of them start reading the log after it: at the switch (the first change
// on the log, or a create: a group made again under an emptied one's id
// starts afresh) every member here, and those it takes out get a copy
// that starts nothing; else the users an add brings in. Members homed in
// another region get a copy of every change, as of every message, and
// read no log here.
func (p *partition) logCopies(gid string, seq uint64, ev *event, to []string) (copies []string, readers map[string]bool, err error) {
	prev, err := p.membersAt(gid, seq)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(p.s.ctx, p.s.cfg.Timeout)
	defer cancel()
	remote, err := p.s.elsewhere(ctx, to)
	if err != nil {
		return nil, nil, err
	}
	away := make(map[string]bool, len(remote))
	for _, u := range remote {
		away[u] = true
	}
	readers = map[string]bool{}
	switched := !prev.g.Log || ev.Op == contract.GroupCreate // a create: a new group, maybe under an old one's id
	switch {
	case switched:
		for _, u := range to {
			if ev.Group.IsMember(u) && !away[u] {
				readers[u] = true
			}
		}
	case ev.Op == contract.GroupAdd:
		for _, u := range ev.Users {
			if !away[u] {
				readers[u] = true
			}
		}
	}
	copies = remote
	for _, u := range to {
		// At the switch those it takes out are told by copy: they never
		// read the log.
		if readers[u] || switched && !away[u] && !ev.Group.IsMember(u) {
			copies = append(copies, u)
		}
	}
	return copies, readers, nil
}

// elsewhere is those of users homed in another region than this one.
func (s *Service) elsewhere(ctx context.Context, users []string) ([]string, error) {
	var out []string
	for _, u := range users {
		_, origin, err := s.regions.inboxOf(ctx, u)
		if err != nil {
			return nil, err
		}
		if origin != "" {
			out = append(out, u)
		}
	}
	return out, nil
}

// followTries is how many deliveries of a change may fail to bring its
// group's record up to it before the change is fanned out regardless.
// With the fan-out's backoff (100 ms doubling to 30 s) that is several
// minutes: long enough to wait out a bucket's leader election, since
// members told of a change the record lacks are refused (an added
// member's sends) or counted (a removed one's position) wrongly until
// the record catches up.
const followTries = 20

func (p *partition) remember(gid string, g *members) {
	if old, ok := p.cache[gid]; ok {
		p.cached -= len(old.list)
	}
	if p.cached+len(g.list) > p.s.cfg.CacheMembers {
		p.forget()
	}
	p.cache[gid] = g
	p.cached += len(g.list)
}

func (p *partition) forget() {
	clear(p.cache)
	p.cached = 0
}

// membersAt is group gid as of its last event before seq: from the cache,
// or else from the log, walking back from the group's last event.
func (p *partition) membersAt(gid string, seq uint64) (*members, error) {
	if g, ok := p.cache[gid]; ok && g.g.Seq < seq {
		return g, nil
	}
	ctx, cancel := context.WithTimeout(p.s.ctx, p.s.cfg.Timeout)
	defer cancel()
	var g contract.GroupRecord
	sm, err := p.s.getMsg(ctx, msgGetRequest{LastBySubject: contract.GroupEventSubject(gid)})
	for err == nil {
		ev, perr := parseEvent(sm)
		if perr != nil {
			return nil, perr
		}
		if sm.Sequence < seq {
			g = ev.Group
			break
		}
		if ev.Prev == 0 {
			err = errNoMsg
			break
		}
		sm, err = p.s.getMsg(ctx, msgGetRequest{Seq: ev.Prev})
	}
	if err != nil && !errors.Is(err, errNoMsg) {
		return nil, err
	}
	// No event before seq: no group, no members.
	m := newMembers(g)
	p.remember(gid, m)
	return m, nil
}

// fanOut stores a copy of body in the inbox of each of to, with the
// headers h gives, at most InFlight unconfirmed at a time, and returns
// once every copy is stored. A copy stored before (the same dedup id) is
// not stored again.
func (p *partition) fanOut(m jetstream.Msg, to []string, body []byte, h func(string) nats.Header) error {
	s := p.s
	ctx := s.ctx
	// Well inside the durable's ack wait (10 s, short so that a fan-out
	// an instance died with resumes soon after a restart).
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	stored := 0
	wait := func(f jetstream.PubAckFuture) error {
		for {
			select {
			case <-f.Ok():
				stored++
				if s.cfg.afterCopy != nil {
					s.cfg.afterCopy(ctx, stored)
				}
				return nil
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
				_ = m.InProgress() // a big fan-out outlasting the ack wait
			}
		}
	}
	pending := make([]jetstream.PubAckFuture, 0, s.cfg.InFlight)
	for _, u := range to {
		if len(pending) == s.cfg.InFlight {
			if err := wait(pending[0]); err != nil {
				return err
			}
			pending = pending[1:]
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		subj, origin, err := s.regions.inboxOf(ctx, u)
		if err != nil {
			return err
		}
		hdr := h(u)
		if origin != "" {
			hdr.Set(contract.HdrOriginRegion, origin) // through OUTBOX to the member's region
		}
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subj, Header: hdr, Data: body})
		if err != nil {
			return err
		}
		pending = append(pending, f)
	}
	for _, f := range pending {
		if err := wait(f); err != nil {
			return err
		}
	}
	s.fannedOut.Add(1)
	s.copies.Add(int64(len(to)))
	return nil
}

// otherDevice reports whether sender has a device besides device, as far
// as this region can tell: one homed elsewhere has theirs in DEVICES
// there, so is taken to have one.
func (s *Service) otherDevice(ctx context.Context, sender, device string) (bool, error) {
	_, origin, err := s.regions.inboxOf(ctx, sender)
	if err != nil || origin != "" {
		return origin != "", err
	}
	return contract.OtherDevice(ctx, s.devices, time.Time{}, sender, device, 0)
}
