package groups

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// event is the body of a membership change stored on a group's event
// subject: what changed (the system message members get), who changed
// it, and the group as it is after the change.
type event struct {
	Op       string   `json:"op"`
	Users    []string `json:"users,omitempty"`
	Name     string   `json:"name,omitempty"`
	Promoted []string `json:"promoted,omitempty"`
	History  *int     `json:"history,omitempty"` // a history change's setting
	Actor    string   `json:"actor"`
	Device   string   `json:"device"`
	// Request is the asker's id for the change (GroupRequest.Request):
	// a repeat of it is answered, not applied again (repeatOf).
	Request string `json:"request,omitempty"`
	TS      int64  `json:"ts"` // ms since epoch
	// Prev is the sequence of the group's event before this one (0: none):
	// the events form a chain back to the group's creation.
	Prev uint64 `json:"prev"`
	// Group is the group after the change. Its Seq is left 0: it is the
	// event's own sequence, known once stored.
	Group contract.GroupRecord `json:"group"`
}

// systemMessage is what members are told: the wire protocol's event.
func (e *event) systemMessage() protocol.GroupEvent {
	return protocol.GroupEvent{Op: e.Op, Users: e.Users, Name: e.Name, Promoted: e.Promoted, History: e.History}
}

// exists reports whether g is a group: one with members. A group whose
// last member left is none.
func exists(g *contract.GroupRecord) bool { return len(g.Members) > 0 }

// apply runs op for req: a refusal (*refusal), the group unchanged, or
// the group after the change, once the change is stored.
func (s *Service) apply(ctx context.Context, op string, req contract.GroupRequest) (contract.GroupRecord, error) {
	if err := s.validate(op, &req); err != nil {
		return contract.GroupRecord{}, err
	}
	// One decision per group at a time in this instance: only other
	// instances' changes can be stored in between.
	mu := &s.locks[lockOf(req.Group)]
	mu.Lock()
	defer mu.Unlock()
	for attempt := range s.cfg.Attempts {
		if attempt > 0 {
			// Another instance's change won: let it finish its record.
			t := time.NewTimer(time.Duration(attempt) * time.Duration(1+mrand.IntN(5)) * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return contract.GroupRecord{}, ctx.Err()
			}
		}
		cur, last, err := s.load(ctx, req.Group)
		if err != nil {
			return contract.GroupRecord{}, err
		}
		ev, err := decide(op, req, cur, s.cfg.MaxMembers, time.Now().UnixMilli())
		if req.Request != "" && mayRepeat(err) {
			// A change that no longer holds may be this one, asked again
			// after its answer was lost: answered, not refused.
			switch first, rerr := s.repeatOf(ctx, op, req, last, time.Now().UnixMilli()); {
			case rerr != nil:
				return contract.GroupRecord{}, rerr
			case first != nil:
				s.repeats.Add(1)
				return s.answered(ctx, first.Group)
			}
		}
		if err != nil || ev == nil {
			return cur, err // refused, or nothing to change
		}
		if op == contract.GroupCreate {
			ev.Group.Region = s.regions.region() // its home: here (regions.go)
		}
		if s.cfg.LogMembers > 0 && len(ev.Group.Members) >= s.cfg.LogMembers {
			ev.Group.Log = true // and stays so: decide keeps it
		}
		seq, dup, err := s.storeEvent(ctx, req.Group, ev)
		if isWrongLastSeq(err) {
			s.conflicts.Add(1)
			continue // another change was stored first: decide again
		}
		if err != nil {
			return contract.GroupRecord{}, err
		}
		if dup {
			// This change was stored before, from an earlier ask of the
			// same request (within the stream's duplicate window): its
			// answer is that change's group.
			s.repeats.Add(1)
			first, err := s.eventAt(ctx, seq)
			if err != nil {
				return contract.GroupRecord{}, err
			}
			return s.answered(ctx, first.Group)
		}
		s.changes.Add(1)
		g := ev.Group
		g.Seq = seq
		if op == contract.GroupCreate {
			g.Made = seq
		}
		return s.answered(ctx, g)
	}
	return contract.GroupRecord{}, fmt.Errorf("groups: %s: changed by others %d times in a row", req.Group, s.cfg.Attempts)
}

// answered is g, the group as a stored change left it, once GROUP_INFO
// has it: the gateways check senders against the record, so a change
// answered before it (a bucket without a leader, a timeout) would have
// the members it made refused unknown_group or not_member, for good, until
// its fan-out caught the record up. It is answered unavailable instead:
// the asker asks again under the same id, and the repeat is answered as
// the change, once the record is written.
func (s *Service) answered(ctx context.Context, g contract.GroupRecord) (contract.GroupRecord, error) {
	if err := s.follow(ctx, g); err != nil {
		return contract.GroupRecord{}, fmt.Errorf("groups: %s: change %d stored, its record not written: %w", g.ID, g.Seq, err)
	}
	return g, nil
}

// validate checks what the request says before anything is read.
func (s *Service) validate(op string, req *contract.GroupRequest) error {
	switch {
	case !protocol.ValidID(req.Actor) || !protocol.ValidID(req.Device):
		return refuse(contract.GroupErrBadID, "actor and device must be valid ids")
	case !protocol.ValidID(req.Group):
		return refuse(contract.GroupErrBadID, "group: %v", protocol.ErrInvalidID)
	case req.Request != "" && !protocol.ValidID(req.Request):
		return refuse(contract.GroupErrBadID, "request: %v", protocol.ErrInvalidID)
	}
	switch op {
	case contract.GroupCreate, contract.GroupRename:
		if !protocol.ValidGroupName(req.Name) {
			return refuse(contract.GroupErrBadField, "name must be 1 to %d bytes with no control characters", protocol.MaxGroupName)
		}
	}
	switch {
	case op == contract.GroupHistory && (req.History == nil || *req.History < 0 || *req.History > protocol.MaxGroupHistory):
		return refuse(contract.GroupErrBadField, "history must be 0 to %d", protocol.MaxGroupHistory)
	case op != contract.GroupHistory && req.History != nil:
		return refuse(contract.GroupErrBadField, "history is taken by op history only")
	}
	switch op {
	case contract.GroupAdd, contract.GroupRemove, contract.GroupPromote, contract.GroupDemote:
		if len(req.Users) == 0 {
			return refuse(contract.GroupErrBadField, "users must list 1 to %d users", protocol.MaxGroupUsersPerFrame)
		}
		fallthrough
	case contract.GroupCreate:
		if len(req.Users) > protocol.MaxGroupUsersPerFrame {
			return refuse(contract.GroupErrBadField, "users may list at most %d users", protocol.MaxGroupUsersPerFrame)
		}
		seen := make(map[string]bool, len(req.Users))
		for _, u := range req.Users {
			if !protocol.ValidID(u) {
				return refuse(contract.GroupErrBadID, "users: %v", protocol.ErrInvalidID)
			}
			if seen[u] {
				return refuse(contract.GroupErrBadField, "users names %s twice", u)
			}
			seen[u] = true
		}
	default:
		if len(req.Users) > 0 {
			return refuse(contract.GroupErrBadField, "users is not taken by op %s", op)
		}
	}
	return nil
}

// decide judges op against cur, the group as of its last event (Seq 0:
// no event yet): a refusal, nil when nothing would change, or the event
// to store.
func decide(op string, req contract.GroupRequest, cur contract.GroupRecord, maxMembers int, now int64) (*event, error) {
	if op == contract.GroupCreate {
		if exists(&cur) {
			return nil, refuse(contract.GroupErrExists, "group %s exists", req.Group)
		}
		if slices.Contains(req.Users, req.Actor) {
			return nil, refuse(contract.GroupErrAlreadyMember, "%s makes the group and is its first member", req.Actor)
		}
		if 1+len(req.Users) > maxMembers {
			return nil, refuse(contract.GroupErrFull, "a group has at most %d members", maxMembers)
		}
		next := contract.GroupRecord{ID: req.Group, Name: req.Name, CreatedBy: req.Actor, Created: now,
			Changes: cur.Changes + 1, Members: make(map[string]contract.GroupMember, 1+len(req.Users))}
		next.Members[req.Actor] = contract.GroupMember{Admin: true, Joined: next.Changes}
		for _, u := range req.Users {
			next.Members[u] = contract.GroupMember{Joined: next.Changes}
		}
		return newEvent(op, req, cur, next, now, req.Users, nil), nil
	}
	switch {
	case !exists(&cur):
		return nil, refuse(contract.GroupErrUnknown, "no group %s", req.Group)
	case !cur.IsMember(req.Actor):
		return nil, refuse(contract.GroupErrNotMember, "%s is not a member of %s", req.Actor, req.Group)
	case op == contract.GroupInfo:
		return nil, nil
	case op != contract.GroupLeave && !cur.IsAdmin(req.Actor):
		return nil, refuse(contract.GroupErrNotAdmin, "%s is for the group's admins", op)
	}
	next := cur
	next.Seq = 0
	next.Changes = cur.Changes + 1
	next.Members = make(map[string]contract.GroupMember, len(cur.Members)+len(req.Users))
	for u, m := range cur.Members {
		next.Members[u] = m
	}
	var promoted []string
	switch op {
	case contract.GroupRename:
		if req.Name == cur.Name {
			return nil, nil
		}
		next.Name = req.Name
		return newEvent(op, req, cur, next, now, nil, nil), nil
	case contract.GroupHistory:
		if *req.History == cur.History {
			return nil, nil
		}
		next.History = *req.History
		return newEvent(op, req, cur, next, now, nil, nil), nil
	case contract.GroupAdd:
		for _, u := range req.Users {
			if cur.IsMember(u) {
				return nil, refuse(contract.GroupErrAlreadyMember, "%s is a member already", u)
			}
		}
		if len(cur.Members)+len(req.Users) > maxMembers {
			return nil, refuse(contract.GroupErrFull, "a group has at most %d members: %d more would make %d",
				maxMembers, len(req.Users), len(cur.Members)+len(req.Users))
		}
		for _, u := range req.Users {
			next.Members[u] = contract.GroupMember{Joined: next.Changes}
		}
	case contract.GroupRemove, contract.GroupPromote, contract.GroupDemote:
		for _, u := range req.Users {
			if !cur.IsMember(u) {
				return nil, refuse(contract.GroupErrUnknownMember, "%s is not a member", u)
			}
		}
		changed := false
		for _, u := range req.Users {
			m := next.Members[u]
			switch op {
			case contract.GroupRemove:
				if u == req.Actor {
					return nil, refuse(contract.GroupErrBadField, "to take yourself out, leave")
				}
				delete(next.Members, u)
				changed = true
			case contract.GroupPromote:
				changed = changed || !m.Admin
				m.Admin = true
				next.Members[u] = m
			case contract.GroupDemote:
				changed = changed || m.Admin
				m.Admin = false
				next.Members[u] = m
			}
		}
		if !changed {
			return nil, nil // a promote or demote that changes nothing
		}
		if op == contract.GroupDemote && !hasAdmin(next) {
			// The last admins stepped down: the longest-standing member
			// not among them becomes one.
			p, ok := longestStanding(next, req.Users)
			if !ok {
				return nil, refuse(contract.GroupErrBadField, "a group always has an admin: the last member may not step down")
			}
			promoted = []string{p}
		}
	case contract.GroupLeave:
		delete(next.Members, req.Actor)
		if len(next.Members) > 0 && !hasAdmin(next) {
			p, _ := longestStanding(next, nil)
			promoted = []string{p}
		}
	default:
		return nil, refuse(contract.GroupErrBadField, "unknown op %s", op)
	}
	for _, p := range promoted {
		m := next.Members[p]
		m.Admin = true
		next.Members[p] = m
	}
	return newEvent(op, req, cur, next, now, req.Users, promoted), nil
}

func newEvent(op string, req contract.GroupRequest, cur, next contract.GroupRecord, now int64, users, promoted []string) *event {
	ev := &event{Op: op, Users: users, Promoted: promoted, Actor: req.Actor, Device: req.Device, Request: req.Request, TS: now, Prev: cur.Seq, Group: next}
	if op == contract.GroupCreate || op == contract.GroupRename {
		ev.Name = req.Name
	}
	if op == contract.GroupHistory && req.History != nil {
		h := *req.History
		ev.History = &h
	}
	return ev
}

func hasAdmin(g contract.GroupRecord) bool {
	for _, m := range g.Members {
		if m.Admin {
			return true
		}
	}
	return false
}

// longestStanding is g's member with the lowest Joined (ties: the lowest
// id) not among except.
func longestStanding(g contract.GroupRecord, except []string) (string, bool) {
	best, found := "", false
	for u, m := range g.Members {
		if slices.Contains(except, u) {
			continue
		}
		if !found || m.Joined < g.Members[best].Joined || (m.Joined == g.Members[best].Joined && u < best) {
			best, found = u, true
		}
	}
	return best, found
}

// sortedMembers lists g's members in the order they joined (ties: by id).
func sortedMembers(g *contract.GroupRecord) []string {
	out := make([]string, 0, len(g.Members))
	for u := range g.Members {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b string) int {
		return cmp.Or(cmp.Compare(g.Members[a].Joined, g.Members[b].Joined), cmp.Compare(a, b))
	})
	return out
}

// storeEvent stores ev on gid's event subject if the subject's last
// sequence is still ev.Prev, and returns its sequence. A publish whose
// answer was lost is sent again as is: its dedup id keeps it from being
// stored twice. The id is the request's (its asker, device, id and
// content) when ev has one, so a repeat of a stored change is not stored
// again either (dup: the sequence is the first's), else unique to this
// decision.
func (s *Service) storeEvent(ctx context.Context, gid string, ev *event) (seq uint64, dup bool, err error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return 0, false, err
	}
	id := "ge:" + gid + ":" + strconv.FormatUint(ev.Prev, 10) + ":" + nonce()
	if ev.Request != "" {
		id = "ge:" + gid + ":r:" + ev.Actor + ":" + ev.Device + ":" + ev.Request + ":" + ev.contentHash()
	}
	m := &nats.Msg{Subject: contract.GroupEventSubject(gid), Data: body, Header: nats.Header{
		contract.HdrMsgID:             {id},
		contract.HdrExpectLastSubjSeq: {strconv.FormatUint(ev.Prev, 10)},
		contract.HdrKind:              {contract.KindEvent},
		contract.HdrFrom:              {ev.Actor},
		contract.HdrDevice:            {ev.Device},
		contract.HdrTS:                {strconv.FormatInt(ev.TS, 10)},
		contract.HdrGroup:             {gid},
	}}
	busy := 0 // busy refusals in a row
	for attempt := 1; ; attempt++ {
		ack, err := s.js.PublishMsg(ctx, m)
		if err == nil {
			// A duplicate of this very publish (its answer lost, sent
			// again) is stored after ev.Prev; one at or before it was
			// stored by an earlier ask of the request: a repeat.
			return ack.Sequence, ack.Duplicate && ack.Sequence <= ev.Prev, nil
		}
		if contract.IsBusy(err) && ctx.Err() == nil {
			// On a replicated GROUPS another store conditional on this
			// subject is in flight (a member's send, checked against
			// the group's last change): no change came first, so the
			// same change goes again shortly, not counted as an attempt.
			busy++
			t := time.NewTimer(contract.BusyWait(busy))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return 0, false, ctx.Err()
			}
			attempt--
			continue
		}
		if attempt >= 3 || ctx.Err() != nil || !(errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders)) {
			return 0, false, err
		}
	}
}

// A refused request is looked for among its group's last repeatDepth
// changes made within repeatWindow (repeatOf): each is a read of a stored
// change, and an asker resends within its own timeouts and reconnects.
const (
	repeatDepth  = 8
	repeatWindow = 10 * time.Minute
)

// mayRepeat reports whether err is a refusal that asking a stored change
// again brings: the change already holds (already_member,
// unknown_member, group_exists, not_admin after stepping down), or the
// asker left (not_member, unknown_group after the last member left).
func mayRepeat(err error) bool {
	var ref *refusal
	if !errors.As(err, &ref) {
		return false
	}
	switch ref.code {
	case contract.GroupErrAlreadyMember, contract.GroupErrUnknownMember, contract.GroupErrExists,
		contract.GroupErrNotAdmin, contract.GroupErrNotMember, contract.GroupErrUnknown:
		return true
	}
	return false
}

// repeatOf finds the change req repeats, if req, refused against the
// group as last left it, is one already stored among its last
// repeatDepth of the last repeatWindow before now (ms): the same op, name
// and users asked by the same device under the same request id. Such a
// repeat (an ask whose answer was lost) is answered as the first was,
// with the group as that change left it (not as it is now: the asker
// may have been removed since), where deciding it again would refuse it.
func (s *Service) repeatOf(ctx context.Context, op string, req contract.GroupRequest, last *event, now int64) (*event, error) {
	want := newEvent(op, req, contract.GroupRecord{}, contract.GroupRecord{}, 0, req.Users, nil).contentHash()
	for ev, n := last, 0; ev != nil && n < repeatDepth && ev.TS >= now-repeatWindow.Milliseconds(); n++ {
		if ev.Request == req.Request && ev.Actor == req.Actor && ev.Device == req.Device && ev.contentHash() == want {
			return ev, nil
		}
		if ev.Prev == 0 {
			break
		}
		var err error
		ev, err = s.eventAt(ctx, ev.Prev)
		if errors.Is(err, errNoMsg) {
			break // aged out
		}
		if err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// contentHash sums what a change asked for (op, name, history, users),
// so one request id sent with other content is another request.
func (e *event) contentHash() string {
	h := fnv.New64a()
	h.Write([]byte(e.Op))
	h.Write([]byte{0})
	h.Write([]byte(e.Name))
	if e.History != nil {
		h.Write([]byte{0})
		h.Write([]byte(strconv.Itoa(*e.History)))
	}
	for _, u := range e.Users {
		h.Write([]byte{0})
		h.Write([]byte(u))
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

// isWrongLastSeq tells whether a change's store was refused on its
// condition: another change was stored first (or one stayed in flight
// until the request's time ran out: contract.IsBusy).
func isWrongLastSeq(err error) bool {
	c := contract.APICode(err)
	return c == jetstream.JSErrCodeStreamWrongLastSequence || c == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// load returns group gid as of its last event (an empty record with Seq 0
// when it has none) and that event (nil: none), and brings GROUP_INFO up
// to it.
func (s *Service) load(ctx context.Context, gid string) (contract.GroupRecord, *event, error) {
	m, err := s.getMsg(ctx, msgGetRequest{LastBySubject: contract.GroupEventSubject(gid)})
	if errors.Is(err, errNoMsg) {
		return contract.GroupRecord{}, nil, nil
	}
	if err != nil {
		return contract.GroupRecord{}, nil, err
	}
	ev, err := parseEvent(m)
	if err != nil {
		return contract.GroupRecord{}, nil, err
	}
	if err := s.follow(ctx, ev.Group); err != nil {
		s.log.Warn("group record behind its log", "group", gid, "seq", m.Sequence, "err", err)
	}
	return ev.Group, ev, nil
}

// follow brings g's key in GROUP_INFO up to g, unless it is there or
// further already: a record only moves forward, whichever instance
// writes it.
func (s *Service) follow(ctx context.Context, g contract.GroupRecord) error {
	val, err := json.Marshal(g)
	if err != nil {
		return err
	}
	for range s.cfg.Attempts {
		cur, rev, err := contract.LoadGroup(ctx, s.info, g.ID)
		switch {
		case errors.Is(err, contract.ErrUnknownGroup):
			_, err = s.info.Create(ctx, g.ID, val)
		case err != nil && !errors.Is(err, contract.ErrBadRecord):
			return err
		case err == nil && cur.Seq >= g.Seq:
			return nil
		default:
			_, err = s.info.Update(ctx, g.ID, val, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !isWrongLastSeq(err) {
			return err
		}
	}
	return fmt.Errorf("groups: record of %s: written by others %d times in a row", g.ID, s.cfg.Attempts)
}

// eventAt reads the event stored at seq (errNoMsg: none there).
func (s *Service) eventAt(ctx context.Context, seq uint64) (*event, error) {
	m, err := s.getMsg(ctx, msgGetRequest{Seq: seq})
	if err != nil {
		return nil, err
	}
	return parseEvent(m)
}

// parseEvent reads a stored event, its record's Seq set to its sequence.
func parseEvent(m *storedMsg) (*event, error) {
	var ev event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return nil, fmt.Errorf("groups: event %d on %s: %w", m.Sequence, m.Subject, err)
	}
	ev.Group.Seq = m.Sequence
	if ev.Op == contract.GroupCreate {
		ev.Group.Made = m.Sequence // its own sequence, unknown when it was written
	}
	return &ev, nil
}

// nonce tells one decision's store from another's.
func nonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lockOf is group gid's stripe of Service.locks.
func lockOf(gid string) int {
	h := fnv.New32a()
	h.Write([]byte(gid))
	return int(h.Sum32() % lockStripes)
}
