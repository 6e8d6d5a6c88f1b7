package groups_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/groups"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// env is a bare server with the streams applied and no function running;
// gw asks and stores group messages as a gateway does.
type env struct {
	n     *tk.NATS
	gw    *nats.Conn
	gwJS  jetstream.JetStream
	calls *contract.Caller
}

func newEnv(t testing.TB) *env {
	t.Helper()
	n := tk.StartStreams(t, t.TempDir())
	gw := n.Connect(t, natsauth.Gateway)
	js, err := jetstream.New(gw)
	if err != nil {
		t.Fatal(err)
	}
	return &env{n: n, gw: gw, gwJS: js, calls: n.Caller(t, natsauth.Gateway)}
}

// instance starts a groups function on its own connection in its own
// role, stopped at the end of the test unless stopped before.
func (e *env) instance(t testing.TB, cfg groups.Config) *groups.Service {
	t.Helper()
	nc := e.n.Connect(t, natsauth.Groups)
	js, _ := jetstream.New(nc)
	s, err := groups.Start(context.Background(), nc, js, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(s.Stop) })
	return s
}

func (e *env) do(t testing.TB, op string, req contract.GroupRequest) (contract.GroupRecord, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if req.Device == "" {
		req.Device = "phone"
	}
	var r contract.GroupReply
	err := contract.Call(ctx, e.calls, contract.GroupSubject(op), req, &r)
	return r.Group, err
}

func (e *env) must(t testing.TB, op string, req contract.GroupRequest) contract.GroupRecord {
	t.Helper()
	g, err := e.do(t, op, req)
	if err != nil {
		t.Fatalf("%s %+v: %v", op, req, err)
	}
	return g
}

// refused asks and wants the refusal code, and nothing changed: the
// group's events and record are as before.
func (e *env) refused(t testing.TB, code, op string, req contract.GroupRequest) {
	t.Helper()
	n, rec := e.events(t, req.Group), e.record(t, req.Group)
	_, err := e.do(t, op, req)
	var fe *contract.FnError
	if !errors.As(err, &fe) || fe.Code != code {
		t.Fatalf("%s %+v: %v, want refusal %s", op, req, err, code)
	}
	if m, r := e.events(t, req.Group), e.record(t, req.Group); m != n || !reflect.DeepEqual(r, rec) {
		t.Fatalf("%s refused with %s changed the group: %d events (was %d), record %+v (was %+v)", op, code, m, n, r, rec)
	}
}

// events counts group gid's stored events.
func (e *env) events(t testing.TB, gid string) uint64 {
	t.Helper()
	return e.count(t, contract.GroupsStream, contract.GroupEventSubject(gid))[contract.GroupEventSubject(gid)]
}

// count is how many messages stream holds per subject matching filter.
func (e *env) count(t testing.TB, stream, filter string) map[string]uint64 {
	t.Helper()
	ctx := context.Background()
	s, err := e.n.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Subjects == nil {
		return map[string]uint64{}
	}
	return info.State.Subjects
}

// record is gid's value in GROUP_INFO (zero when none).
func (e *env) record(t testing.TB, gid string) contract.GroupRecord {
	t.Helper()
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	g, _, err := contract.LoadGroup(context.Background(), kv, gid)
	if err != nil && !errors.Is(err, contract.ErrUnknownGroup) {
		t.Fatal(err)
	}
	return g
}

// send stores a chat message in gid's log as a gateway does, and returns
// its sequence.
func (e *env) send(t testing.TB, gid, from, id string) uint64 {
	t.Helper()
	ack, err := e.gwJS.PublishMsg(context.Background(), &nats.Msg{Subject: contract.GroupMsgSubject(gid), Data: []byte(`"` + id + ` from ` + from + `"`),
		Header: nats.Header{
			contract.HdrMsgID:  {"gm:" + gid + ":" + from + ":" + id},
			contract.HdrKind:   {contract.KindMsg},
			contract.HdrFrom:   {from},
			contract.HdrDevice: {"laptop"},
			contract.HdrID:     {id},
			contract.HdrTS:     {"1795582349000"},
			contract.HdrGroup:  {gid},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// settled waits until gid's partition has fanned out everything up to
// seq (its durable's ack floor).
func (e *env) settled(t testing.TB, gid string, seq uint64) {
	t.Helper()
	p, _ := strconv.Atoi(contract.GroupPartition(gid))
	tk.WaitFor(t, 30*time.Second, func() error {
		c, err := e.n.JS.Consumer(context.Background(), contract.GroupsStream, contract.GroupsDurable(p))
		if err != nil {
			return err
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return err
		}
		if info.AckFloor.Stream < seq {
			return fmt.Errorf("ack floor %d, want %d", info.AckFloor.Stream, seq)
		}
		return nil
	})
}

// lastSeq is GROUPS' last sequence.
func (e *env) lastSeq(t testing.TB) uint64 {
	t.Helper()
	s, err := e.n.JS.Stream(context.Background(), contract.GroupsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// inbox returns the group copies in user's inbox, in order.
func (e *env) inbox(t testing.TB, user string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := e.n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(contract.InboxSubject(user)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(contract.HdrGroup) != "" {
			out = append(out, m)
		}
		seq = m.Sequence + 1
	}
}

// says is a copy in short: "msg m1 from alice" or "event add [dave] by alice".
func says(m *jetstream.RawStreamMsg) string {
	if m.Header.Get(contract.HdrKind) == contract.KindEvent {
		var ev protocol.GroupEvent
		_ = json.Unmarshal(m.Data, &ev)
		s := fmt.Sprintf("event %s %v by %s", ev.Op, ev.Users, m.Header.Get(contract.HdrFrom))
		if len(ev.Promoted) > 0 {
			s += fmt.Sprintf(" promoted %v", ev.Promoted)
		}
		if ev.History != nil {
			s += fmt.Sprintf(" history %d", *ev.History)
		}
		return s
	}
	return "msg " + m.Header.Get(contract.HdrID) + " from " + m.Header.Get(contract.HdrFrom)
}

func inboxSays(t testing.TB, e *env, user string) []string {
	t.Helper()
	var out []string
	for _, m := range e.inbox(t, user) {
		out = append(out, says(m))
	}
	return out
}

func admins(g contract.GroupRecord) []string {
	var out []string
	for u, m := range g.Members {
		if m.Admin {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

func members(g contract.GroupRecord) []string {
	var out []string
	for u := range g.Members {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

func req(actor, gid string, users ...string) contract.GroupRequest {
	return contract.GroupRequest{Actor: actor, Group: gid, Users: users}
}

func named(actor, gid, name string, users ...string) contract.GroupRequest {
	return contract.GroupRequest{Actor: actor, Group: gid, Name: name, Users: users}
}

// Every operation does what the protocol's table says, stores one event
// per change and none for a change that changes nothing, and the record
// follows; every refusal changes nothing.
func TestOperationsAndRefusals(t *testing.T) {
	e := newEnv(t)
	e.instance(t, groups.DefaultConfig())
	const gid = "friends"

	e.refused(t, contract.GroupErrUnknown, contract.GroupInfo, req("alice", gid))
	e.refused(t, contract.GroupErrBadID, contract.GroupCreate, named("alice", "bad.id", "Friends"))
	e.refused(t, contract.GroupErrBadID, contract.GroupCreate, named("alice", gid, "Friends", "b*b"))
	e.refused(t, contract.GroupErrBadField, contract.GroupCreate, named("alice", gid, ""))
	e.refused(t, contract.GroupErrBadField, contract.GroupCreate, named("alice", gid, "Friends", "bob", "bob"))
	e.refused(t, contract.GroupErrAlreadyMember, contract.GroupCreate, named("alice", gid, "Friends", "alice"))

	g := e.must(t, contract.GroupCreate, named("alice", gid, "Friends", "bob", "carol"))
	if g.ID != gid || g.Name != "Friends" || g.CreatedBy != "alice" || !slices.Equal(members(g), []string{"alice", "bob", "carol"}) ||
		!slices.Equal(admins(g), []string{"alice"}) || g.Seq == 0 || g.Changes != 1 {
		t.Fatalf("created %+v", g)
	}
	if r := e.record(t, gid); !reflect.DeepEqual(r, g) {
		t.Fatalf("record %+v, answer %+v", r, g)
	}

	e.refused(t, contract.GroupErrExists, contract.GroupCreate, named("dave", gid, "Mine"))
	e.refused(t, contract.GroupErrNotAdmin, contract.GroupRename, named("bob", gid, "Bob's"))
	e.refused(t, contract.GroupErrNotMember, contract.GroupInfo, req("eve", gid))
	e.refused(t, contract.GroupErrNotMember, contract.GroupLeave, req("eve", gid))
	e.refused(t, contract.GroupErrNotMember, contract.GroupAdd, req("eve", gid, "mallory"))
	e.refused(t, contract.GroupErrAlreadyMember, contract.GroupAdd, req("alice", gid, "dave", "bob"))
	e.refused(t, contract.GroupErrUnknownMember, contract.GroupRemove, req("alice", gid, "dave"))
	e.refused(t, contract.GroupErrUnknownMember, contract.GroupPromote, req("alice", gid, "bob", "dave"))
	e.refused(t, contract.GroupErrBadField, contract.GroupRemove, req("alice", gid, "alice"))
	e.refused(t, contract.GroupErrBadField, contract.GroupAdd, req("alice", gid))
	e.refused(t, contract.GroupErrBadField, contract.GroupLeave, req("alice", gid, "bob"))
	e.refused(t, contract.GroupErrBadField, contract.GroupRename, named("alice", gid, "bad\nname"))
	e.refused(t, contract.GroupErrBadID, contract.GroupInfo, contract.GroupRequest{Actor: "alice", Device: "a.b", Group: gid})

	steps := []struct {
		op  string
		req contract.GroupRequest
		ok  func(contract.GroupRecord) bool
	}{
		{contract.GroupRename, named("alice", gid, "Old friends"), func(g contract.GroupRecord) bool { return g.Name == "Old friends" }},
		{contract.GroupAdd, req("alice", gid, "dave", "erin"), func(g contract.GroupRecord) bool { return len(g.Members) == 5 && g.Members["dave"].Joined == g.Changes }},
		{contract.GroupPromote, req("alice", gid, "bob"), func(g contract.GroupRecord) bool { return slices.Equal(admins(g), []string{"alice", "bob"}) }},
		{contract.GroupRemove, req("bob", gid, "erin"), func(g contract.GroupRecord) bool { return !g.IsMember("erin") }},
		{contract.GroupDemote, req("bob", gid, "alice"), func(g contract.GroupRecord) bool { return slices.Equal(admins(g), []string{"bob"}) }},
		{contract.GroupLeave, req("dave", gid), func(g contract.GroupRecord) bool { return slices.Equal(members(g), []string{"alice", "bob", "carol"}) }},
	}
	for _, s := range steps {
		before := e.events(t, gid)
		prev := e.record(t, gid)
		g := e.must(t, s.op, s.req)
		if !s.ok(g) || g.Changes != prev.Changes+1 || g.Seq <= prev.Seq {
			t.Fatalf("%s: %+v (before %+v)", s.op, g, prev)
		}
		if n := e.events(t, gid); n != before+1 {
			t.Fatalf("%s: %d events, want %d", s.op, n, before+1)
		}
		if r := e.record(t, gid); !reflect.DeepEqual(r, g) {
			t.Fatalf("%s: record %+v, answer %+v", s.op, r, g)
		}
	}

	// Changes that change nothing answer the group and store nothing.
	before, rec := e.events(t, gid), e.record(t, gid)
	for _, s := range []struct {
		op  string
		req contract.GroupRequest
	}{
		{contract.GroupPromote, req("bob", gid, "bob")},
		{contract.GroupDemote, req("bob", gid, "carol")},
		{contract.GroupRename, named("bob", gid, "Old friends")},
		{contract.GroupInfo, req("carol", gid)},
	} {
		if g := e.must(t, s.op, s.req); !reflect.DeepEqual(g, rec) {
			t.Fatalf("%s: %+v, want the group as it is %+v", s.op, g, rec)
		}
	}
	if n := e.events(t, gid); n != before {
		t.Fatalf("no-op changes stored %d events", n-before)
	}
	// The former admin is a plain member now.
	e.refused(t, contract.GroupErrNotAdmin, contract.GroupAdd, req("alice", gid, "frank"))
}

// A change asked again under the same request id (its answer lost to a
// timeout or a dropped connection) is answered as the first ask was, with
// the group as that change left it, and applied once: where deciding it
// again would refuse it, and where it would apply it again. The same id
// with other content, or from another device, is another request.
func TestRepeatedChangeAnsweredOnce(t *testing.T) {
	e := newEnv(t)
	s := e.instance(t, groups.DefaultConfig())
	const gid = "friends"
	ask := func(r contract.GroupRequest, id string) contract.GroupRequest {
		r.Request = id
		return r
	}
	// again asks and wants the first ask's answer, with nothing stored.
	again := func(op string, r contract.GroupRequest, first contract.GroupRecord) {
		t.Helper()
		before := e.events(t, gid)
		if g := e.must(t, op, r); !reflect.DeepEqual(g, first) {
			t.Fatalf("%s %+v again: %+v, want the first answer %+v", op, r, g, first)
		}
		if n := e.events(t, gid); n != before {
			t.Fatalf("%s %+v again stored %d events", op, r, n-before)
		}
	}

	create := ask(named("alice", gid, "Friends", "bob"), "q-1")
	again(contract.GroupCreate, create, e.must(t, contract.GroupCreate, create)) // would be group_exists

	add := ask(req("alice", gid, "dave"), "q-2")
	added := e.must(t, contract.GroupAdd, add)
	again(contract.GroupAdd, add, added) // would be already_member
	// The same id with other users is another request, and so is the
	// same request from another device.
	g := e.must(t, contract.GroupAdd, ask(req("alice", gid, "erin"), "q-2"))
	if !g.IsMember("erin") {
		t.Fatalf("add erin under a used id: %+v", g)
	}
	other := ask(req("alice", gid, "dave"), "q-2")
	other.Device = "laptop"
	e.refused(t, contract.GroupErrAlreadyMember, contract.GroupAdd, other)
	// Found behind a later change of the group.
	again(contract.GroupAdd, add, added)

	// Removed since: asking the add again would add dave again; the
	// store's duplicate id finds the first ask's change instead.
	e.must(t, contract.GroupRemove, ask(req("alice", gid, "dave"), "q-3"))
	again(contract.GroupAdd, add, added)
	if r := e.record(t, gid); r.IsMember("dave") {
		t.Fatal("a repeated add applied again")
	}

	leave := ask(req("bob", gid), "q-4")
	again(contract.GroupLeave, leave, e.must(t, contract.GroupLeave, leave)) // would be not_member

	// The asker removed since gets the answer of then, not the group as
	// it is now, which only members may see.
	e.must(t, contract.GroupPromote, ask(req("alice", gid, "erin"), "q-5"))
	e.must(t, contract.GroupRemove, ask(req("erin", gid, "alice"), "q-6"))
	e.must(t, contract.GroupAdd, ask(req("erin", gid, "frank"), "q-7"))
	again(contract.GroupAdd, add, added) // would be not_member

	// Without a request id nothing is taken for a repeat.
	e.refused(t, contract.GroupErrNotMember, contract.GroupAdd, req("alice", gid, "dave"))
	if st := s.Stats(); st.Repeats != 6 {
		t.Fatalf("repeats counted %d, want 6", st.Repeats)
	}
}

// Two admins adding at once are both applied, each to the group the
// other left. A change decided again too often in a row (others kept
// changing the group first) is refused unavailable, unapplied, and asked
// again here, as a client does.
func TestConcurrentChangesAreAllApplied(t *testing.T) {
	e := newEnv(t)
	s := e.instance(t, groups.DefaultConfig())
	e.instance(t, groups.DefaultConfig()) // a second instance: decisions race across instances too
	const gid = "team"
	e.must(t, contract.GroupCreate, named("alice", gid, "Team", "bob"))
	e.must(t, contract.GroupPromote, req("alice", gid, "bob"))
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		for _, admin := range []string{"alice", "bob"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				for range 5 {
					_, err = e.do(t, contract.GroupAdd, req(admin, gid, fmt.Sprintf("%s-%02d", admin, i)))
					if fe := (*contract.FnError)(nil); !errors.As(err, &fe) || fe.Status != 503 {
						break
					}
				}
				if err != nil {
					t.Errorf("%s add %d: %v", admin, i, err)
				}
			}()
		}
	}
	wg.Wait()
	g := e.must(t, contract.GroupInfo, req("alice", gid))
	if len(g.Members) != 2+2*n || g.Changes != 2+2*n {
		t.Fatalf("%d members after %d changes, want %d and %d", len(g.Members), g.Changes, 2+2*n, 2+2*n)
	}
	if ev := e.events(t, gid); ev != 2+2*n {
		t.Fatalf("%d events, want %d", ev, 2+2*n)
	}
	if r := e.record(t, gid); !reflect.DeepEqual(r, g) {
		t.Fatalf("record %+v, info %+v", r, g)
	}
	t.Logf("conflicts decided again: %d (this instance)", s.Stats().Conflicts)
}

// When the last admin leaves, the longest-standing member becomes one;
// the last member may not step down, and leaving empties the group,
// which may then be made again.
func TestLastAdminLeaves(t *testing.T) {
	e := newEnv(t)
	e.instance(t, groups.DefaultConfig())
	const gid = "club"
	e.must(t, contract.GroupCreate, named("alice", gid, "Club", "carol"))
	e.must(t, contract.GroupAdd, req("alice", gid, "bob"))
	g := e.must(t, contract.GroupLeave, req("alice", gid))
	if !slices.Equal(admins(g), []string{"carol"}) || g.IsMember("alice") {
		t.Fatalf("after the last admin left: %+v, want carol (the longest-standing) promoted", g)
	}
	// Stepping down is leaving the admins: the longest-standing other
	// member takes over.
	g = e.must(t, contract.GroupDemote, req("carol", gid, "carol"))
	if !slices.Equal(admins(g), []string{"bob"}) {
		t.Fatalf("after the last admin stepped down: admins %v, want bob", admins(g))
	}
	e.must(t, contract.GroupLeave, req("carol", gid))
	e.refused(t, contract.GroupErrBadField, contract.GroupDemote, req("bob", gid, "bob"))
	g = e.must(t, contract.GroupLeave, req("bob", gid))
	if len(g.Members) != 0 {
		t.Fatalf("after the last member left: %+v", g)
	}
	e.refused(t, contract.GroupErrUnknown, contract.GroupInfo, req("bob", gid))
	g = e.must(t, contract.GroupCreate, named("dave", gid, "Club again"))
	if g.CreatedBy != "dave" || !slices.Equal(members(g), []string{"dave"}) {
		t.Fatalf("made again: %+v", g)
	}
	e.settled(t, gid, e.lastSeq(t))
	want := []string{"event create [carol] by alice", "event add [bob] by alice", "event leave [] by alice promoted [carol]",
		"event demote [carol] by carol promoted [bob]", "event leave [] by carol"}
	if got := inboxSays(t, e, "carol"); !slices.Equal(got, want) {
		t.Fatalf("carol's inbox:\n%q\nwant\n%q", got, want)
	}
}

// A group has at most MaxMembers members.
func TestSizeLimit(t *testing.T) {
	e := newEnv(t)
	cfg := groups.DefaultConfig()
	cfg.MaxMembers = 4
	e.instance(t, cfg)
	e.refused(t, contract.GroupErrFull, contract.GroupCreate, named("alice", "g", "G", "b", "c", "d", "e"))
	e.must(t, contract.GroupCreate, named("alice", "g", "G", "b", "c"))
	e.refused(t, contract.GroupErrFull, contract.GroupAdd, req("alice", "g", "d", "e"))
	if g := e.must(t, contract.GroupAdd, req("alice", "g", "d")); len(g.Members) != 4 {
		t.Fatalf("%+v", g)
	}
	e.refused(t, contract.GroupErrFull, contract.GroupAdd, req("alice", "g", "e"))
}

// A message lands once in every member's inbox but the sender's, with
// the original's headers and the group's; system messages go to every
// member, the actor included.
func TestFanOut(t *testing.T) {
	e := newEnv(t)
	e.instance(t, groups.DefaultConfig())
	const gid = "friends"
	e.must(t, contract.GroupCreate, named("alice", gid, "Friends", "bob", "carol"))
	seq := e.send(t, gid, "alice", "m-7")
	e.settled(t, gid, seq)
	for _, u := range []string{"bob", "carol"} {
		in := e.inbox(t, u)
		if len(in) != 2 {
			t.Fatalf("%s's inbox: %d copies, want the create and the message", u, len(in))
		}
		ev, m := in[0], in[1]
		if says(ev) != "event create [bob carol] by alice" || ev.Header.Get(contract.HdrID) != "ev-1" ||
			ev.Header.Get(contract.HdrDevice) != "phone" || ev.Header.Get(contract.HdrGroupSeq) != "1" ||
			ev.Header.Get(contract.HdrMsgID) != contract.GroupCopyDedupID(gid, 1, u) {
			t.Fatalf("%s's event: %s %v", u, says(ev), ev.Header)
		}
		var body map[string]any
		if err := json.Unmarshal(ev.Data, &body); err != nil || body["name"] != "Friends" || body["op"] != "create" || len(body) != 3 {
			t.Fatalf("%s's event body %s", u, ev.Data)
		}
		h := m.Header
		if h.Get(contract.HdrKind) != contract.KindMsg || h.Get(contract.HdrFrom) != "alice" || h.Get(contract.HdrDevice) != "laptop" ||
			h.Get(contract.HdrID) != "m-7" || h.Get(contract.HdrTS) != "1795582349000" || h.Get(contract.HdrGroup) != gid ||
			h.Get(contract.HdrGroupSeq) != strconv.FormatUint(seq, 10) || h.Get(contract.HdrMsgID) != contract.GroupCopyDedupID(gid, seq, u) ||
			string(m.Data) != `"m-7 from alice"` {
			t.Fatalf("%s's copy: %v %s", u, h, m.Data)
		}
	}
	if got := inboxSays(t, e, "alice"); !slices.Equal(got, []string{"event create [bob carol] by alice"}) {
		t.Fatalf("alice's inbox: %q: the sender gets no copy of her message, but the system message", got)
	}
}

// A message goes to the members as of where the log stored it, whether
// the function runs as they are stored or starts afterwards (and reads
// membership back from the log).
func TestMembershipAtTheMessage(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(map[bool]string{false: "live", true: "from the log"}[late], func(t *testing.T) {
			e := newEnv(t)
			cfg := groups.DefaultConfig()
			if late {
				cfg = groups.WithoutFanOut(cfg) // answers, fans nothing out
			}
			e.instance(t, cfg)
			const gid = "book-club"
			e.must(t, contract.GroupCreate, named("alice", gid, "Books", "bob"))
			change := func(op string, r contract.GroupRequest) { e.must(t, op, r) }
			e.send(t, gid, "alice", "m1")
			change(contract.GroupRemove, req("alice", gid, "bob"))
			e.send(t, gid, "alice", "m2")
			change(contract.GroupAdd, req("alice", gid, "dave"))
			last := e.send(t, gid, "alice", "m3")
			if late {
				e.instance(t, groups.DefaultConfig())
			}
			e.settled(t, gid, last)
			want := map[string][]string{
				"bob":   {"event create [bob] by alice", "msg m1 from alice", "event remove [bob] by alice"},
				"dave":  {"event add [dave] by alice", "msg m3 from alice"},
				"alice": {"event create [bob] by alice", "event remove [bob] by alice", "event add [dave] by alice"},
			}
			for u, w := range want {
				if got := inboxSays(t, e, u); !slices.Equal(got, w) {
					t.Errorf("%s's inbox:\n%q\nwant\n%q", u, got, w)
				}
			}
		})
	}
}

// A message stored by someone who is not a member is dropped, and taken
// out of the log: nothing reading the log counts it as sent.
func TestNonMemberMessageDropped(t *testing.T) {
	e := newEnv(t)
	s := e.instance(t, groups.DefaultConfig())
	const gid = "quiet"
	e.must(t, contract.GroupCreate, named("alice", gid, "Quiet", "bob"))
	spam := e.send(t, gid, "eve", "spam")
	none := e.send(t, "nogroup", "eve", "spam") // no such group at all
	last := e.send(t, gid, "bob", "hi")
	e.settled(t, gid, last)
	e.settled(t, "nogroup", none)
	if got := inboxSays(t, e, "alice"); !slices.Equal(got, []string{"event create [bob] by alice", "msg hi from bob"}) {
		t.Fatalf("alice's inbox: %q", got)
	}
	if st := s.Stats(); st.Dropped != 2 {
		t.Fatalf("stats %+v: want 2 dropped", st)
	}
	st, err := e.n.JS.Stream(context.Background(), contract.GroupsStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{spam, none} {
		if _, err := st.GetMsg(context.Background(), seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("the dropped message at %d is still in the log (%v)", seq, err)
		}
	}
	if _, err := st.GetMsg(context.Background(), last); err != nil {
		t.Errorf("bob's message at %d: %v", last, err)
	}
}

// Taking a message out of the log twice (a redelivery, two instances) is
// done the second time too.
func TestDeletingAMessageTwiceIsDone(t *testing.T) {
	e := newEnv(t)
	s := e.instance(t, groups.WithoutFanOut(groups.DefaultConfig()))
	seq := e.send(t, "quiet", "eve", "spam")
	for i := range 2 {
		if err := s.DeleteMsg(context.Background(), seq); err != nil {
			t.Fatalf("delete %d: %v", i+1, err)
		}
	}
	st, err := e.n.JS.Stream(context.Background(), contract.GroupsStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetMsg(context.Background(), seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the message at %d: %v, want gone", seq, err)
	}
}

// An instance stopped in the middle of a 1,024-member fan-out hands the
// message back; the next one fans it out again, and every member's inbox
// holds exactly one copy. (A group this big is read from its log by
// default; the copies' path, kept for smaller groups and other regions'
// members, is tested at this size.)
func TestStopMidFanOutStoresEachCopyOnce(t *testing.T) {
	e := newEnv(t)
	first := e.instance(t, copiesConfig())
	const gid = "stadium"
	var users []string
	for i := range 1023 {
		users = append(users, fmt.Sprintf("u%04d", i))
	}
	e.must(t, contract.GroupCreate, named("alice", gid, "Stadium", users[:255]...))
	for i := 255; i < len(users); i += 256 {
		e.must(t, contract.GroupAdd, req("alice", gid, users[i:min(i+256, len(users))]...))
	}
	e.refused(t, contract.GroupErrFull, contract.GroupAdd, req("alice", gid, "one-more"))
	// A small group in another partition, to show the big fan-out holds
	// up nobody else.
	other := "side"
	for i := 0; contract.GroupPartition(other) == contract.GroupPartition(gid); i++ {
		other = fmt.Sprintf("side-%d", i)
	}
	e.settled(t, gid, e.lastSeq(t))
	e.settled(t, other, e.must(t, contract.GroupCreate, named("bob", other, "Side", "carol")).Seq)
	first.Stop()
	before := e.count(t, contract.Inbox, contract.InboxPrefix+">")

	const stopAfter = 300
	reached := make(chan struct{})
	var once sync.Once
	cfg := groups.WithAfterCopy(copiesConfig(), func(ctx context.Context, stored int) {
		if stored == stopAfter {
			once.Do(func() { close(reached) })
			<-ctx.Done() // held here until the instance stops
		}
	})
	stopped := e.instance(t, cfg)
	seq := e.send(t, gid, "alice", "kickoff")
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the fan-out never stored 300 copies")
	}
	// While it is held half-way, another partition goes on.
	e.settled(t, other, e.send(t, other, "bob", "meanwhile"))
	if got := inboxSays(t, e, "carol"); !slices.Equal(got, []string{"event create [carol] by bob", "msg meanwhile from bob"}) {
		t.Fatalf("carol's inbox: %q", got)
	}
	stopped.Stop()
	mid := e.count(t, contract.Inbox, contract.InboxPrefix+">")
	got := 0
	for _, u := range users {
		got += int(mid[contract.InboxSubject(u)] - before[contract.InboxSubject(u)])
	}
	if got < stopAfter || got >= len(users) {
		t.Fatalf("%d copies stored when stopped: want the fan-out stopped half-way", got)
	}

	e.instance(t, copiesConfig())
	e.settled(t, gid, seq)
	after := e.count(t, contract.Inbox, contract.InboxPrefix+">")
	for _, u := range users {
		if n := after[contract.InboxSubject(u)] - before[contract.InboxSubject(u)]; n != 1 {
			t.Fatalf("%s's inbox got %d copies, want 1", u, n)
		}
	}
	if n := after[contract.InboxSubject("alice")] - before[contract.InboxSubject("alice")]; n != 0 {
		t.Fatalf("the sender got %d copies", n)
	}
	t.Logf("%d of %d copies stored before the stop", got, len(users))
}

// GROUP_INFO follows the log: a record left behind (an instance died
// between storing the event and writing the record) is repaired from the
// group's last event before the next decision.
func TestRecordRepairedFromTheLog(t *testing.T) {
	e := newEnv(t)
	e.instance(t, groups.DefaultConfig())
	const gid = "lagging"
	old := e.must(t, contract.GroupCreate, named("alice", gid, "Lagging", "bob"))
	cur := e.must(t, contract.GroupAdd, req("alice", gid, "carol"))
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := json.Marshal(old)
	if _, err := kv.Put(context.Background(), gid, stale); err != nil {
		t.Fatal(err)
	}
	// carol is a member as of the log, whatever the record says.
	if g := e.must(t, contract.GroupInfo, req("carol", gid)); !reflect.DeepEqual(g, cur) {
		t.Fatalf("info %+v, want %+v", g, cur)
	}
	if r := e.record(t, gid); !reflect.DeepEqual(r, cur) {
		t.Fatalf("record %+v, want it repaired to %+v", r, cur)
	}
	// A record that is missing altogether is made again.
	if err := kv.Purge(context.Background(), gid); err != nil {
		t.Fatal(err)
	}
	g := e.must(t, contract.GroupRename, named("alice", gid, "Repaired"))
	if r := e.record(t, gid); !reflect.DeepEqual(r, g) {
		t.Fatalf("record %+v, want %+v", r, g)
	}
}

// A record left behind with nothing to repair it (no change or request
// comes for the group) is written by the fan-out of the change it
// missed, before the members hear of it.
func TestFanOutBringsTheRecordUpToItsChange(t *testing.T) {
	e := newEnv(t)
	const gid = "quiet"
	deciding := e.instance(t, groups.WithoutFanOut(groups.DefaultConfig()))
	old := e.must(t, contract.GroupCreate, named("alice", gid, "Quiet", "bob"))
	cur := e.must(t, contract.GroupAdd, req("alice", gid, "carol"))
	deciding.Stop()
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := json.Marshal(old)
	if _, err := kv.Put(context.Background(), gid, stale); err != nil {
		t.Fatal(err)
	}
	e.instance(t, groups.DefaultConfig())
	e.settled(t, gid, cur.Seq)
	if r := e.record(t, gid); !reflect.DeepEqual(r, cur) {
		t.Fatalf("record %+v after the fan-out, want %+v", r, cur)
	}
}

// Instances share the partitions: whichever handles a message, it goes to
// the members as of the message, though another instance handled the
// change before it.
func TestInstancesShareThePartitions(t *testing.T) {
	e := newEnv(t)
	e.instance(t, groups.DefaultConfig())
	e.instance(t, groups.DefaultConfig())
	e.instance(t, groups.DefaultConfig())
	const gid = "revolving"
	e.must(t, contract.GroupCreate, named("alice", gid, "Revolving door", "bob"))
	var want []string
	want = append(want, "event create [bob] by alice")
	var last uint64
	for i := range 15 {
		id := fmt.Sprintf("in-%d", i)
		e.send(t, gid, "alice", id)
		want = append(want, "msg "+id+" from alice")
		e.must(t, contract.GroupRemove, req("alice", gid, "bob"))
		want = append(want, "event remove [bob] by alice")
		e.send(t, gid, "alice", fmt.Sprintf("out-%d", i))
		e.must(t, contract.GroupAdd, req("alice", gid, "bob"))
		want = append(want, "event add [bob] by alice")
		last = e.send(t, gid, "carol", fmt.Sprintf("stranger-%d", i))
	}
	e.settled(t, gid, last)
	if got := inboxSays(t, e, "bob"); !slices.Equal(got, want) {
		t.Fatalf("bob's inbox:\n%q\nwant\n%q", got, want)
	}
}

// A group's record names the create that made it, and keeps it through
// later changes; a group left empty and made again names the new create,
// so what its log holds before is known to be an earlier group's.
func TestRecordKnowsTheCreateThatMadeIt(t *testing.T) {
	e := newEnv(t)
	e.instance(t, groups.DefaultConfig())
	const gid = "friends"
	g := e.must(t, contract.GroupCreate, named("alice", gid, "Friends", "bob"))
	if g.Made == 0 || g.Made != g.Seq {
		t.Fatalf("created %+v: made %d, want its own seq %d", g, g.Made, g.Seq)
	}
	made := g.Made
	g = e.must(t, contract.GroupRename, named("alice", gid, "Old friends"))
	if r := e.record(t, gid); g.Made != made || r.Made != made || r.Seq <= made {
		t.Fatalf("after a rename: answer made %d, record %+v; want made %d", g.Made, r, made)
	}
	e.must(t, contract.GroupLeave, req("bob", gid))
	e.must(t, contract.GroupLeave, req("alice", gid))
	g = e.must(t, contract.GroupCreate, named("carol", gid, "Mine", "dave"))
	if g.Made <= made || g.Made != g.Seq {
		t.Fatalf("made again %+v: made %d, want its own seq past %d", g, g.Made, made)
	}
}

// A change is not answered before GROUP_INFO has its record: the
// gateways check senders against it, so a create answered done with no
// record would have its members' sends refused unknown_group. It is
// answered unavailable, and asked again under the same id, answered as
// the change once the record can be written, stored once.
func TestAChangeIsAnsweredOnceItsRecordIsWritten(t *testing.T) {
	e := newEnv(t)
	e.instance(t, groups.WithoutFanOut(groups.DefaultConfig())) // no fan-out to write the record later
	ctx := context.Background()
	st, err := e.n.JS.Stream(ctx, "KV_"+contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	writable := cfg.MaxMsgSize
	cfg.MaxMsgSize = 8 // every record refused, reads still answered
	if _, err := e.n.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	create := named("alice", "g1", "G", "bob")
	create.Request = "q-1"
	_, err = e.do(t, contract.GroupCreate, create)
	var fe *contract.FnError
	if !errors.As(err, &fe) || fe.Status != 503 || fe.Code != "" {
		t.Fatalf("create with no record written: %v, want unavailable", err)
	}
	if g := e.record(t, "g1"); len(g.Members) != 0 {
		t.Fatalf("record %+v", g)
	}
	cfg.MaxMsgSize = writable
	if _, err := e.n.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	g := e.must(t, contract.GroupCreate, create)
	if members(g) == nil || !slices.Equal(members(g), []string{"alice", "bob"}) || !slices.Equal(members(e.record(t, "g1")), []string{"alice", "bob"}) {
		t.Fatalf("asked again: %+v, record %+v", g, e.record(t, "g1"))
	}
	if n := e.events(t, "g1"); n != 1 {
		t.Fatalf("%d events stored, want the create once", n)
	}
}

// A group on its log (Config.LogMembers): switched at the first change
// that leaves it with that many members, for good; from there no message
// is copied, and a change only to the users who start reading the log
// after it (every member at the switch, an added user at their add),
// marked with where they start. The same whether the function runs as
// the log is stored or starts afterwards.
func TestGroupOnItsLog(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(map[bool]string{false: "live", true: "from the log"}[late], func(t *testing.T) {
			e := newEnv(t)
			cfg := groups.DefaultConfig()
			cfg.LogMembers = 3
			answer := cfg
			if late {
				answer = groups.WithoutFanOut(cfg)
			}
			e.instance(t, answer)
			const gid = "crowd"
			if g := e.must(t, contract.GroupCreate, named("alice", gid, "Crowd", "bob")); g.Log {
				t.Fatal("a group of 2 is on its log at 3")
			}
			e.send(t, gid, "alice", "m1")
			if g := e.must(t, contract.GroupAdd, req("alice", gid, "carol")); !g.Log {
				t.Fatal("a group of 3 is not on its log at 3")
			}
			e.send(t, gid, "alice", "m2")
			e.must(t, contract.GroupAdd, req("alice", gid, "dave"))
			e.must(t, contract.GroupRemove, req("alice", gid, "bob", "carol"))
			last := e.send(t, gid, "dave", "m3")
			if late {
				e.instance(t, cfg)
			}
			e.settled(t, gid, last)
			if g := e.record(t, gid); !g.Log || len(g.Members) != 2 {
				t.Fatalf("record %+v: a group stays on its log when it shrinks", g)
			}
			want := map[string][]string{
				"alice": {"event create [bob] by alice", "event add [carol] by alice"},
				"bob":   {"event create [bob] by alice", "msg m1 from alice", "event add [carol] by alice"},
				"carol": {"event add [carol] by alice"},
				"dave":  {"event add [dave] by alice"},
			}
			for u, w := range want {
				in := e.inbox(t, u)
				var got []string
				for _, m := range in {
					got = append(got, says(m))
				}
				if !slices.Equal(got, w) {
					t.Errorf("%s's inbox:\n%q\nwant\n%q", u, got, w)
					continue
				}
				for i, m := range in {
					reads := m.Header.Get(contract.HdrGroupLog)
					switch {
					case i < len(in)-1:
						if reads != "" {
							t.Errorf("%s's copy %q starts the log at %s: before the switch", u, got[i], reads)
						}
					case reads != m.Header.Get(contract.HdrGroupSeq):
						t.Errorf("%s's copy %q: %s %q, want its own place in the log %s", u, got[i], contract.HdrGroupLog, reads, m.Header.Get(contract.HdrGroupSeq))
					}
				}
			}
		})
	}
}

// Two edges of the switch to the log: at a removal (the setting turned
// on for a group that is big already), the user taken out is told by
// copy, as they never read the log; and a group made again under the id
// of one on its log that everyone left starts afresh, its members
// starting to read at its create.
func TestGroupOnItsLogEdges(t *testing.T) {
	e := newEnv(t)
	old := e.instance(t, groups.DefaultConfig())
	const gid = "crowd"
	e.must(t, contract.GroupCreate, named("alice", gid, "Crowd", "bob", "carol", "dave"))
	old.Stop()
	cfg := groups.DefaultConfig()
	cfg.LogMembers = 3
	e.instance(t, cfg)
	if g := e.must(t, contract.GroupRemove, req("alice", gid, "dave")); !g.Log {
		t.Fatal("a group of 3 is not on its log at 3")
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		e.must(t, contract.GroupLeave, req(u, gid))
	}
	e.must(t, contract.GroupCreate, named("erin", gid, "Again", "frank", "gina"))
	last := e.send(t, gid, "erin", "m1")
	e.settled(t, gid, last)
	in := e.inbox(t, "dave")
	if got := inboxSays(t, e, "dave"); !slices.Equal(got, []string{"event create [bob carol dave] by alice", "event remove [dave] by alice"}) ||
		in[1].Header.Get(contract.HdrGroupLog) != "" {
		t.Errorf("dave's inbox: %q (the removal starting the log at %q)", got, in[len(in)-1].Header.Get(contract.HdrGroupLog))
	}
	for _, u := range []string{"frank", "gina"} {
		in := e.inbox(t, u)
		if len(in) != 1 || says(in[0]) != "event create [frank gina] by erin" || in[0].Header.Get(contract.HdrGroupLog) != in[0].Header.Get(contract.HdrGroupSeq) {
			t.Errorf("%s's inbox: %d copies, want the create starting the log", u, len(in))
		}
	}
}

// copiesConfig is the default with every group on copies.
func copiesConfig() groups.Config {
	cfg := groups.DefaultConfig()
	cfg.LogMembers = 0
	return cfg
}

// A group's history setting: only admins set it, 0 to 100, as a change
// the members are told of. A user added afterwards gets that many of the
// group's latest messages before they are told of the add (on copies),
// or reads the log from the first of them (on its log); one added while
// it is 0 gets nothing from before. An add that switches the group to its
// log starts only the users it adds at the history: the members had it.
func TestGroupHistory(t *testing.T) {
	for _, mode := range []string{"copies", "log", "switch"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			cfg := copiesConfig()
			onLog := mode != "copies"
			switch mode {
			case "log":
				cfg.LogMembers = 2
			case "switch":
				cfg.LogMembers = 4 // the add of dave, the fourth
			}
			e.instance(t, cfg)
			const gid = "crew"
			e.must(t, contract.GroupCreate, named("alice", gid, "Crew", "bob"))
			history := func(actor string, n int) contract.GroupRequest {
				r := req(actor, gid)
				r.History = &n
				return r
			}
			e.refused(t, contract.GroupErrNotAdmin, contract.GroupHistory, history("bob", 5))
			e.refused(t, contract.GroupErrBadField, contract.GroupHistory, history("alice", 101))
			e.refused(t, contract.GroupErrBadField, contract.GroupHistory, history("alice", -1))
			e.refused(t, contract.GroupErrBadField, contract.GroupHistory, req("alice", gid))
			e.refused(t, contract.GroupErrBadField, contract.GroupRename, history("alice", 5))

			e.send(t, gid, "alice", "m1")
			e.must(t, contract.GroupAdd, req("alice", gid, "carol")) // history 0: nothing from before
			if g := e.must(t, contract.GroupHistory, history("alice", 2)); g.History != 2 {
				t.Fatalf("history %d after setting 2", g.History)
			}
			e.send(t, gid, "bob", "m2")
			m3 := e.send(t, gid, "carol", "m3")
			e.send(t, gid, "alice", "m4")
			add := e.must(t, contract.GroupAdd, req("alice", gid, "dave"))
			last := e.send(t, gid, "bob", "m5")
			e.settled(t, gid, last)
			if g := e.record(t, gid); g.History != 2 {
				t.Fatalf("record %+v", g)
			}

			carol, dave := inboxSays(t, e, "carol"), inboxSays(t, e, "dave")
			want := map[string][2][]string{
				"copies": {
					{"event add [carol] by alice", "event history [] by alice history 2", "msg m2 from bob", "msg m4 from alice", "event add [dave] by alice", "msg m5 from bob"},
					{"msg m3 from carol", "msg m4 from alice", "event add [dave] by alice", "msg m5 from bob"},
				},
				"log": {{"event add [carol] by alice"}, {"event add [dave] by alice"}},
				"switch": {
					{"event add [carol] by alice", "event history [] by alice history 2", "msg m2 from bob", "msg m4 from alice", "event add [dave] by alice"},
					{"event add [dave] by alice"},
				},
			}[mode]
			if !slices.Equal(carol, want[0]) || !slices.Equal(dave, want[1]) {
				t.Fatalf("carol's inbox %q\nwant %q\ndave's %q\nwant %q", carol, want[0], dave, want[1])
			}
			in := e.inbox(t, "dave")
			addCopy := in[len(in)-1]
			if onLog {
				// dave reads the log from m3: the place before it.
				if got := addCopy.Header.Get(contract.HdrGroupLog); got != strconv.FormatUint(m3-1, 10) {
					t.Fatalf("dave starts the log after %s, want %d (m3 at %d, the add at %d)", got, m3-1, m3, add.Seq)
				}
				if mode == "switch" {
					in := e.inbox(t, "carol")
					if got := in[len(in)-1].Header.Get(contract.HdrGroupLog); got != strconv.FormatUint(add.Seq, 10) {
						t.Fatalf("carol starts the log after %s, want the add at %d: she had what came before", got, add.Seq)
					}
				}
				return
			}
			if got := in[0].Header.Get(contract.HdrGroupSeq); got != strconv.FormatUint(m3, 10) {
				t.Fatalf("dave's copy of m3 names %s in the log, want %d", got, m3)
			}
		})
	}
}
