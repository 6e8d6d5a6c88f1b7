package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Groups.
//
// The gateway's part: it passes group frames to the groups function
// (contract.GroupSubject) and answers with the group it returns; it stores
// a member's group send once, in the group's log in GROUPS, after checking
// in GROUP_INFO that the sender is a member (a step of the PubAck queue,
// like a media grant, so group sends and sends to users keep one order);
// it hands on the members' copies the groups function stores in their
// inboxes, as msg frames with group (and event, for a system message); and
// it relays typing in a group to the members' online devices.
//
// Group copies tick their group, not their senders: an acked stretch of
// them, or a read of one, raises the member's position in the group, and
// status about a group message names the group (groupticks.go).

// groupTTL is the Nats-TTL of a stored group message: as long as INBOX
// keeps the members' copies (maxAge, whole seconds), so GROUPS does not
// keep messages no one can be handed any more. Zero keeps them.
func groupTTL(maxAge time.Duration) string {
	if maxAge < time.Second {
		return ""
	}
	return strconv.FormatInt(int64(maxAge/time.Second), 10)
}

// groupError is the wire error for an error of the groups function or of
// a GROUP_INFO read.
func groupError(err error) (protocol.ErrorCode, string) {
	var fe *contract.FnError
	switch {
	case errors.Is(err, contract.ErrUnknownGroup):
		return protocol.ErrUnknownGroup, "no such group"
	case errors.Is(err, contract.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return protocol.ErrUnavailable, "groups are unavailable; resend"
	case errors.As(err, &fe):
		if code, ok := groupCodes[fe.Code]; ok {
			return code, fe.Message
		}
		if fe.Status >= 500 {
			return protocol.ErrUnavailable, "groups are unavailable; resend"
		}
		return protocol.ErrInternal, "the groups function refused: " + fe.Message
	default:
		return protocol.ErrUnavailable, "groups are unavailable; resend"
	}
}

// groupCodes maps the groups function's refusals to the wire's codes.
var groupCodes = map[string]protocol.ErrorCode{
	contract.GroupErrUnknown:       protocol.ErrUnknownGroup,
	contract.GroupErrExists:        protocol.ErrGroupExists,
	contract.GroupErrNotMember:     protocol.ErrNotMember,
	contract.GroupErrNotAdmin:      protocol.ErrNotAdmin,
	contract.GroupErrFull:          protocol.ErrGroupFull,
	contract.GroupErrAlreadyMember: protocol.ErrAlreadyMember,
	contract.GroupErrUnknownMember: protocol.ErrUnknownMember,
	contract.GroupErrBadID:         protocol.ErrBadID,
	contract.GroupErrBadField:      protocol.ErrBadField,
}

// group passes a group frame to the groups function, off the read loop,
// and answers with the group as it then is, or the function's refusal.
func (s *session) group(f *protocol.Frame) {
	if s.shutting.Load() {
		s.sendError(protocol.ErrShuttingDown, "gateway is shutting down", f.ID, 0, 0)
		return
	}
	req := contract.GroupRequest{Actor: s.id.User, Device: s.id.Device, Group: f.Group, Name: f.Name, Users: f.Users, Request: f.ID, History: f.History}
	id, op, gid := f.ID, f.Op, f.Group
	if op == protocol.GroupList {
		s.listGroups(id, req)
		return
	}
	ok := s.goCall(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		defer cancel()
		var reply contract.GroupReply
		if err := contract.Call(ctx, s.srv.calls, contract.GroupSubject(op), req, &reply); err != nil {
			code, msg := groupError(err)
			if code == protocol.ErrInternal {
				s.log.Warn("group operation failed", "op", op, "err", err)
			}
			s.sendError(code, msg, id, 0, 0)
			return
		}
		g := reply.Group
		// The group changed: typing reads it again. The answer is not
		// kept in its place: a change asked again is answered with the
		// group as that change left it, which may list a member removed
		// since.
		s.srv.groups.forget(gid)
		s.t.Send(protocol.EncodeGroupWithHistory(id, gid, g.Name, g.CreatedBy, g.Created, groupMembers(g), g.History))
	})
	if !ok {
		s.refuseBusy(id)
	}
}

// listGroups answers a list frame, request id: this user's groups.
func (s *session) listGroups(id string, req contract.GroupRequest) {
	req.Request = ""
	ok := s.goCall(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
		defer cancel()
		var reply contract.GroupListReply
		if err := contract.Call(ctx, s.srv.calls, contract.GroupSubject(contract.GroupList), req, &reply); err != nil {
			code, msg := groupError(err)
			if code == protocol.ErrInternal {
				s.log.Warn("group list failed", "err", err)
			}
			s.sendError(code, msg, id, 0, 0)
			return
		}
		out := make([]protocol.GroupEntry, 0, len(reply.Groups))
		for _, g := range reply.Groups {
			out = append(out, protocol.GroupEntry{Group: g.Group, Name: g.Name, Since: g.Since})
		}
		s.t.Send(protocol.EncodeGroupList(id, out))
	})
	if !ok {
		s.refuseBusy(id)
	}
}

// groupMembers lists g's members as the wire has them: in the order they
// joined, the longest-standing first.
func groupMembers(g contract.GroupRecord) []protocol.GroupMember {
	type m struct {
		user   string
		joined uint64
		admin  bool
	}
	all := make([]m, 0, len(g.Members))
	for u, gm := range g.Members {
		if protocol.ValidID(u) {
			all = append(all, m{u, gm.Joined, gm.Admin})
		}
	}
	slices.SortFunc(all, func(a, b m) int {
		if a.joined != b.joined {
			if a.joined < b.joined {
				return -1
			}
			return 1
		}
		return strings.Compare(a.user, b.user)
	})
	out := make([]protocol.GroupMember, len(all))
	for i, x := range all {
		out[i] = protocol.GroupMember{User: x.user, Admin: x.admin}
	}
	return out
}

// sendGroup queues a send to group f.Group: checked (checkGroupSend)
// when its turn comes, then stored once in the group's log.
func (s *session) sendGroup(f *protocol.Frame, ts int64) {
	if f.Media != nil {
		s.sendError(protocol.ErrBadMedia, "media in group messages is not supported yet", f.ID, 0, 0)
		return
	}
	h := nats.Header{
		contract.HdrMsgID:  {contract.MsgDedupID(s.id.User, f.ID)},
		contract.HdrKind:   {contract.KindMsg},
		contract.HdrFrom:   {s.id.User},
		contract.HdrDevice: {s.id.Device},
		contract.HdrID:     {f.ID},
		contract.HdrTS:     {strconv.FormatInt(ts, 10)},
		contract.HdrGroup:  {f.Group},
	}
	if s.srv.groupTTL != "" {
		h.Set(contract.HdrTTL, s.srv.groupTTL)
	}
	m := &nats.Msg{Subject: contract.GroupMsgSubject(f.Group), Header: h, Data: f.Body}
	s.queue(&pubItem{msg: m, id: f.ID, group: f.Group, ts: ts})
}

// checkGroupSend tells whether this user may send to group gid now,
// against its kept record (groupRecords.check) or, again after the store
// refused it (again), as the group's log has it now
// (groupRecords.latest). It returns the error to answer the send with,
// if any. A group homed in another region is sent to through OUTBOX (m
// is pointed there, regions.go).
//
// A send to a group homed here is stored only if no change of the group
// was stored after the one the record is as of: m is made conditional
// on the group's event subject still ending at the record's Seq. A
// removal stored between the check and the store (the record, kept
// from GROUP_INFO's writes, may be a moment behind the log) makes the
// store refuse the send, which is then checked again, and a removed sender
// gets not_member rather than "sent" for a message no member gets. So
// nothing from a non-member enters a log its members read (the groups
// function takes one out of the log too, but only after the gateways
// reading it may have handed it on). Any other change refuses it the
// same way and costs the send one read of the log.
func (s *session) checkGroupSend(gid string, m *nats.Msg, again bool) (protocol.ErrorCode, string) {
	var g contract.GroupRecord
	var err error
	if again {
		g, err = s.srv.groups.latest(gid)
	} else {
		g, err = s.srv.groups.check(gid, s.id.User)
	}
	if err != nil {
		if !errors.Is(err, contract.ErrUnknownGroup) {
			s.log.Warn("cannot read a group's record", "group", gid, "err", err)
		}
		return groupError(err)
	}
	if code, msg := memberCheck(&g, s.id.User); code != "" {
		return code, msg
	}
	if code, msg := s.srv.regions.addressGroup(m, &g); code != "" {
		return code, msg
	}
	if m.Subject == contract.GroupMsgSubject(gid) && g.Seq > 0 {
		m.Header.Set(contract.HdrExpectLastSubjSeq, strconv.FormatUint(g.Seq, 10))
		m.Header.Set(contract.HdrExpectLastSubjSeqSubject, contract.GroupEventSubject(gid))
	} else {
		// Checked again against a record that cannot say (or a group
		// now elsewhere): no condition from the check before.
		m.Header.Del(contract.HdrExpectLastSubjSeq)
		m.Header.Del(contract.HdrExpectLastSubjSeqSubject)
	}
	return "", ""
}

// memberCheck tells why user may not act in group g: unknown_group for a
// group everyone left (as the groups function treats it), not_member for
// a group without user; "" if user is a member.
func memberCheck(g *contract.GroupRecord, user string) (protocol.ErrorCode, string) {
	switch {
	case len(g.Members) == 0:
		return protocol.ErrUnknownGroup, "no such group"
	case !g.IsMember(user):
		return protocol.ErrNotMember, "you are not a member of this group"
	}
	return "", ""
}

// typingGroup relays a typing frame in group gid to the online devices of
// its other members (core NATS, as typing to a user), if this user is one
// of them. The members come from a kept record (groupRecords.get).
func (s *session) typingGroup(gid string) {
	ok := s.goCall(func() {
		g, err := s.srv.groups.get(gid)
		if err != nil {
			code, msg := groupError(err)
			s.sendError(code, msg, "", 0, 0)
			return
		}
		if code, msg := memberCheck(&g, s.id.User); code != "" {
			s.sendError(code, msg, "", 0, 0)
			return
		}
		frame := protocol.AppendGroupTyping(nil, s.id.User, s.id.Device, gid)
		for u := range g.Members {
			if u != s.id.User && protocol.ValidID(u) {
				_ = s.srv.nc.Publish(contract.EventSubject(u), frame)
			}
		}
	})
	_ = ok // typing is worth nothing later: with too many requests in flight it is dropped
}

// groupBucket is GROUP_INFO, opened at start or, when it did not exist
// then, when a group first needs it. Its lock is a leaf, never held over
// a request.
type groupBucket struct {
	js jetstream.JetStream
	mu sync.Mutex
	kv jetstream.KeyValue
}

// bucket returns GROUP_INFO, opening it if it was not yet.
func (b *groupBucket) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	b.mu.Lock()
	kv := b.kv
	b.mu.Unlock()
	if kv == nil {
		var err error
		if kv, err = b.js.KeyValue(ctx, contract.GroupInfoKV); err != nil {
			return nil, fmt.Errorf("%w: bucket %s: %w", contract.ErrUnavailable, contract.GroupInfoKV, err)
		}
		b.mu.Lock()
		b.kv = kv
		b.mu.Unlock()
	}
	return kv, nil
}

// load returns group gid's record.
func (b *groupBucket) load(ctx context.Context, gid string) (contract.GroupRecord, error) {
	kv, err := b.bucket(ctx)
	if err != nil {
		return contract.GroupRecord{}, err
	}
	g, _, err := contract.LoadGroup(ctx, kv, gid)
	return g, err
}

// memberships returns a user's list of groups under key
// (contract.MembershipsKey): none if there is none.
func (b *groupBucket) memberships(ctx context.Context, key string) (contract.Memberships, error) {
	var list contract.Memberships
	kv, err := b.bucket(ctx)
	if err != nil {
		return list, err
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return list, nil
	}
	if err != nil {
		return list, err
	}
	err = json.Unmarshal(e.Value(), &list)
	return list, err
}
