package receipts_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// makeGroup writes group gid's record as the groups function would, as
// of a change stored at 1.
func makeGroup(t testing.TB, e *env, gid string, members ...string) {
	t.Helper()
	changeGroup(t, e, gid, 1, members...)
}

// changeGroup writes group gid's record as of a change stored at seq.
func changeGroup(t testing.TB, e *env, gid string, seq uint64, members ...string) {
	t.Helper()
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	g := contract.GroupRecord{ID: gid, Name: gid, CreatedBy: members[0], Members: map[string]contract.GroupMember{}, Seq: seq}
	for i, m := range members {
		g.Members[m] = contract.GroupMember{Admin: i == 0, Joined: 1}
	}
	b, _ := json.Marshal(g)
	if _, err := kv.Put(context.Background(), gid, b); err != nil {
		t.Fatal(err)
	}
}

// settled waits for group gid's aggregate to be computed from its
// record as of the change at seq: the settle the watch's news of it
// starts.
func settled(t testing.TB, e *env, gid string, seq uint64) {
	t.Helper()
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		var agg contract.GroupAggregate
		if v, err := kv.Get(context.Background(), contract.GroupAggregateKey(gid)); err != nil || json.Unmarshal(v.Value(), &agg) != nil || agg.Seq != seq {
			return tk.Errorf("aggregate %+v (%v), want one from the change at %d", agg, err, seq)
		}
		return nil
	})
}

// quiet waits for group gid's aggregate to be computed from its record
// as of the change at seq and for the instance's settles of the watch's
// news to be over: a test that then writes or hooks the aggregate races
// nothing.
func quiet(t testing.TB, e *env, s *receipts.Service, gid string, seq uint64) {
	t.Helper()
	settled(t, e, gid, seq)
	tk.WaitFor(t, 10*time.Second, func() error {
		if !s.NewsIdle() {
			return tk.Errorf("the news still settling")
		}
		return nil
	})
}

// sendGroup stores a chat message from sender in gid's log, as a gateway
// does, and returns its GROUPS sequence.
func sendGroup(t testing.TB, e *env, gid, from string) uint64 {
	t.Helper()
	m := &nats.Msg{Subject: contract.GroupMsgSubject(gid), Data: []byte(`"hi"`), Header: nats.Header{
		contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {from}, contract.HdrDevice: {"phone"},
		contract.HdrID: {fmt.Sprintf("m-%s-%d", from, len(from))}, contract.HdrGroup: {gid}}}
	ack, err := e.n.JS.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func position(t testing.TB, e *env, gid, member, status string, seq uint64) {
	t.Helper()
	req := contract.GroupPositionRequest{Group: gid, Member: member, Device: "phone", Status: status, Seq: seq}
	if err := e.call(t, contract.GroupPositionSubject, req, nil); err != nil {
		t.Fatal(err)
	}
}

// groupTicks returns the group receipts in user's inbox, as "status
// from..to".
func groupTicks(t testing.TB, e *env, user string) []string {
	t.Helper()
	var out []string
	for _, m := range e.ticks(t, user) {
		if m.Header.Get(contract.HdrGroup) != "" {
			out = append(out, m.Header.Get(contract.HdrStatus)+" "+m.Header.Get(contract.HdrSeqFrom)+".."+m.Header.Get(contract.HdrSeqTo))
		}
	}
	return out
}

func memberRecord(t testing.TB, e *env, gid, member string) (contract.GroupPosition, uint64) {
	t.Helper()
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	v, err := kv.Get(context.Background(), contract.GroupTickKey(gid, member))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return contract.GroupPosition{}, 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var p contract.GroupPosition
	if err := json.Unmarshal(v.Value(), &p); err != nil {
		t.Fatal(err)
	}
	return p, v.Revision()
}

// A member's positions only rise, a read raises delivered too, and a
// request asked again writes nothing.
func TestGroupPositionsOnlyRise(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob")
	position(t, e, "g1", "bob", protocol.StatusDelivered, 10)
	_, rev := memberRecord(t, e, "g1", "bob")
	position(t, e, "g1", "bob", protocol.StatusDelivered, 10) // again
	position(t, e, "g1", "bob", protocol.StatusDelivered, 4)  // lower
	if p, r := memberRecord(t, e, "g1", "bob"); p != (contract.GroupPosition{Delivered: 10}) || r != rev {
		t.Fatalf("after a repeat and a lower one: %+v rev %d, want {10 0} rev %d", p, r, rev)
	}
	position(t, e, "g1", "bob", protocol.StatusRead, 12)
	position(t, e, "g1", "bob", protocol.StatusRead, 3)
	if p, _ := memberRecord(t, e, "g1", "bob"); p != (contract.GroupPosition{Delivered: 12, Read: 12}) {
		t.Fatalf("after reads: %+v, want delivered and read 12", p)
	}
	// Not a member, no group: nothing kept.
	position(t, e, "g1", "mallory", protocol.StatusDelivered, 50)
	position(t, e, "nogroup", "bob", protocol.StatusDelivered, 50)
	if _, r := memberRecord(t, e, "g1", "mallory"); r != 0 {
		t.Fatal("a non-member's position was kept")
	}
	var fe *contract.FnError
	err := e.call(t, contract.GroupPositionSubject, contract.GroupPositionRequest{Group: "g1", Member: "bob", Device: "phone", Status: "seen", Seq: 3}, nil)
	if !errors.As(err, &fe) || fe.Status != 400 {
		t.Fatalf("a bad status: %v, want a 400", err)
	}
}

// A sender's group message is delivered once every other member has it,
// read once every other member read it: one receipt per sender per rise
// of the group's lowest position, and none when a request comes again.
func TestGroupTicksWaitForTheLastMember(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob", "carol", "dave")
	a1 := sendGroup(t, e, "g1", "alice")
	a2 := sendGroup(t, e, "g1", "alice")
	b1 := sendGroup(t, e, "g1", "bob")
	// alice has bob's message; bob and carol have everything; dave not yet.
	position(t, e, "g1", "alice", protocol.StatusDelivered, b1)
	position(t, e, "g1", "bob", protocol.StatusDelivered, a2)
	position(t, e, "g1", "carol", protocol.StatusDelivered, b1)
	if got := groupTicks(t, e, "alice"); len(got) != 0 {
		t.Fatalf("alice was told before dave had her messages: %v", got)
	}
	if got := groupTicks(t, e, "bob"); len(got) != 0 {
		t.Fatalf("bob was told before dave had his message: %v", got)
	}
	for range 2 { // the second time, as after a lost answer
		position(t, e, "g1", "dave", protocol.StatusDelivered, b1)
	}
	// bob has everything up to alice's second (his own is not his to
	// have): alice is told up to it, bob up to his own.
	want := fmt.Sprintf("delivered %d..%d", a1, a2)
	if got := groupTicks(t, e, "alice"); len(got) != 1 || got[0] != want {
		t.Fatalf("alice's group receipts %v, want [%s]", got, want)
	}
	wantBob := fmt.Sprintf("delivered %d..%d", a1, b1)
	if got := groupTicks(t, e, "bob"); len(got) != 1 || got[0] != wantBob {
		t.Fatalf("bob's group receipts %v, want [%s]", got, wantBob)
	}
	if got := groupTicks(t, e, "carol"); len(got) != 0 {
		t.Fatalf("carol sent nothing and was told %v", got)
	}

	// Reads: the same rule. bob, carol and alice read everything; dave
	// read alice's first only.
	position(t, e, "g1", "bob", protocol.StatusRead, b1)
	position(t, e, "g1", "carol", protocol.StatusRead, b1)
	position(t, e, "g1", "alice", protocol.StatusRead, b1)
	position(t, e, "g1", "dave", protocol.StatusRead, a1)
	wantA := []string{want, fmt.Sprintf("read %d..%d", a1, a1)}
	if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != fmt.Sprint(wantA) {
		t.Fatalf("alice's group receipts %v, want %v", got, wantA)
	}
	if got := groupTicks(t, e, "bob"); len(got) != 1 {
		t.Fatalf("bob was told of a read dave did not make: %v", got)
	}
	position(t, e, "g1", "dave", protocol.StatusRead, b1)
	position(t, e, "g1", "dave", protocol.StatusRead, b1)
	wantA = append(wantA, fmt.Sprintf("read %d..%d", a2, b1))
	if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != fmt.Sprint(wantA) {
		t.Fatalf("alice's group receipts %v, want %v", got, wantA)
	}
	wantB := []string{wantBob, fmt.Sprintf("read %d..%d", a1+1, b1)}
	if got := groupTicks(t, e, "bob"); fmt.Sprint(got) != fmt.Sprint(wantB) {
		t.Fatalf("bob's group receipts %v, want %v", got, wantB)
	}
	if st := s.Stats(); st.GroupDelivered != 5 || st.GroupRead != 6 {
		t.Fatalf("stats %+v", st)
	}
}

// A sender who receives nothing (an announcement channel) still gets
// ticks: the sender's own position does not hold back their messages.
func TestGroupTicksLeaveTheSenderOut(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	makeGroup(t, e, "news", "alice", "bob", "carol")
	var last uint64
	for i := range 3 {
		last = sendGroup(t, e, "news", "alice")
		position(t, e, "news", "bob", protocol.StatusDelivered, last)
		position(t, e, "news", "carol", protocol.StatusDelivered, last)
		if got := groupTicks(t, e, "alice"); len(got) != i+1 {
			t.Fatalf("after message %d alice has %v", i+1, got)
		}
	}
	if got := groupTicks(t, e, "alice"); got[2] != fmt.Sprintf("delivered %d..%d", last, last) {
		t.Fatalf("alice's receipts %v", got)
	}
}

// Message info: the sender sees each member's ticks and the totals;
// anyone else gets unknown_seq.
func TestGroupStatusForTheSenderOnly(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob", "carol")
	a1 := sendGroup(t, e, "g1", "alice")
	position(t, e, "g1", "bob", protocol.StatusRead, a1)
	status := func(sender string, seq uint64) (contract.StatusReply, error) {
		var r contract.StatusReply
		err := e.call(t, contract.StatusSubject, contract.StatusRequest{Sender: sender, Group: "g1", Seq: seq}, &r)
		return r, err
	}
	r, err := status("alice", a1)
	if err != nil {
		t.Fatal(err)
	}
	want := contract.StatusReply{Recipients: map[string]contract.Ticks{"bob": {Delivered: true, Read: true}, "carol": {}}}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Fatalf("status %+v, want %+v", r, want)
	}
	position(t, e, "g1", "carol", protocol.StatusDelivered, a1)
	if r, _ = status("alice", a1); !r.AllDelivered || r.AllRead {
		t.Fatalf("status %+v, want all delivered and not all read", r)
	}
	for _, c := range []struct {
		who string
		seq uint64
	}{{"bob", a1}, {"alice", a1 + 100}} {
		var fe *contract.FnError
		if _, err := status(c.who, c.seq); !errors.As(err, &fe) || fe.Code != contract.ErrCodeUnknownSeq {
			t.Fatalf("%s asking for %d: %v, want unknown_seq", c.who, c.seq, err)
		}
	}
}

// A member who is away holds the group's lowest position: once the
// witnesses have settled on the two who never move (the sender and the
// member away), the others' acks read no one's positions again.
func TestGroupTicksCostWithAMemberAway(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	members := []string{"alice", "away"}
	for i := range 30 {
		members = append(members, fmt.Sprintf("m%02d", i))
	}
	makeGroup(t, e, "big", members...)
	tk.WaitFor(t, 10*time.Second, func() error { // the create's own settle, counted before the first round
		if n := s.Stats().News; n != 1 {
			return tk.Errorf("%d settles of news", n)
		}
		return nil
	})
	var first int64
	for i := range 5 {
		seq := sendGroup(t, e, "big", "alice")
		for _, m := range members[2:] {
			position(t, e, "big", m, protocol.StatusDelivered, seq)
		}
		if i == 0 {
			first = s.Stats().Recomputes
		}
	}
	if st := s.Stats(); st.Recomputes != first || st.GroupDelivered != 150 || first > 30 {
		t.Fatalf("stats %+v: %d recomputes in the first round, want as many after 150 positions, and fewer than the members", st, first)
	}
	if got := groupTicks(t, e, "alice"); len(got) != 0 {
		t.Fatalf("alice was told while a member never had her messages: %v", got)
	}
	position(t, e, "big", "away", protocol.StatusDelivered, 1000)
	if got := groupTicks(t, e, "alice"); len(got) != 1 {
		t.Fatalf("after the last member came back alice has %v, want one receipt", got)
	}
}

// A position a gateway stored in TICKS while no instance answered is
// applied once one starts, with the receipts it makes due.
func TestQueuedGroupPositionIsApplied(t *testing.T) {
	e := newEnv(t)
	makeGroup(t, e, "g1", "alice", "bob")
	a1 := sendGroup(t, e, "g1", "alice")
	req := contract.GroupPositionRequest{Group: "g1", Member: "bob", Device: "phone", Status: protocol.StatusRead, Seq: a1}
	b, _ := json.Marshal(req)
	m := &nats.Msg{Subject: contract.TicksSubject("bob"), Data: b, Header: nats.Header{
		contract.HdrMsgID: {contract.QueuedGroupTickDedupID("bob", "phone", "g1", req.Status, a1)},
		contract.HdrKind:  {contract.KindGroupPosition},
	}}
	if _, err := e.n.JS.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	e.instance(t)
	want := fmt.Sprint([]string{fmt.Sprintf("delivered %d..%d", a1, a1), fmt.Sprintf("read %d..%d", a1, a1)})
	tk.WaitFor(t, 10*time.Second, func() error {
		if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != want {
			return tk.Errorf("alice's receipts %v, want %s", got, want)
		}
		return nil
	})
	if p, _ := memberRecord(t, e, "g1", "bob"); p != (contract.GroupPosition{Delivered: a1, Read: a1}) {
		t.Fatalf("bob's position %+v", p)
	}
}

// Members moving at once, on two instances: once every request is
// answered, the sender has been told everything every member has, and
// what it cost is logged: stored writes and recomputes per message.
func TestGroupTicksConcurrentMembers(t *testing.T) {
	e := newEnv(t)
	s1, _ := e.instance(t)
	s2, _ := e.instance(t)
	const recipients, msgs = 200, 5
	members := []string{"alice"}
	for i := range recipients {
		members = append(members, fmt.Sprintf("u%03d", i))
	}
	makeGroup(t, e, "big", members...)
	kvWrites := func() uint64 {
		st, err := e.n.JS.Stream(context.Background(), "KV_"+contract.GroupTicksKV)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	before := kvWrites()
	var last uint64
	for range msgs {
		last = sendGroup(t, e, "big", "alice")
		for _, status := range []string{protocol.StatusDelivered, protocol.StatusRead} {
			errs := make(chan error, recipients)
			for _, m := range members[1:] {
				go func() {
					req := contract.GroupPositionRequest{Group: "big", Member: m, Device: "phone", Status: status, Seq: last}
					errs <- e.call(t, contract.GroupPositionSubject, req, nil)
				}()
			}
			for range recipients {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	got := groupTicks(t, e, "alice")
	toldD, toldR := map[uint64]bool{}, map[uint64]bool{}
	for _, r := range got {
		var st string
		var from, to uint64
		if _, err := fmt.Sscanf(r, "%s %d..%d", &st, &from, &to); err != nil {
			t.Fatal(err)
		}
		for q := from; q <= to; q++ {
			if st == protocol.StatusRead {
				toldR[q] = true
			} else {
				toldD[q] = true
			}
		}
	}
	for q := uint64(1); q <= last; q++ {
		if !toldD[q] || !toldR[q] {
			t.Fatalf("message %d: delivered told %v, read told %v; receipts %v", q, toldD[q], toldR[q], got)
		}
	}
	rc := s1.Stats().Recomputes + s2.Stats().Recomputes
	t.Logf("group of %d, %d messages each acked and read by every member alone, at once: %.1f position and aggregate writes per message (%.2f per recipient), %.1f receipts, %.1f recomputes (each a read of %d records)",
		recipients+1, msgs, float64(kvWrites()-before)/msgs, float64(kvWrites()-before)/msgs/recipients, float64(len(got))/msgs, float64(rc)/msgs, recipients+1)
}

// A group whose keys are more than one direct get answers (members
// removed leave theirs) is read one member at a time.
func TestGroupPositionsPastOneDirectGet(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob", "carol")
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1100 { // former members
		if _, err := kv.Put(context.Background(), contract.GroupTickKey("g1", fmt.Sprintf("gone%04d", i)), []byte(`{"d":1,"r":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	a1 := sendGroup(t, e, "g1", "alice")
	position(t, e, "g1", "bob", protocol.StatusRead, a1)
	position(t, e, "g1", "carol", protocol.StatusDelivered, a1)
	if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != fmt.Sprintf("[delivered %d..%d]", a1, a1) {
		t.Fatalf("alice's receipts %v", got)
	}
	var r contract.StatusReply
	if err := e.call(t, contract.StatusSubject, contract.StatusRequest{Sender: "alice", Group: "g1", Seq: a1}, &r); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r) != fmt.Sprint(contract.StatusReply{Recipients: map[string]contract.Ticks{"bob": {Delivered: true, Read: true}, "carol": {Delivered: true}}, AllDelivered: true}) {
		t.Fatalf("status %+v", r)
	}
}

// Members as of now: one added waits for nothing sent before once a copy
// of theirs is acked (their add's system message), one removed stops
// counting as soon as the record changes, with no position taken in the
// group after it (a group gone quiet).
func TestGroupTicksFollowMembership(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob", "carol")
	a1 := sendGroup(t, e, "g1", "alice")
	position(t, e, "g1", "bob", protocol.StatusDelivered, a1)
	if got := groupTicks(t, e, "alice"); len(got) != 0 {
		t.Fatalf("alice told before carol had it: %v", got)
	}
	changeGroup(t, e, "g1", a1+1, "alice", "bob") // carol removed
	want := []string{fmt.Sprintf("delivered %d..%d", a1, a1)}
	tk.WaitFor(t, 10*time.Second, func() error {
		if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != fmt.Sprint(want) {
			return tk.Errorf("after carol's removal alice has %v, want %v", got, want)
		}
		return nil
	})
	// Nobody moved: the last to get there is bob, on no device.
	if got := tickSays(e.ticks(t, "alice")[0]); got != fmt.Sprintf("delivered by bob/ %d..%d", a1, a1) {
		t.Fatalf("the removal's receipt says %q", got)
	}
	changeGroup(t, e, "g1", a1+2, "alice", "bob", "dave") // dave added
	a2 := sendGroup(t, e, "g1", "alice")
	position(t, e, "g1", "bob", protocol.StatusDelivered, a2)
	if got := groupTicks(t, e, "alice"); len(got) != 1 {
		t.Fatalf("alice told before dave had anything: %v", got)
	}
	position(t, e, "g1", "dave", protocol.StatusDelivered, a2)
	// The receipt may start at a1 again: a settle of the watch's news of
	// dave's add can win the aggregate's write against the one that told
	// alice of a1, and the aggregate then does not say she was told.
	got := groupTicks(t, e, "alice")
	if len(got) != 2 || got[0] != want[0] || !strings.HasSuffix(got[1], fmt.Sprintf("..%d", a2)) {
		t.Fatalf("alice has %v, want %v and then one up to %d", got, want, a2)
	}
}

// A record kept while the watch's news of a change is on its way is
// behind: a member the change added still has their position taken, and
// a settle from the old record never puts an aggregate computed from the
// new one back to the old membership.
func TestGroupTicksFromARecordBehind(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob", "carol")
	old := &contract.GroupRecord{ID: "g1", Name: "g1", CreatedBy: "alice", Seq: 1, Members: map[string]contract.GroupMember{
		"alice": {Admin: true, Joined: 1}, "bob": {Joined: 1}, "carol": {Joined: 1}}}
	a1 := sendGroup(t, e, "g1", "alice")
	changeGroup(t, e, "g1", a1+1, "alice", "bob", "dave") // carol out, dave in
	quiet(t, e, s, "g1", a1+1)                            // the change's news settled
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}

	s.HoldRecord(old, 1)
	position(t, e, "g1", "dave", protocol.StatusDelivered, a1)
	if p, _ := memberRecord(t, e, "g1", "dave"); p.Delivered != a1 {
		t.Fatalf("dave's position %+v, want delivered %d: a new member's position was dropped", p, a1)
	}
	s.HoldRecord(old, 1)
	position(t, e, "g1", "bob", protocol.StatusDelivered, a1)
	want := fmt.Sprintf("[delivered %d..%d]", a1, a1)
	if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != want {
		t.Fatalf("alice has %v, want %v: judged by the record before carol left", got, want)
	}
	var agg contract.GroupAggregate
	if v, err := kv.Get(context.Background(), contract.GroupAggregateKey("g1")); err != nil || json.Unmarshal(v.Value(), &agg) != nil || agg.Seq != a1+1 {
		t.Fatalf("aggregate %+v (%v), want it still from the change at %d", agg, err, a1+1)
	}
}

// Positions a gateway gathered, from several members of two groups: each
// is taken (the highest of a member's), a non-member's is not, each
// group is settled once, and a receipt names the member whose move
// completed it; asked again they write nothing, and what is not a
// delivered position is refused.
func TestGatheredGroupPositions(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob", "carol", "dave")
	makeGroup(t, e, "g2", "alice", "erin")
	settled(t, e, "g1", 1)
	settled(t, e, "g2", 1)
	b0 := sendGroup(t, e, "g1", "bob")
	a1 := sendGroup(t, e, "g1", "alice")
	e1 := sendGroup(t, e, "g2", "alice")
	gathered := func(ps ...contract.GroupPositionRequest) error {
		t.Helper()
		for i := range ps {
			ps[i].Status = protocol.StatusDelivered
		}
		return e.call(t, contract.GroupPositionsSubject, contract.GroupPositionsRequest{Positions: ps}, nil)
	}
	if err := gathered(
		contract.GroupPositionRequest{Group: "g1", Member: "bob", Device: "phone", Seq: a1},
		contract.GroupPositionRequest{Group: "g1", Member: "carol", Device: "laptop", Seq: a1},
		contract.GroupPositionRequest{Group: "g1", Member: "carol", Device: "phone", Seq: b0},
		contract.GroupPositionRequest{Group: "g1", Member: "zed", Device: "phone", Seq: a1},
		contract.GroupPositionRequest{Group: "g2", Member: "erin", Device: "tablet", Seq: e1},
	); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"bob", "carol"} {
		if p, _ := memberRecord(t, e, "g1", m); p.Delivered != a1 {
			t.Fatalf("%s's position %+v, want delivered %d", m, p, a1)
		}
	}
	if p, rev := memberRecord(t, e, "g1", "zed"); rev != 0 {
		t.Fatalf("a non-member's position was taken: %+v", p)
	}
	says := func() []string {
		var out []string
		for _, m := range e.ticks(t, "alice") {
			out = append(out, m.Header.Get(contract.HdrGroup)+" "+tickSays(m))
		}
		return out
	}
	want := []string{fmt.Sprintf("g2 delivered by erin/tablet 1..%d", e1)} // from where alice was told
	if got := says(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("alice's receipts %v, want %v (g1 waits for dave)", got, want)
	}

	if err := gathered(
		contract.GroupPositionRequest{Group: "g1", Member: "dave", Device: "watch", Seq: a1},
		contract.GroupPositionRequest{Group: "g1", Member: "bob", Device: "phone", Seq: a1}, // a repeat
	); err != nil {
		t.Fatal(err)
	}
	want = append(want, fmt.Sprintf("g1 delivered by dave/watch 1..%d", a1))
	if got := says(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("alice's receipts %v, want %v", got, want)
	}
	if st := s.Stats(); st.GroupDelivered != 5 || st.Gathered != 3 {
		t.Fatalf("stats %+v: want 5 members' positions taken (carol's once, the non-member's not) in 3 groups' settles", st)
	}

	// Asked again, as after a lost answer: nothing is written.
	info, err := e.n.JS.Stream(context.Background(), "KV_"+contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	before := info.CachedInfo().State.LastSeq
	if err := gathered(contract.GroupPositionRequest{Group: "g1", Member: "dave", Device: "watch", Seq: a1},
		contract.GroupPositionRequest{Group: "g2", Member: "erin", Device: "tablet", Seq: e1}); err != nil {
		t.Fatal(err)
	}
	if info, err = e.n.JS.Stream(context.Background(), "KV_"+contract.GroupTicksKV); err != nil {
		t.Fatal(err)
	} else if after := info.CachedInfo().State.LastSeq; after != before {
		t.Fatalf("a repeat wrote %d records", after-before)
	}
	if got := says(); len(got) != len(want) {
		t.Fatalf("a repeat told alice again: %v", got)
	}

	// Refused: a read (reads go one by one), a bad id, too many.
	var fe *contract.FnError
	read := contract.GroupPositionsRequest{Positions: []contract.GroupPositionRequest{{Group: "g1", Member: "bob", Device: "phone", Status: protocol.StatusRead, Seq: a1}}}
	bad := contract.GroupPositionsRequest{Positions: []contract.GroupPositionRequest{{Group: "g 1", Member: "bob", Device: "phone", Status: protocol.StatusDelivered, Seq: a1}}}
	many := contract.GroupPositionsRequest{}
	for range contract.GroupPositionsMax + 1 {
		many.Positions = append(many.Positions, contract.GroupPositionRequest{Group: "g1", Member: "bob", Device: "phone", Status: protocol.StatusDelivered, Seq: a1})
	}
	for name, req := range map[string]contract.GroupPositionsRequest{"read": read, "bad id": bad, "too many": many} {
		if err := e.call(t, contract.GroupPositionsSubject, req, nil); !errors.As(err, &fe) || fe.Status != 400 {
			t.Fatalf("%s: %v, want a 400", name, err)
		}
	}
	if p, _ := memberRecord(t, e, "g1", "bob"); p.Read != 0 {
		t.Fatalf("a refused request moved bob: %+v", p)
	}
}

// twoGroups makes groups g1 and g2 of alice and bob, settled, and
// stores a message from alice in each: their places in the log.
func twoGroups(t *testing.T, e *env, s *receipts.Service) (a1, a2 uint64) {
	t.Helper()
	makeGroup(t, e, "g1", "alice", "bob")
	makeGroup(t, e, "g2", "alice", "bob")
	settled(t, e, "g1", 1)
	quiet(t, e, s, "g2", 1)
	return sendGroup(t, e, "g1", "alice"), sendGroup(t, e, "g2", "alice")
}

// One group's trouble holds back only its own positions: a gathered
// request answers with the groups whose positions were not taken (their
// gateway leaves those in TICKS), and the others' are taken.
func TestGatheredGroupPositionsNameTheGroupsThatFailed(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	a1, a2 := twoGroups(t, e, s)
	s.FailAggregateWrites("g1")
	var reply contract.GroupPositionsReply
	if err := e.call(t, contract.GroupPositionsSubject, contract.GroupPositionsRequest{Positions: []contract.GroupPositionRequest{
		{Group: "g1", Member: "bob", Device: "phone", Status: protocol.StatusDelivered, Seq: a1},
		{Group: "g2", Member: "bob", Device: "phone", Status: protocol.StatusDelivered, Seq: a2},
	}}, &reply); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(reply.Failed) != "[g1]" {
		t.Fatalf("failed %v, want [g1]", reply.Failed)
	}
	var g2 []string
	for _, m := range e.ticks(t, "alice") {
		if m.Header.Get(contract.HdrGroup) == "g2" {
			g2 = append(g2, tickSays(m))
		}
	}
	if want := fmt.Sprintf("[delivered by bob/phone 1..%d]", a2); fmt.Sprint(g2) != want {
		t.Fatalf("alice's receipts in g2 %v, want %s", g2, want)
	}
	if p, _ := memberRecord(t, e, "g2", "bob"); p.Delivered != a2 {
		t.Fatalf("bob's position in g2 %+v", p)
	}
}

// A membership change stored while no instance runs is settled when one
// starts, with no position moving after it: the changes come from a
// durable, which keeps the ones nobody took (a watch begun at the start
// would begin after it, and the removed member would hold the sender's
// tick back until someone moved).
func TestGroupChangeWhileNoInstanceRanIsSettled(t *testing.T) {
	e := newEnv(t)
	_, kill := e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob", "carol")
	a1 := sendGroup(t, e, "g1", "alice")
	position(t, e, "g1", "bob", protocol.StatusDelivered, a1)
	if got := groupTicks(t, e, "alice"); len(got) != 0 {
		t.Fatalf("alice told before carol had it: %v", got)
	}
	clients := e.n.Server.NumClients()
	kill()
	// Until the server has seen the connection go, the dead instance's
	// pull may still take the change, which would then come again only
	// after the ack wait (30 s).
	tk.WaitFor(t, 10*time.Second, func() error {
		if n := e.n.Server.NumClients(); n >= clients {
			return tk.Errorf("%d clients, the killed instance's among them", n)
		}
		return nil
	})
	changeGroup(t, e, "g1", a1+1, "alice", "bob") // carol removed, nobody running
	e.instance(t)
	want := []string{fmt.Sprintf("delivered %d..%d", a1, a1)}
	tk.WaitFor(t, 10*time.Second, func() error {
		if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != fmt.Sprint(want) {
			return tk.Errorf("after carol's removal alice has %v, want %v", got, want)
		}
		return nil
	})
}

// A settle looks at the group again after it writes the aggregate, and a
// member's position may have risen meanwhile: what that later round
// would tell is checked against the record as it is then, not as it was
// when the first round read it. Here dave is added, and bob's position
// rises past alice's next message, while the settle that told alice of
// her first message writes the aggregate: alice must not be told of the
// next one before dave has it.
func TestSettleRoundAfterAWriteReadsTheRecordAgain(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	makeGroup(t, e, "g1", "alice", "bob")
	a1 := sendGroup(t, e, "g1", "alice")
	quiet(t, e, s, "g1", 1)
	ticks, err := e.n.JS.KeyValue(context.Background(), contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	var a2 uint64
	s.HookAggregateWrites("g1", func(n int) {
		if n != 1 {
			return
		}
		changeGroup(t, e, "g1", a1+1, "alice", "bob", "dave")
		a2 = sendGroup(t, e, "g1", "alice")
		b, _ := json.Marshal(contract.GroupPosition{Delivered: a2})
		if _, err := ticks.Put(context.Background(), contract.GroupTickKey("g1", "bob"), b); err != nil {
			t.Error(err)
		}
	})
	position(t, e, "g1", "bob", protocol.StatusDelivered, a1)
	want := []string{fmt.Sprintf("delivered %d..%d", a1, a1)}
	quiet(t, e, s, "g1", a1+1)
	if got := groupTicks(t, e, "alice"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("alice has %v, want %v: told of %d before dave had it", got, want, a2)
	}
	position(t, e, "g1", "dave", protocol.StatusDelivered, a2)
	// The receipt may start at a1 again: a settle of the watch's news of
	// dave's add can win the aggregate's write against the one that told
	// alice of a1, and the aggregate then does not say she was told.
	got := groupTicks(t, e, "alice")
	if len(got) != 2 || got[0] != want[0] || !strings.HasSuffix(got[1], fmt.Sprintf("..%d", a2)) {
		t.Fatalf("alice has %v, want %v and then one up to %d", got, want, a2)
	}
}
