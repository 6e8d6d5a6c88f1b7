package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

// putGroup writes group gid's record into GROUP_INFO, as the groups
// function would after its latest change: members in the order given,
// the first an admin.
func putGroup(t *testing.T, n *tk.NATS, gid string, members ...string) {
	t.Helper()
	putGroupAt(t, n, gid, 0, members...)
}

// groupsStream is GROUPS, read as an operator.
func groupsStream(t *testing.T, n *tk.NATS) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := n.JS.Stream(ctx, contract.GroupsStream)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func storedCount(t *testing.T, st jetstream.Stream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func serverCode(err error) protocol.ErrorCode {
	var se *client.ServerError
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}

// respondGroups answers the groups function's requests on a connection
// in its role, as the function does: answer returns the reply, or an
// error code (a refusal, as a micro error with the code in its data).
func respondGroups(t *testing.T, n *tk.NATS, answer func(op string, req contract.GroupRequest) (contract.GroupRecord, string)) *nats.Subscription {
	t.Helper()
	nc := n.Connect(t, natsauth.Groups)
	sub, err := nc.Subscribe(contract.GroupsSubjectPrefix+".*", func(m *nats.Msg) {
		op := m.Subject[len(contract.GroupsSubjectPrefix)+1:]
		var req contract.GroupRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("group request %q: %v", m.Data, err)
			return
		}
		g, code := answer(op, req)
		if code != "" {
			r := nats.NewMsg(m.Reply)
			r.Header.Set(micro.ErrorCodeHeader, "409")
			r.Header.Set(micro.ErrorHeader, "refused")
			r.Data, _ = json.Marshal(map[string]string{"code": code, "message": "refused: " + code})
			_ = m.RespondMsg(r)
			return
		}
		b, _ := json.Marshal(contract.GroupReply{Group: g})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// Group frames go to the groups function with the token's user and
// device; its answer is the group, members in the order they joined; its
// refusals arrive with their own codes; no function is unavailable.
func TestGroupOpsGoToTheGroupsFunction(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	asked := make(chan string, 16)
	sub := respondGroups(t, n, func(op string, req contract.GroupRequest) (contract.GroupRecord, string) {
		asked <- fmt.Sprintf("%s %s/%s %s %q %v", op, req.Actor, req.Device, req.Group, req.Name, req.Users)
		switch {
		case op == contract.GroupAdd && req.Users[0] == "mallory":
			return contract.GroupRecord{}, contract.GroupErrNotAdmin
		case op == contract.GroupInfo && req.Group == "nope":
			return contract.GroupRecord{}, contract.GroupErrUnknown
		}
		rec := contract.GroupRecord{ID: req.Group, Name: "Friends", CreatedBy: req.Actor, Created: 1795582349000,
			Members: map[string]contract.GroupMember{req.Actor: {Admin: true, Joined: 1}}}
		for i, u := range req.Users {
			rec.Members[u] = contract.GroupMember{Joined: uint64(10 - i)} // carol joined before bob
		}
		return rec, ""
	})
	alice := tk.Dial(t, g.URL, "alice", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	grp, err := alice.CreateGroup(ctx, "friends", "Friends", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	if got := <-asked; got != `create alice/phone friends "Friends" [bob carol]` {
		t.Fatalf("the function was asked %s", got)
	}
	want := []protocol.GroupMember{{User: "alice", Admin: true}, {User: "carol"}, {User: "bob"}}
	if grp.ID != "friends" || grp.Name != "Friends" || grp.CreatedBy != "alice" || grp.Created.UnixMilli() != 1795582349000 ||
		fmt.Sprint(grp.Members) != fmt.Sprint(want) {
		t.Fatalf("group %+v, want members %v", grp, want)
	}

	_, err = alice.AddMembers(ctx, "friends", "mallory")
	if code := serverCode(err); code != protocol.ErrNotAdmin {
		t.Fatalf("refused add: %v, want not_admin", err)
	}
	<-asked
	_, err = alice.GroupInfo(ctx, "nope")
	if code := serverCode(err); code != protocol.ErrUnknownGroup {
		t.Fatalf("info of an unknown group: %v, want unknown_group", err)
	}
	<-asked

	// The function stops: the gateway says unavailable (the SDK would
	// ask again, so a frame of its own asks).
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	r := connectRaw(t, g, "alice", "laptop")
	r.write(`{"type":"group","id":"q-1","op":"info","group":"friends"}`)
	r.expectError(protocol.ErrUnavailable, "q-1", 0)
}

// A group operation reaches the function with its frame's id as the
// request's, and the SDK asks one answered unavailable again under the
// same id, so the function can tell a repeat from a new change.
func TestGroupOpAskedAgainUnderItsID(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	nc := n.Connect(t, natsauth.Groups)
	asked := make(chan string, 4)
	sub, err := nc.Subscribe(contract.GroupSubject(contract.GroupAdd), func(m *nats.Msg) {
		var req contract.GroupRequest
		_ = json.Unmarshal(m.Data, &req)
		asked <- req.Request
		if len(asked) == 1 { // the first ask: the function is busy
			r := nats.NewMsg(m.Reply)
			r.Header.Set(micro.ErrorCodeHeader, "503")
			r.Header.Set(micro.ErrorHeader, "unavailable: busy")
			_ = m.RespondMsg(r)
			return
		}
		b, _ := json.Marshal(contract.GroupReply{Group: contract.GroupRecord{ID: req.Group,
			Members: map[string]contract.GroupMember{req.Actor: {Admin: true, Joined: 1}, req.Users[0]: {Joined: 2}}}})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	alice := tk.Dial(t, g.URL, "alice", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	grp, err := alice.AddMembers(ctx, "friends", "dave")
	if err != nil || !grp.IsMember("dave") {
		t.Fatalf("add answered unavailable once: %+v, %v", grp, err)
	}
	first, second := <-asked, <-asked
	if first == "" || second != first {
		t.Fatalf("asked under request ids %q then %q, want one id twice", first, second)
	}
}

func TestGroupFramesAreRateLimited(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.GroupRate, cfg.GroupBurst = 0.001, 2
	g := tk.StartGateway(t, n, cfg)
	respondGroups(t, n, func(_ string, req contract.GroupRequest) (contract.GroupRecord, string) {
		return contract.GroupRecord{ID: req.Group, Members: map[string]contract.GroupMember{req.Actor: {Admin: true}}}, ""
	})
	// Frames of its own: the SDK waits out a rate_limited and asks again.
	r := connectRaw(t, g, "alice", "phone")
	for i := range 3 {
		r.write(fmt.Sprintf(`{"type":"group","id":"q-%d","op":"info","group":"friends"}`, i))
	}
	// The refusal is answered at once, the others once the function has.
	got := map[string]string{}
	for range 3 {
		f := r.next()
		got[f.ID] = f.Type + " " + string(f.Code)
	}
	if want := map[string]string{"q-0": "group ", "q-1": "group ", "q-2": "error rate_limited"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("three infos answered %v, want %v", got, want)
	}
	// Sends have their own bucket.
	r.write(`{"type":"send","id":"m1","to":"bob","body":"still here"}`)
	if f := r.next(); f.Type != protocol.TypeSent || f.ID != "m1" {
		t.Fatalf("send after the group bucket emptied answered %+v", *f)
	}
}

// A member's group send is stored once in the group's log, with the
// headers the fan-out reads; a non-member's, or one to a group that does
// not exist, is refused and stores nothing; sends after a refused one go
// on.
func TestGroupSendIsStoredOnceInTheGroupLog(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	putGroup(t, n, "friends", "alice", "bob")
	st := groupsStream(t, n)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	carol := tk.Dial(t, g.URL, "carol", "laptop")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	s, err := alice.SendGroup(ctx, "friends", "m1", tk.Body("hi all"))
	if err != nil {
		t.Fatal(err)
	}
	rm, err := st.GetMsg(ctx, s.Seq)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		contract.HdrKind: contract.KindMsg, contract.HdrFrom: "alice", contract.HdrDevice: "phone",
		contract.HdrID: "m1", contract.HdrGroup: "friends", contract.HdrMsgID: contract.MsgDedupID("alice", "m1"),
		contract.HdrTS: strconv.FormatInt(s.TS.UnixMilli(), 10), contract.HdrTTL: strconv.Itoa(30 * 24 * 3600),
	}
	for h, v := range want {
		if got := rm.Header.Get(h); got != v {
			t.Errorf("stored header %s = %q, want %q", h, got, v)
		}
	}
	if rm.Subject != contract.GroupMsgSubject("friends") || string(rm.Data) != `"hi all"` {
		t.Fatalf("stored %s %s", rm.Subject, rm.Data)
	}

	// The same id again: the store keeps one copy.
	again, err := alice.SendGroup(ctx, "friends", "m1", tk.Body("hi all"))
	if err != nil || !again.Dup || again.Seq != s.Seq {
		t.Fatalf("resend: %+v, %v; want dup of seq %d", again, err, s.Seq)
	}

	before := storedCount(t, st)
	if _, err := carol.SendGroup(ctx, "friends", "c1", tk.Body("let me in")); serverCode(err) != protocol.ErrNotMember {
		t.Fatalf("non-member's send: %v, want not_member", err)
	}
	if _, err := alice.SendGroup(ctx, "strangers", "m2", tk.Body("anyone?")); serverCode(err) != protocol.ErrUnknownGroup {
		t.Fatalf("send to no group: %v, want unknown_group", err)
	}
	// A group everyone left is no group, as the groups function says.
	kv, err := n.JS.KeyValue(ctx, contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "gone", []byte(`{"id":"gone","name":"Gone","created_by":"alice","members":{}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, "gone", "m2", tk.Body("anyone?")); serverCode(err) != protocol.ErrUnknownGroup {
		t.Fatalf("send to a group everyone left: %v, want unknown_group", err)
	}
	if got := storedCount(t, st); got != before {
		t.Fatalf("GROUPS holds %d messages after refused sends, want %d", got, before)
	}
	// The connection's sends go on, to users and to the group.
	send(t, alice, "bob", "m3", "one to one")
	s4, err := alice.SendGroup(ctx, "friends", "m4", tk.Body("and to all"))
	if err != nil || s4.Seq <= s.Seq {
		t.Fatalf("later group send: %+v, %v", s4, err)
	}
}

// copyInto stores member's copy of a group message or change into their
// inbox, as the groups function does.
func copyInto(t *testing.T, js jetstream.JetStream, member, kind, from, device, id, gid string, gseq uint64, body []byte) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	m := &nats.Msg{Subject: contract.InboxSubject(member), Data: body, Header: nats.Header{
		contract.HdrMsgID:    {contract.GroupCopyDedupID(gid, gseq, member)},
		contract.HdrKind:     {kind},
		contract.HdrFrom:     {from},
		contract.HdrDevice:   {device},
		contract.HdrID:       {id},
		contract.HdrTS:       {"1795582349000"},
		contract.HdrGroup:    {gid},
		contract.HdrGroupSeq: {strconv.FormatUint(gseq, 10)},
	}}
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// Members' copies arrive as msg frames with group, a change with event
// instead of body; acking a stretch that holds group copies raises the
// member's delivered position in the group to the newest of them, and a
// read of one their read position; the copies' sender is told nothing
// of a message the log does not hold.
func TestGroupCopiesRaiseTheMembersPositions(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	putGroup(t, n, "friends", "alice", "bob")
	groups, err := jetstream.New(n.Connect(t, natsauth.Groups))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan protocol.ErrorCode, 16)
	bob := tk.Dial(t, g.URL, "bob", "phone", func(o *client.Options) {
		o.OnError = func(code protocol.ErrorCode, _ string, _ uint64) { errs <- code }
	})
	carol := tk.Dial(t, g.URL, "carol", "phone")

	seqMsg := copyInto(t, groups, "bob", contract.KindMsg, "alice", "phone", "m7", "friends", 51, []byte(`"hi all"`))
	m := tk.RecvMsg(t, bob, wait)
	if m.Seq != seqMsg || m.Group != "friends" || m.From != "alice" || m.Device != "phone" || m.ID != "m7" ||
		string(m.Body) != `"hi all"` || m.Event != nil || m.TS.UnixMilli() != 1795582349000 {
		t.Fatalf("group message %+v", m)
	}
	ev := []byte(`{"op":"add","users":["carol"]}`)
	seqEv := copyInto(t, groups, "bob", contract.KindEvent, "alice", "phone", "ev-130", "friends", 52, ev)
	e := tk.RecvMsg(t, bob, wait)
	if e.Seq != seqEv || e.Group != "friends" || e.ID != "ev-130" || e.Event == nil || e.Event.Op != "add" ||
		fmt.Sprint(e.Event.Users) != "[carol]" || len(e.Body) != 0 {
		t.Fatalf("system message %+v", e)
	}
	// A message from the same sender with the same id, outside the group,
	// is another message.
	one := send(t, carol, "bob", "m7", "one to one")
	if o := tk.RecvMsg(t, bob, wait); o.Seq != one.Seq || o.Group != "" {
		t.Fatalf("one-to-one message %+v", o)
	}

	bob.Read(seqMsg)
	bob.Ack(seqMsg)
	bob.Ack(seqEv)
	bob.Ack(one.Seq)
	// carol's tick comes; the stretch is settled, and alice, the group
	// copies' sender, got none.
	if r := tk.RecvReceipt(t, carol, wait); r.Status != protocol.StatusDelivered || r.Seq != one.Seq {
		t.Fatalf("carol's receipt %+v", r)
	}
	tk.WaitFor(t, wait, func() error {
		if c := cursor(t, n, "bob", "phone"); c < one.Seq {
			return fmt.Errorf("bob's cursor at %d", c)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	inbox, err := n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	ticks, err := n.JS.KeyValue(ctx, contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, wait, func() error {
		e, err := ticks.Get(ctx, contract.GroupTickKey("friends", "bob"))
		if err != nil {
			return err
		}
		if got := string(e.Value()); got != `{"d":52,"r":51}` {
			return fmt.Errorf("bob's position in friends %s", got)
		}
		return nil
	})
	if rm, err := inbox.GetLastMsgForSubject(ctx, contract.InboxSubject("alice")); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("alice's inbox holds %v (%v): a tick for a message the group's log does not hold", rm, err)
	}
	select {
	case code := <-errs:
		t.Fatalf("bob got %s", code)
	default:
	}
}

// Typing in a group reaches the other members' online devices; a
// non-member's is refused.
func TestGroupTypingReachesMembers(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	putGroup(t, n, "friends", "alice", "bob", "carol")
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "laptop")
	carol := tk.Dial(t, g.URL, "carol", "phone")
	errs := make(chan protocol.ErrorCode, 4)
	dave := tk.Dial(t, g.URL, "dave", "phone", func(o *client.Options) {
		o.OnError = func(code protocol.ErrorCode, _ string, _ uint64) { errs <- code }
	})

	if err := alice.SendTypingGroup("friends"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol} {
		if ev := recvTyping(t, c); ev.From != "alice" || ev.Device != "phone" || ev.Group != "friends" {
			t.Fatalf("typing event %+v, want alice/phone in friends", ev)
		}
	}
	if err := dave.SendTypingGroup("friends"); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-errs:
		if code != protocol.ErrNotMember {
			t.Fatalf("non-member's typing: %s, want not_member", code)
		}
	case <-time.After(wait):
		t.Fatal("non-member's typing was not refused")
	}
	// Fence: carol types next; bob's first event after alice's is hers,
	// so dave's reached no one.
	if err := carol.SendTypingGroup("friends"); err != nil {
		t.Fatal(err)
	}
	if ev := recvTyping(t, bob); ev.From != "carol" {
		t.Fatalf("bob got typing %+v, want carol's", ev)
	}
	// alice's own device does not hear herself.
	if ev := recvTyping(t, alice); ev.From != "carol" {
		t.Fatalf("alice got typing %+v, want carol's only", ev)
	}
}

// groupAnswer reads r's frames until the group frame answering id.
func groupAnswer(t *testing.T, r *raw, id string) *protocol.Frame {
	t.Helper()
	for {
		f := r.next()
		if f.Type == protocol.TypeError && f.ID == id {
			t.Fatalf("%s refused: %+v", id, f)
		}
		if f.Type == protocol.TypeGroup && f.ID == id {
			return f
		}
	}
}

// A member removed who asks one of their old changes again (same id) is
// answered with the group as that change left it, themselves in it (as
// documented); the gateway must not take that for the group as it is:
// their typing is still refused.
func TestRemovedMemberAskingAnOldChangeAgainStaysOut(t *testing.T) {
	n := tk.StartNATS(t)
	startGroupsFunction(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := connectRaw(t, g, "alice", "phone")
	alice.write(`{"type":"group","id":"a-1","op":"create","group":"friends","name":"Friends","users":["bob","dave"]}`)
	groupAnswer(t, alice, "a-1")
	alice.write(`{"type":"group","id":"a-2","op":"promote","group":"friends","users":["dave"]}`)
	groupAnswer(t, alice, "a-2")
	dave := connectRaw(t, g, "dave", "phone")
	dave.write(`{"type":"group","id":"d-1","op":"rename","group":"friends","name":"Dave's"}`)
	groupAnswer(t, dave, "d-1")
	alice.write(`{"type":"group","id":"a-3","op":"remove","group":"friends","users":["dave"]}`)
	groupAnswer(t, alice, "a-3")

	dave.write(`{"type":"group","id":"d-1","op":"rename","group":"friends","name":"Dave's"}`)
	groupAnswer(t, dave, "d-1")
	dave.write(`{"type":"typing","group":"friends"}`)
	for {
		f := dave.next()
		if f.Type == protocol.TypeError {
			if f.Code != protocol.ErrNotMember {
				t.Fatalf("dave's typing: %+v, want not_member", f)
			}
			return
		}
	}
}

// What the wire refuses about groups: media in a group send, a status
// about a group message naming another group, typing to a user and a
// group at once.
func TestGroupFramesTheGatewayRefuses(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	putGroup(t, n, "friends", "alice", "bob")
	st := groupsStream(t, n)
	alice := connectRaw(t, g, "alice", "phone")

	alice.writeJSON(protocol.Frame{Type: protocol.TypeSend, ID: "p1", Group: "friends", Media: &protocol.Media{
		Key: "u/alice/4f0c8a2e9b7d41c6a3e5f1d2c7b8a901", Mime: "image/jpeg", Size: 10,
		SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}})
	alice.expectError(protocol.ErrBadMedia, "p1", 0)

	alice.write(string(protocol.AppendGroupSend(nil, "g1", "friends", tk.Body("hi all"))))
	f := alice.next()
	if f.Type != protocol.TypeSent || f.ID != "g1" || f.Seq == 0 {
		t.Fatalf("got %+v, want sent for g1", *f)
	}
	// A status names the group the message was sent in: another group's
	// is unknown_seq.
	alice.write(fmt.Sprintf(`{"type":"status","seq":%d,"group":"others"}`, f.Seq))
	alice.expectError(protocol.ErrUnknownSeq, "", f.Seq)
	alice.write(`{"type":"typing","to":"bob","group":"friends"}`)
	alice.expectError(protocol.ErrBadField, "", 0)
	alice.write(`{"type":"typing","group":"friends.*"}`)
	alice.expectError(protocol.ErrBadID, "", 0)
	if got := storedCount(t, st); got != 1 {
		t.Fatalf("GROUPS holds %d messages, want g1 only", got)
	}
}

// Group sends and sends to users written at once, pipelined, are stored
// one after the other in the order they arrived, across the two streams,
// and answered in that order.
func TestGroupAndUserSendsShareOneOrder(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	putGroup(t, n, "friends", "alice", "bob")
	alice := connectRaw(t, g, "alice", "phone")
	ids := []string{"g1", "u1", "g2", "u2", "g3", "u3"}
	for _, id := range ids {
		if id[0] == 'g' {
			alice.write(string(protocol.AppendGroupSend(nil, id, "friends", tk.Body(id))))
		} else {
			alice.write(string(protocol.AppendSend(nil, id, "bob", tk.Body(id))))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	inbox, err := n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	st := groupsStream(t, n)
	var last time.Time
	for _, id := range ids {
		f := alice.next()
		if f.Type != protocol.TypeSent || f.ID != id {
			t.Fatalf("got %+v, want sent for %s", *f, id)
		}
		from := inbox
		if id[0] == 'g' {
			from = st
		}
		rm, err := from.GetMsg(ctx, f.Seq)
		if err != nil || rm.Header.Get(contract.HdrID) != id {
			t.Fatalf("%s at seq %d: %v, %v", id, f.Seq, rm, err)
		}
		if !rm.Time.After(last) {
			t.Fatalf("%s stored at %s, not after the send before it (%s)", id, rm.Time, last)
		}
		last = rm.Time
	}
}

// A gateway started before GROUP_INFO existed answers group sends
// unavailable, and takes them once the bucket is made.
func TestGroupSendsWaitForTheBucket(t *testing.T) {
	n := tk.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := n.JS.DeleteKeyValue(ctx, contract.GroupInfoKV); err != nil {
		t.Fatal(err)
	}
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := connectRaw(t, g, "alice", "phone")
	alice.write(string(protocol.AppendGroupSend(nil, "g1", "friends", tk.Body("hi"))))
	alice.expectError(protocol.ErrUnavailable, "g1", 0)

	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	putGroup(t, n, "friends", "alice", "bob")
	alice.write(string(protocol.AppendGroupSend(nil, "g1", "friends", tk.Body("hi"))))
	if f := alice.next(); f.Type != protocol.TypeSent || f.ID != "g1" {
		t.Fatalf("got %+v, want sent for g1", *f)
	}
}

// A resend of a group send stored before (its answer lost), made after
// its sender was removed, is answered as stored, with its seq, not
// refused not_member: the app must not show as failed a message the
// members got. What was never stored is refused as before, and asking
// the store stores nothing.
func TestResendOfAStoredGroupSendAfterRemoval(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	putGroup(t, n, "friends", "alice", "bob")
	st := groupsStream(t, n)
	alice := connectRaw(t, g, "alice", "phone")
	alice.write(string(protocol.AppendGroupSend(nil, "g1", "friends", tk.Body("hi all"))))
	f := alice.next()
	if f.Type != protocol.TypeSent || f.ID != "g1" || f.Seq == 0 || f.Dup {
		t.Fatalf("got %+v, want sent for g1", *f)
	}
	putGroup(t, n, "friends", "bob") // alice removed
	alice.write(string(protocol.AppendGroupSend(nil, "g1", "friends", tk.Body("hi all"))))
	if again := alice.next(); again.Type != protocol.TypeSent || again.ID != "g1" || again.Seq != f.Seq || !again.Dup {
		t.Fatalf("resend after removal: %+v, want sent dup at %d", *again, f.Seq)
	}
	alice.write(string(protocol.AppendGroupSend(nil, "g2", "friends", tk.Body("still here?"))))
	alice.expectError(protocol.ErrNotMember, "g2", 0)
	if got := storedCount(t, st); got != 1 {
		t.Fatalf("GROUPS holds %d messages, want g1 only", got)
	}
}

// storeChange stores a change of group gid in its log, as the groups
// function does before it writes the record: the group as the change
// left it, members in the order given. It returns the change's sequence.
func storeChange(t *testing.T, n *tk.NATS, gid, op string, members ...string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	g := contract.GroupRecord{ID: gid, Name: "The " + gid, CreatedBy: "alice", Members: map[string]contract.GroupMember{}}
	for i, m := range members {
		g.Members[m] = contract.GroupMember{Admin: i == 0, Joined: uint64(i + 1)}
	}
	b, _ := json.Marshal(map[string]any{"op": op, "actor": "alice", "device": "phone", "group": g})
	ack, err := n.JS.Publish(ctx, contract.GroupEventSubject(gid), b)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// putGroupAt writes group gid's record into GROUP_INFO as of the change
// stored at seq (0: not known), members as for putGroup.
func putGroupAt(t *testing.T, n *tk.NATS, gid string, seq uint64, members ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	kv, err := n.JS.KeyValue(ctx, contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	g := contract.GroupRecord{ID: gid, Name: "The " + gid, CreatedBy: members[0], Created: 1795582349000,
		Members: map[string]contract.GroupMember{}, Changes: uint64(len(members)), Seq: seq}
	for i, m := range members {
		g.Members[m] = contract.GroupMember{Admin: i == 0, Joined: uint64(i + 1)}
	}
	b, _ := json.Marshal(g)
	if _, err := kv.Put(ctx, gid, b); err != nil {
		t.Fatal(err)
	}
}

// loggedMsgs counts the chat messages in group gid's log.
func loggedMsgs(t *testing.T, st jetstream.Stream, gid string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(contract.GroupMsgSubject(gid)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[contract.GroupMsgSubject(gid)]
}

// A group send is stored only if no change of the group was stored after
// the record its check used. Here the groups function has stored a
// change in the log and not yet written the record (GROUP_INFO follows
// the log): a sender that change removed is refused not_member, with
// nothing stored, though the record the gateway holds still lists them;
// a resend of what they sent before is still answered as stored; and a
// member's send that a change which leaves them in overtook is stored,
// once, after a check against the log.
func TestGroupSendCheckedAgainstTheLogAfterAChange(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	st := groupsStream(t, n)
	made := storeChange(t, n, "friends", "create", "alice", "bob")
	putGroupAt(t, n, "friends", made, "alice", "bob")
	alice := connectRaw(t, g, "alice", "phone")
	bob := connectRaw(t, g, "bob", "laptop")

	alice.write(string(protocol.AppendGroupSend(nil, "g1", "friends", tk.Body("hi all"))))
	f := alice.next()
	if f.Type != protocol.TypeSent || f.ID != "g1" || f.Seq <= made || f.Dup {
		t.Fatalf("got %+v, want sent for g1", *f)
	}

	// Alice removed in the log; the record, and the gateway's copy of
	// it, still list her.
	storeChange(t, n, "friends", "remove", "bob")
	alice.write(string(protocol.AppendGroupSend(nil, "g2", "friends", tk.Body("still here?"))))
	alice.expectError(protocol.ErrNotMember, "g2", 0)
	if got := loggedMsgs(t, st, "friends"); got != 1 {
		t.Fatalf("the log holds %d messages, want g1 only", got)
	}
	alice.write(string(protocol.AppendGroupSend(nil, "g1", "friends", tk.Body("hi all"))))
	if again := alice.next(); again.Type != protocol.TypeSent || again.ID != "g1" || again.Seq != f.Seq || !again.Dup {
		t.Fatalf("resend after removal: %+v, want sent dup at %d", *again, f.Seq)
	}

	// A rename overtakes bob's check: stored once, after it.
	renamed := storeChange(t, n, "friends", "rename", "bob")
	bob.write(string(protocol.AppendGroupSend(nil, "b1", "friends", tk.Body("just us"))))
	b := bob.next()
	if b.Type != protocol.TypeSent || b.ID != "b1" || b.Seq <= renamed || b.Dup {
		t.Fatalf("got %+v, want sent for b1 after the rename at %d", *b, renamed)
	}
	if got := loggedMsgs(t, st, "friends"); got != 2 {
		t.Fatalf("the log holds %d messages, want g1 and b1", got)
	}
}
