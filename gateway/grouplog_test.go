package gateway_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// groupSend sends body in group gid and returns its place in the log
// (the seq of its sent).
func groupSend(t *testing.T, r *raw, gid, id string) uint64 {
	t.Helper()
	r.write(string(protocol.AppendGroupSend(nil, id, gid, tk.Body(id))))
	f := skipTo(r, protocol.TypeSent)
	if f.ID != id || f.Seq == 0 {
		t.Fatalf("got %+v, want sent for %s", *f, id)
	}
	return f.Seq
}

// nextGroupFrame reads r's frames until a msg of group gid, acking each
// msg it passes, and returns it.
func nextGroupFrame(t *testing.T, r *raw, gid string) *protocol.Frame {
	t.Helper()
	for {
		f := r.next()
		if f.Type != protocol.TypeMsg {
			continue
		}
		if f.Group == gid {
			return f
		}
		r.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)))
	}
}

// ackGroup acks f, a msg of a group: by its inbox seq (a copy) or its
// place in the group's log.
func ackGroup(r *raw, f *protocol.Frame) {
	if f.GSeq != 0 {
		r.write(string(protocol.AppendGroupSeqFrame(nil, protocol.TypeAck, f.Group, f.GSeq)))
		return
	}
	r.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)))
}

// expectGroupMsg reads the next msg of group gid, which must be id from
// the log at gseq (a copy, with an inbox seq, when gseq is 0), and acks it.
func expectGroupMsg(t *testing.T, r *raw, gid, id string, gseq uint64) {
	t.Helper()
	f := nextGroupFrame(t, r, gid)
	switch {
	case f.ID != id:
		t.Fatalf("got %s %+v, want %s", f.ID, *f, id)
	case gseq == 0 && (f.GSeq != 0 || f.Seq == 0):
		t.Fatalf("%s: gseq %d seq %d, want a copy from the inbox", id, f.GSeq, f.Seq)
	case gseq != 0 && (f.GSeq != gseq || f.Seq != 0):
		t.Fatalf("%s: gseq %d seq %d, want from the log at %d", id, f.GSeq, f.Seq, gseq)
	}
	ackGroup(r, f)
}

// A group past the size read from its log (docs/GROUP-LOG.md), through a
// real gateway and the functions: messages before the switch come as
// copies, after it from the log with their place there, the switch
// itself as a copy; a member who joins later reads from their add; a
// device back after a disconnect resumes where it acked; a member taken
// out gets that change and nothing after it, and added again reads on
// after the add; the sender hears delivered once every member acked;
// an ack of what was never handed is refused.
func TestGroupReadFromItsLog(t *testing.T) {
	n := tk.StartNATS(t)
	tk.StartGroupsOnLog(t, n, 3)
	tk.StartFunctions(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	const gid = "crowd"

	alice := connectRaw(t, g, "alice", "phone")
	bob := connectRaw(t, g, "bob", "phone")
	alice.write(`{"type":"group","id":"a-1","op":"create","group":"crowd","name":"Crowd","users":["bob"]}`)
	groupAnswer(t, alice, "a-1")
	expectGroupMsg(t, bob, gid, "ev-1", 0)
	m1 := groupSend(t, alice, gid, "m1")
	expectGroupMsg(t, bob, gid, "m1", 0)

	alice.write(`{"type":"group","id":"a-2","op":"add","group":"crowd","users":["carol"]}`)
	groupAnswer(t, alice, "a-2")
	sw := nextGroupFrame(t, bob, gid)
	if sw.Event == nil || sw.Event.Op != "add" || sw.Seq == 0 || sw.GSeq != 0 {
		t.Fatalf("the switch: %+v, want the add as a copy", *sw)
	}
	ackGroup(bob, sw)
	m2 := groupSend(t, alice, gid, "m2")
	if m2 <= m1 {
		t.Fatalf("m2 at %d, m1 at %d", m2, m1)
	}
	expectGroupMsg(t, bob, gid, "m2", m2)

	carol := connectRaw(t, g, "carol", "phone")
	expectGroupMsg(t, carol, gid, sw.ID, 0) // her add, as a copy
	expectGroupMsg(t, carol, gid, "m2", m2)

	// Delivered once bob and carol acked m2 (and m1 before it).
	for {
		f := alice.next()
		if f.Type == protocol.TypeReceipt && f.Group == gid && f.Status == protocol.StatusDelivered && f.ToSeq >= m2 {
			break
		}
	}

	// An ack of what was never handed: refused, nothing changes.
	bob.write(string(protocol.AppendGroupSeqFrame(nil, protocol.TypeAck, gid, m2+1000)))
	if f := skipTo(bob, protocol.TypeError); f.Code != protocol.ErrUnknownSeq || f.For != protocol.TypeAck || f.Group != gid || f.Seq != m2+1000 {
		t.Fatalf("got %+v, want unknown_seq for the ack", *f)
	}

	// bob away: m3 waits for him; back, he resumes after m2.
	bob.closeNormally()
	m3 := groupSend(t, alice, gid, "m3")
	bob = connectRaw(t, g, "bob", "phone")
	expectGroupMsg(t, bob, gid, "m3", m3)

	// bob taken out: he gets that, then nothing until added again; m5,
	// sent in between, would come before m6 on the log if at all.
	alice.write(`{"type":"group","id":"a-3","op":"remove","group":"crowd","users":["bob"]}`)
	groupAnswer(t, alice, "a-3")
	out := nextGroupFrame(t, bob, gid)
	if out.Event == nil || out.Event.Op != "remove" || out.GSeq == 0 {
		t.Fatalf("bob's removal: %+v, want it from the log", *out)
	}
	ackGroup(bob, out)
	groupSend(t, alice, gid, "m5")
	alice.write(`{"type":"group","id":"a-4","op":"add","group":"crowd","users":["bob"]}`)
	groupAnswer(t, alice, "a-4")
	back := nextGroupFrame(t, bob, gid)
	if back.Event == nil || back.Event.Op != "add" || back.Seq == 0 {
		t.Fatalf("bob's add: %+v, want the copy", *back)
	}
	ackGroup(bob, back)
	m6 := groupSend(t, alice, gid, "m6")
	expectGroupMsg(t, bob, gid, "m6", m6)
}

// startLogGroup starts a server with the functions, groups on their log
// from 3 members, and a gateway with cfg; alice makes group crowd with
// bob and carol (on its log from its create) and bob, connected, acks
// its create.
func startLogGroup(t *testing.T, cfg gateway.Config) (g *tk.Gateway, alice, bob *raw) {
	t.Helper()
	n := tk.StartNATS(t)
	tk.StartGroupsOnLog(t, n, 3)
	tk.StartFunctions(t, n)
	g = tk.StartGateway(t, n, cfg)
	alice = connectRaw(t, g, "alice", "phone")
	bob = connectRaw(t, g, "bob", "phone")
	alice.write(`{"type":"group","id":"a-1","op":"create","group":"crowd","name":"Crowd","users":["bob","carol"]}`)
	groupAnswer(t, alice, "a-1")
	create := nextGroupFrame(t, bob, "crowd")
	if create.Event == nil || create.Event.Op != "create" || create.Seq == 0 {
		t.Fatalf("bob got %+v, want the create as a copy", *create)
	}
	ackGroup(bob, create)
	return g, alice, bob
}

// A device a member adds after the group went on its log gets what comes
// after it joined, as it would its inbox: it never had the copy that
// started the group for the member's other device.
func TestGroupLogSecondDevice(t *testing.T) {
	g, alice, bob := startLogGroup(t, tk.TestConfig())
	laptop := connectRaw(t, g, "bob", "laptop")
	m1 := groupSend(t, alice, "crowd", "m1")
	expectGroupMsg(t, bob, "crowd", "m1", m1)
	expectGroupMsg(t, laptop, "crowd", "m1", m1)
}

// A member taken out and added back, across a reconnect: the add, kept
// with the device's place, brings them back after it, and nothing sent
// while they were out reaches them, whether the removal was acked before
// the device went or comes again after.
func TestGroupLogAddedBackAcrossReconnect(t *testing.T) {
	for _, ackRemoval := range []bool{true, false} {
		t.Run(map[bool]string{true: "removal acked", false: "removal unacked"}[ackRemoval], func(t *testing.T) {
			g, alice, bob := startLogGroup(t, tk.TestConfig())
			alice.write(`{"type":"group","id":"a-2","op":"remove","group":"crowd","users":["bob"]}`)
			groupAnswer(t, alice, "a-2")
			groupSend(t, alice, "crowd", "m5") // while bob is out
			alice.write(`{"type":"group","id":"a-3","op":"add","group":"crowd","users":["bob"]}`)
			groupAnswer(t, alice, "a-3")
			// The removal from the log and the add's copy from the inbox,
			// in either order.
			var removal, add *protocol.Frame
			for removal == nil || add == nil {
				f := nextGroupFrame(t, bob, "crowd")
				switch {
				case f.Event != nil && f.Event.Op == "remove" && f.GSeq != 0:
					removal = f
				case f.Event != nil && f.Event.Op == "add" && f.Seq != 0:
					add = f
				default:
					t.Fatalf("bob got %+v", *f)
				}
			}
			ackGroup(bob, add)
			if ackRemoval {
				ackGroup(bob, removal)
			}
			// One after the add, handed on and left unacked.
			m6 := groupSend(t, alice, "crowd", "m6")
			if f := nextGroupFrame(t, bob, "crowd"); f.ID != "m6" || f.GSeq != m6 {
				t.Fatalf("bob got %+v, want m6 at %d", *f, m6)
			}
			bob.closeNormally()
			bob = connectRaw(t, g, "bob", "phone")
			m7 := groupSend(t, alice, "crowd", "m7")
			readUntil(t, bob, "crowd", "m7", m7, "m5") // m6 may come again: unacked
		})
	}
}

// A device back to more than it may hold unacked of a group gets the
// rest as soon as it acks, not at the next message or sweep.
func TestGroupLogWindowRefills(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.MaxInflight = 2
	g, alice, bob := startLogGroup(t, cfg)
	bob.closeNormally()
	var at []uint64
	for _, id := range []string{"m1", "m2", "m3", "m4"} {
		at = append(at, groupSend(t, alice, "crowd", id))
	}
	bob = connectRaw(t, g, "bob", "phone")
	first := nextGroupFrame(t, bob, "crowd")
	second := nextGroupFrame(t, bob, "crowd")
	if first.ID != "m1" || second.ID != "m2" {
		t.Fatalf("bob got %s %s, want m1 m2", first.ID, second.ID)
	}
	ackGroup(bob, second) // both
	expectGroupMsg(t, bob, "crowd", "m3", at[2])
	expectGroupMsg(t, bob, "crowd", "m4", at[3])
}

// A device a member adds right after being taken out of a group starts
// nothing of it, whatever GROUP_INFO says yet: the group's log decides.
// Added back, it reads from the add: m8, sent while the user was out,
// would come before m9 on the group's log if it came at all.
func TestGroupLogNewDeviceAfterRemoval(t *testing.T) {
	g, alice, bob := startLogGroup(t, tk.TestConfig())
	alice.write(`{"type":"group","id":"a-2","op":"remove","group":"crowd","users":["bob"]}`)
	groupAnswer(t, alice, "a-2")
	if f := nextGroupFrame(t, bob, "crowd"); f.Event == nil || f.Event.Op != "remove" {
		t.Fatalf("bob got %+v, want his removal", *f)
	}
	laptop := connectRaw(t, g, "bob", "laptop")
	groupSend(t, alice, "crowd", "m8")
	alice.write(`{"type":"group","id":"a-3","op":"add","group":"crowd","users":["bob"]}`)
	groupAnswer(t, alice, "a-3")
	m9 := groupSend(t, alice, "crowd", "m9")
	readUntil(t, laptop, "crowd", "m9", m9, "m8")
}

// readUntil reads r's msgs of group gid, acking each, until id, which
// must be at gseq in the log; never, sent while the user was out of the
// group, must not come before it (the log's order puts it before id).
func readUntil(t *testing.T, r *raw, gid, id string, gseq uint64, never string) {
	t.Helper()
	for {
		f := nextGroupFrame(t, r, gid)
		if f.ID == never {
			t.Fatalf("got %s, sent while the user was out of the group", never)
		}
		ackGroup(r, f)
		if f.ID == id {
			if f.GSeq != gseq {
				t.Fatalf("%s at %d, want %d", id, f.GSeq, gseq)
			}
			return
		}
	}
}

// A read of a group read from its log, on one of the member's devices,
// reaches their other devices as a read_sync naming the group and the
// place read in its log (no inbox seq: there is no copy).
func TestGroupLogReadSync(t *testing.T) {
	g, alice, bob := startLogGroup(t, tk.TestConfig())
	laptop := connectRaw(t, g, "bob", "laptop")
	m1 := groupSend(t, alice, "crowd", "m1")
	expectGroupMsg(t, bob, "crowd", "m1", m1)
	expectGroupMsg(t, laptop, "crowd", "m1", m1)
	bob.write(string(protocol.AppendGroupSeqFrame(nil, protocol.TypeRead, "crowd", m1)))
	f := skipTo(laptop, protocol.TypeReadSync)
	if f.Group != "crowd" || f.Device != "phone" || f.GSeq != m1 || f.ToSeq != 0 || f.Seq == 0 {
		t.Fatalf("the laptop got %+v, want a read_sync of crowd up to %d on the phone", *f, m1)
	}
}

// A group on its log that shares its history (the history op, admins
// only): a member added afterwards gets its latest messages, from the
// log, after the copy that tells them of the add; as many as the setting
// says, none from before them.
func TestGroupLogHistory(t *testing.T) {
	g, alice, bob := startLogGroup(t, tk.TestConfig())
	bob.write(`{"type":"group","id":"b-1","op":"history","group":"crowd","history":2}`)
	if f := skipTo(bob, protocol.TypeError); f.Code != protocol.ErrNotAdmin || f.ID != "b-1" {
		t.Fatalf("bob's history change: %+v, want not_admin", *f)
	}
	alice.write(`{"type":"group","id":"a-2","op":"history","group":"crowd","history":2}`)
	if f := groupAnswer(t, alice, "a-2"); f.History == nil || *f.History != 2 {
		t.Fatalf("the answer %+v, want history 2", *f)
	}
	if f := nextGroupFrame(t, bob, "crowd"); f.Event == nil || f.Event.Op != "history" || f.Event.History == nil || *f.Event.History != 2 {
		t.Fatalf("bob got %+v, want the history change", *f)
	} else {
		ackGroup(bob, f)
	}
	groupSend(t, alice, "crowd", "m1")
	m2 := groupSend(t, alice, "crowd", "m2")
	m3 := groupSend(t, alice, "crowd", "m3")
	alice.write(`{"type":"group","id":"a-3","op":"add","group":"crowd","users":["dave"]}`)
	groupAnswer(t, alice, "a-3")
	dave := connectRaw(t, g, "dave", "phone")
	add := nextGroupFrame(t, dave, "crowd")
	if add.Event == nil || add.Event.Op != "add" || add.Seq == 0 {
		t.Fatalf("dave got %+v first, want the add's copy", *add)
	}
	ackGroup(dave, add)
	expectGroupMsg(t, dave, "crowd", "m2", m2)
	expectGroupMsg(t, dave, "crowd", "m3", m3)
	// Then the add again, from the log (the same system id: the SDKs
	// drop it), and what comes next.
	if f := nextGroupFrame(t, dave, "crowd"); f.ID != add.ID || f.GSeq == 0 {
		t.Fatalf("dave got %+v, want the add from the log", *f)
	} else {
		ackGroup(dave, f)
	}
	m4 := groupSend(t, alice, "crowd", "m4")
	expectGroupMsg(t, dave, "crowd", "m4", m4)
}

// Another session of the device writing its record meanwhile (a replaced
// session's last write, slower than the kick's wait): this session's
// next write keeps the groups that record has and its own lacks, so no
// session drops a group another one started.
func TestGroupLogRecordKeepsAnotherSessionsGroups(t *testing.T) {
	n := tk.StartNATS(t)
	tk.StartGroupsOnLog(t, n, 3)
	tk.StartFunctions(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := connectRaw(t, g, "alice", "phone")
	bob := connectRaw(t, g, "bob", "phone")
	alice.write(`{"type":"group","id":"a-1","op":"create","group":"crowd","name":"Crowd","users":["bob","carol"]}`)
	groupAnswer(t, alice, "a-1")
	ackGroup(bob, nextGroupFrame(t, bob, "crowd"))

	ctx := context.Background()
	kv, err := n.JS.KeyValue(ctx, contract.CursorsKV)
	if err != nil {
		t.Fatal(err)
	}
	key := contract.GroupCursorKey("bob", "phone")
	if _, err := kv.Put(ctx, key, []byte(`{"crowd":{"at":1},"other":{"at":5}}`)); err != nil {
		t.Fatal(err)
	}
	m1 := groupSend(t, alice, "crowd", "m1")
	expectGroupMsg(t, bob, "crowd", "m1", m1) // acked: its place is saved
	tk.WaitFor(t, 10*time.Second, func() error {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return err
		}
		rec, err := contract.ParseGroupCursors(e.Value())
		if err != nil {
			return err
		}
		if rec["crowd"].At < m1 {
			return tk.Errorf("record %s: crowd not saved past m1 at %d yet", e.Value(), m1)
		}
		if rec["other"].At != 5 {
			t.Fatalf("record %s: the other session's group was dropped", e.Value())
		}
		return nil
	})
	// Deleted meanwhile (by an operator, say): written again.
	if err := kv.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	m2 := groupSend(t, alice, "crowd", "m2")
	expectGroupMsg(t, bob, "crowd", "m2", m2)
	tk.WaitFor(t, 10*time.Second, func() error {
		e, err := kv.Get(ctx, key)
		if err != nil {
			return err
		}
		if rec, err := contract.ParseGroupCursors(e.Value()); err != nil || rec["crowd"].At < m2 {
			return tk.Errorf("record %s (%v): not saved past m2 at %d yet", e.Value(), err, m2)
		}
		return nil
	})
}

// A device coming back to several busy log groups is handed at most its
// budget of their messages unacked across all of them (what its outbound
// queue holds past everything else; here one group's window, 64), not
// a window per group; once its acks (of any group) bring what it holds
// to half the budget, the groups that stopped on it go on, each in its
// log's order.
func TestGroupLogBudgetAcrossGroups(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.MaxInflight, cfg.MaxPendingSends = 256, 256
	cfg.OutboundQueue = cfg.MaxInflight + cfg.MaxPendingSends + 64 // the least: a budget of 64
	cfg.SweepInterval = time.Hour                                  // no sweep wakes a group
	n := tk.StartNATS(t)
	tk.StartGroupsOnLog(t, n, 3)
	tk.StartFunctions(t, n)
	g := tk.StartGateway(t, n, cfg)
	alice := connectRaw(t, g, "alice", "phone")
	bob := connectRaw(t, g, "bob", "phone")
	gids := []string{"busy1", "busy2"}
	for i, gid := range gids {
		id := "c-" + gid
		alice.write(`{"type":"group","id":"` + id + `","op":"create","group":"` + gid + `","name":"Busy","users":["bob","carol"]}`)
		groupAnswer(t, alice, id)
		f := nextGroupFrame(t, bob, gid)
		if f.Event == nil || f.Event.Op != "create" {
			t.Fatalf("group %d: %+v, want its create", i, *f)
		}
		ackGroup(bob, f)
	}
	bob.closeNormally()

	const each = 40
	sent := map[string][]uint64{}
	for _, gid := range gids {
		for i := range each {
			sent[gid] = append(sent[gid], groupSend(t, alice, gid, fmt.Sprintf("%s-%d", gid, i)))
		}
	}

	bob = connectRaw(t, g, "bob", "phone")
	got := map[string][]uint64{}
	last := map[string]*protocol.Frame{}
	take := func(f *protocol.Frame) {
		if f.GSeq == 0 || (len(got[f.Group]) > 0 && f.GSeq <= got[f.Group][len(got[f.Group])-1]) {
			t.Fatalf("%+v: out of order or not from the log after %v", *f, got[f.Group])
		}
		got[f.Group] = append(got[f.Group], f.GSeq)
		last[f.Group] = f
	}
	for held := 0; held < 64; {
		if f := bob.next(); f.Type == protocol.TypeMsg {
			take(f)
			held++
		}
	}
	// A fence: an ack past what was handed is refused, the answer queued
	// after anything handed before it was read. Nothing of the groups
	// comes before it: bob holds his budget.
	bob.write(string(protocol.AppendGroupSeqFrame(nil, protocol.TypeAck, gids[1], sent[gids[1]][each-1]+1000)))
	for {
		f := bob.next()
		if f.Type == protocol.TypeMsg {
			t.Fatalf("%+v handed past the budget of 64", *f)
		}
		if f.Type == protocol.TypeError {
			if f.Code != protocol.ErrUnknownSeq {
				t.Fatalf("the fence: %+v", *f)
			}
			break
		}
	}
	// Acks of a group that has all it is owed leave what bob holds at
	// half the budget or less (the other holds 64 − 40): that other goes
	// on, though none of its own was acked. Else both are acked.
	acked := 0
	for _, gid := range gids {
		if len(got[gid]) == each {
			ackGroup(bob, last[gid])
			acked++
			break
		}
	}
	for _, gid := range gids {
		if f := last[gid]; acked == 0 && f != nil {
			ackGroup(bob, f)
		}
	}
	for len(got[gids[0]])+len(got[gids[1]]) < 2*each {
		if f := bob.next(); f.Type == protocol.TypeMsg {
			take(f)
			ackGroup(bob, f)
		}
	}
	for _, gid := range gids {
		if !slices.Equal(got[gid], sent[gid]) {
			t.Fatalf("%s: handed %v, want %v", gid, got[gid], sent[gid])
		}
	}
}
