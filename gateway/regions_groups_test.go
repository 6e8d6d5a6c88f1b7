package gateway_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// groupRegions runs us and eu with alice and carol homed in us, bob and
// dave in eu, all four connected to their home regions.
func groupRegions(t *testing.T) (us, eu *tk.Region, alice, bob, carol, dave *client.Client) {
	t.Helper()
	rs, us, eu := startRegions(t)
	rs.SetHome(t, "carol", "us")
	rs.SetHome(t, "dave", "eu")
	t.Cleanup(func() { regionsState(t, us, eu) })
	return us, eu, tk.Dial(t, us.Gateway.URL, "alice", "phone"), tk.Dial(t, eu.Gateway.URL, "bob", "phone"),
		tk.Dial(t, us.Gateway.URL, "carol", "phone"), tk.Dial(t, eu.Gateway.URL, "dave", "phone")
}

// createClub has alice (us) create group club homed in us with bob,
// carol and dave, and waits until every member has the create and both
// regions know the group.
func createClub(ctx context.Context, t *testing.T, us, eu *tk.Region, alice, bob, carol, dave *client.Client) {
	t.Helper()
	if _, err := alice.CreateGroup(ctx, "club", "Club", "bob", "carol", "dave"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, bob, carol, dave} {
		nextEvent(t, c, "club", "create")
	}
	waitGroupEverywhere(t, "club", 4, us, eu)
}

// waitGroupEverywhere waits until every region reads group gid's record
// with want members: eu's GROUP_DIR sources it from us's GROUP_INFO.
func waitGroupEverywhere(t *testing.T, gid string, want int, rs ...*tk.Region) {
	t.Helper()
	for _, r := range rs {
		tk.WaitFor(t, 15*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			for _, bucket := range []string{contract.GroupInfoKV, contract.GroupDirKV} {
				kv, err := r.JS.KeyValue(ctx, bucket)
				if err != nil {
					return err
				}
				if g, _, err := contract.LoadGroup(ctx, kv, gid); err == nil && len(g.Members) == want {
					return nil
				}
			}
			return tk.Errorf("region %s does not read %s with %d members yet", r.Name, gid, want)
		})
	}
}

// nextEvent takes c's next message, which must be group gid's system
// message of op, and acks it.
func nextEvent(t *testing.T, c *client.Client, gid, op string) {
	t.Helper()
	m := tk.RecvMsg(t, c, 15*time.Second)
	if m.Group != gid || m.Event == nil || m.Event.Op != op {
		t.Fatalf("got %+v, want %s's %s", m, gid, op)
	}
	c.Ack(m.Seq)
}

// takeGroup receives n messages of group gid on c, acking each, and
// returns their ids in the order they came.
func takeGroup(t *testing.T, c *client.Client, gid string, n int) []client.Message {
	t.Helper()
	return groupMsgs(t, c, gid, n, true)
}

func ids(ms []client.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// sameLog checks that what each member got is the group's one log: every
// message once, each member's view the full order with their own
// messages left out, and each sender's messages in the order sent.
func sameLog(t *testing.T, full []string, views map[string][]string, sent map[string][]string) {
	t.Helper()
	seen := map[string]bool{}
	for _, id := range full {
		if seen[id] {
			t.Fatalf("%s came twice: %v", id, full)
		}
		seen[id] = true
	}
	for sender, want := range sent {
		var got []string
		for _, id := range full {
			if strings.HasPrefix(id, sender+"-") {
				got = append(got, id)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s's messages came as %v, sent as %v", sender, got, want)
		}
	}
	for member, view := range views {
		var want []string
		for _, id := range full {
			if !strings.HasPrefix(id, member+"-") {
				want = append(want, id)
			}
		}
		if !slices.Equal(view, want) {
			t.Fatalf("%s got %v, the log without theirs is %v", member, view, want)
		}
	}
}

// wantGroupReceipts takes c's receipts until each of sent (id -> "sent"
// seq) has one of status, in group gid, naming the message as its sender
// knows it; a second receipt for a message and status fails.
func wantGroupReceipts(t *testing.T, c *client.Client, gid string, sent map[string]uint64, statuses ...string) {
	t.Helper()
	seen := map[string]bool{}
	for len(seen) < len(sent)*len(statuses) {
		r := tk.RecvReceipt(t, c, 30*time.Second)
		key := r.ID + " " + r.Status
		switch {
		case r.Group != gid || !slices.Contains(statuses, r.Status) || sent[r.ID] == 0 || r.Seq != sent[r.ID]:
			t.Fatalf("receipt %+v, want one of %v in %s for %v", r, statuses, gid, sent)
		case seen[key]:
			t.Fatalf("%s twice", key)
		}
		seen[key] = true
	}
}

// sendGroupAll sends ids from c to group gid, each "sent" before the
// next, and returns their "sent" sequences.
func sendGroupAll(ctx context.Context, t *testing.T, c *client.Client, gid string, ids []string) map[string]uint64 {
	t.Helper()
	sent := map[string]uint64{}
	for _, id := range ids {
		s, err := c.SendGroup(ctx, gid, id, tk.Body(id))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		sent[id] = s.Seq
	}
	return sent
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + "-" + strconv.Itoa(i)
	}
	return out
}

// A group spans regions: created in us (its home, where its log is),
// changed from eu (bob's add is decided by us's groups function, passed
// on by eu's), written to from both. Every member, homed in us or eu,
// gets every message once and in the group's one order (bob's other
// device his own too); bob's sends from eu are "sent" from eu's OUTBOX;
// the delivered and read receipts reach both senders naming their
// messages as they know them.
func TestRegionsGroupAcrossRegions(t *testing.T) {
	us, eu, alice, bob, carol, dave := groupRegions(t)
	// bob's second device, which gets his own sends too.
	bobLaptop := tk.Dial(t, eu.Gateway.URL, "bob", "laptop")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if _, err := alice.CreateGroup(ctx, "club", "Club", "bob"); err != nil {
		t.Fatal(err)
	}
	// Every change is a system message to every member, its actor too.
	for _, c := range []*client.Client{alice, bob, bobLaptop} {
		nextEvent(t, c, "club", "create")
	}
	if _, err := alice.PromoteMembers(ctx, "club", "bob"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, bob, bobLaptop} {
		nextEvent(t, c, "club", "promote")
	}
	waitGroupEverywhere(t, "club", 2, us, eu)
	// A change asked in eu, decided in us.
	g, err := bob.AddMembers(ctx, "club", "carol", "dave")
	if err != nil {
		t.Fatalf("bob's add from eu: %v", err)
	}
	if len(g.Members) != 4 {
		t.Fatalf("the group after bob's add: %+v", g)
	}
	for _, c := range []*client.Client{alice, bob, bobLaptop, carol, dave} {
		nextEvent(t, c, "club", "add")
	}
	waitGroupEverywhere(t, "club", 4, us, eu)

	// Both sides write, in turns.
	fromAlice, fromBob := map[string]uint64{}, map[string]uint64{}
	for i := range 3 {
		for k, v := range sendGroupAll(ctx, t, alice, "club", []string{"alice-" + strconv.Itoa(i)}) {
			fromAlice[k] = v
		}
		for k, v := range sendGroupAll(ctx, t, bob, "club", []string{"bob-" + strconv.Itoa(i)}) {
			if !contract.IsOutboxSeq(v) {
				t.Fatalf("bob's %s sent at %d: not eu's OUTBOX", k, v)
			}
			fromBob[k] = v
		}
	}
	carolGot := takeGroup(t, carol, "club", 6)
	daveGot := takeGroup(t, dave, "club", 6)
	aliceGot := takeGroup(t, alice, "club", 3)
	bobGot := takeGroup(t, bob, "club", 3)
	laptopGot := takeGroup(t, bobLaptop, "club", 6)
	sameLog(t, ids(carolGot), map[string][]string{"dave": ids(daveGot), "alice": ids(aliceGot), "bob": ids(bobGot), "bob's laptop": ids(laptopGot)},
		map[string][]string{"alice": seq("alice", 3), "bob": seq("bob", 3)})
	// bob's laptop knows his messages by the seqs his phone was "sent".
	for _, m := range laptopGot {
		if m.From == "bob" && m.SentSeq != fromBob[m.ID] {
			t.Fatalf("bob's laptop has his %s as sent at %d, his phone at %d", m.ID, m.SentSeq, fromBob[m.ID])
		}
	}
	wantGroupReceipts(t, alice, "club", fromAlice, protocol.StatusDelivered)
	wantGroupReceipts(t, bob, "club", fromBob, protocol.StatusDelivered)

	// Everyone reads everything: the read receipts come back too, to us
	// and to eu.
	for c, got := range map[*client.Client][]client.Message{alice: aliceGot, bob: bobGot, carol: carolGot, dave: daveGot} {
		c.Read(got[len(got)-1].Seq)
	}
	wantGroupReceipts(t, alice, "club", fromAlice, protocol.StatusRead)
	wantGroupReceipts(t, bob, "club", fromBob, protocol.StatusRead)
	// bob's laptop ticks his messages too, and hears of his phone's read.
	wantGroupReceipts(t, bobLaptop, "club", fromBob, protocol.StatusDelivered, protocol.StatusRead)
	select {
	case rs := <-bobLaptop.ReadSyncs():
		if rs.Group != "club" || rs.Device != "phone" || rs.Seq != bobGot[len(bobGot)-1].Seq {
			t.Fatalf("bob's laptop: read sync %+v, want club read up to %d on phone", rs, bobGot[len(bobGot)-1].Seq)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("bob's laptop heard nothing of his phone's read")
	}

	// A member in eu leaves; the next message reaches only the others.
	if _, err := dave.LeaveGroup(ctx, "club"); err != nil {
		t.Fatalf("dave's leave from eu: %v", err)
	}
	for _, c := range []*client.Client{alice, bob, bobLaptop, carol, dave} {
		nextEvent(t, c, "club", "leave")
	}
	waitGroupEverywhere(t, "club", 3, us, eu)
	var se *client.ServerError
	if _, err := dave.SendGroup(ctx, "club", "dave-0", tk.Body("still here?")); !errors.As(err, &se) || se.Code != protocol.ErrNotMember {
		t.Fatalf("dave's send after leaving: %v, want not_member", err)
	}
	// Fences: the next thing each member gets is the fence, so nothing
	// came twice; and nothing reached dave.
	if _, err := bob.SendGroup(ctx, "club", "bob-fence", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, carol, bobLaptop} {
		tk.NextMsgIs(t, c, "bob", "bob-fence", 15*time.Second)
	}
	if _, err := dave.Send(ctx, "bob", "dave-fence", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, bobLaptop} {
		tk.NextMsgIs(t, c, "dave", "dave-fence", 15*time.Second)
	}
	if _, err := alice.Send(ctx, "dave", "alice-fence", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	tk.NextMsgIs(t, dave, "alice", "alice-fence", 15*time.Second)
	for _, c := range []*client.Client{alice, bob, bobLaptop, carol, dave} {
		if d := c.Stats().DuplicatesDropped; d != 0 {
			t.Fatalf("%d repeats reached an SDK", d)
		}
	}
}

// A cut link loses and duplicates nothing in a group either. While us is
// cut off, alice (us) and bob (eu) keep writing to a group homed in us
// and get "sent" at once: alice's messages are in the log, bob's wait in
// eu's OUTBOX, and the fan-out's copies for eu wait in us's. Once the
// link is back every member gets every message once, in the group's one
// order, each sender's in the order sent, and both senders get their
// delivered receipts. A membership change asked from eu meanwhile is
// refused as unavailable: it needs the home's answer.
func TestRegionsGroupPartition(t *testing.T) {
	us, eu, alice, bob, carol, dave := groupRegions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	createClub(ctx, t, us, eu, alice, bob, carol, dave)

	const n = 20
	outboxEmpty(t, us, eu) // the members' acks of the create have crossed
	us.Cut(t)
	fromAlice := sendGroupAll(ctx, t, alice, "club", seq("alice", n))
	fromBob := sendGroupAll(ctx, t, bob, "club", seq("bob", n))
	// A change needs an answer from the group's home: while it cannot be
	// reached, one asked in eu is refused as unavailable (ask again), and
	// nothing is changed.
	// (Frames of its own: the SDK would ask again until answered.)
	probe := connectRaw(t, eu.Gateway, "bob", "probe")
	probe.write(`{"type":"group","id":"q-leave","op":"leave","group":"club"}`)
	probe.expectError(protocol.ErrUnavailable, "q-leave", 0)
	probe.ws.Close()
	// bob's group sends wait in eu, once each.
	s, err := eu.JS.Stream(ctx, contract.Outbox)
	if err != nil {
		t.Fatal(err)
	}
	if msgs := s.CachedInfo().State.Msgs; msgs != n {
		t.Fatalf("eu's OUTBOX holds %d during the cut, want bob's %d", msgs, n)
	}
	us.Restore()

	carolGot := takeGroup(t, carol, "club", 2*n)
	daveGot := takeGroup(t, dave, "club", 2*n)
	aliceGot := takeGroup(t, alice, "club", n)
	bobGot := takeGroup(t, bob, "club", n)
	sameLog(t, ids(carolGot), map[string][]string{"dave": ids(daveGot), "alice": ids(aliceGot), "bob": ids(bobGot)},
		map[string][]string{"alice": seq("alice", n), "bob": seq("bob", n)})
	wantGroupReceipts(t, alice, "club", fromAlice, protocol.StatusDelivered)
	wantGroupReceipts(t, bob, "club", fromBob, protocol.StatusDelivered)

	// Fences from both sides, to every member: nothing more was on its
	// way, and no SDK dropped a repeat.
	if _, err := alice.SendGroup(ctx, "club", "alice-fence", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, carol, dave} {
		c.Ack(tk.NextMsgIs(t, c, "alice", "alice-fence", 30*time.Second).Seq)
	}
	if _, err := bob.SendGroup(ctx, "club", "bob-fence", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, carol, dave} {
		c.Ack(tk.NextMsgIs(t, c, "bob", "bob-fence", 30*time.Second).Seq)
	}
	for _, c := range []*client.Client{alice, bob, carol, dave} {
		if d := c.Stats().DuplicatesDropped; d != 0 {
			t.Fatalf("%d repeats reached an SDK", d)
		}
	}
	// And OUTBOX keeps nothing once the other region has it.
	outboxEmpty(t, us, eu)
}

// outboxEmpty waits until each region's OUTBOX holds nothing: the other
// regions took everything.
func outboxEmpty(t *testing.T, rs ...*tk.Region) {
	t.Helper()
	streamEmpty(t, contract.Outbox, rs...)
}

// streamEmpty waits until stream holds nothing in each region: for a work
// queue, everything that reached it was taken.
func streamEmpty(t *testing.T, stream string, rs ...*tk.Region) {
	t.Helper()
	for _, r := range rs {
		tk.WaitFor(t, 15*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			s, err := r.JS.Stream(ctx, stream)
			if err != nil {
				return err
			}
			if msgs := s.CachedInfo().State.Msgs; msgs != 0 {
				return tk.Errorf("%s's %s still holds %d", r.Name, stream, msgs)
			}
			return nil
		})
	}
}

// recvGroup receives n messages of group gid on c without acking them.
func recvGroup(t *testing.T, c *client.Client, gid string, n int) []client.Message {
	t.Helper()
	return groupMsgs(t, c, gid, n, false)
}

// groupMsgs receives n messages of group gid on c, acking each if ack.
func groupMsgs(t *testing.T, c *client.Client, gid string, n int, ack bool) []client.Message {
	t.Helper()
	var got []client.Message
	for len(got) < n {
		m := tk.RecvMsg(t, c, 30*time.Second)
		if m.Group != gid || m.Event != nil {
			t.Fatalf("got %+v, want a message of %s", m, gid)
		}
		if ack {
			c.Ack(m.Seq)
		}
		got = append(got, m)
	}
	return got
}

// wantGroupStatus asks c for the status of its message at seq in group
// gid and checks every member's ticks and the totals.
func wantGroupStatus(ctx context.Context, t *testing.T, c *client.Client, gid string, seq uint64, members []string, delivered, read bool) {
	t.Helper()
	st, err := c.GroupStatus(ctx, gid, seq)
	if err != nil {
		t.Fatalf("status of %d in %s: %v", seq, gid, err)
	}
	want := protocol.Ticks{Delivered: delivered, Read: read}
	if len(st.Members) != len(members) || st.AllDelivered != delivered || st.AllRead != read {
		t.Fatalf("status of %d in %s: %+v, want %v all %+v", seq, gid, st, members, want)
	}
	for _, m := range members {
		if got, ok := st.Members[m]; !ok || got != want {
			t.Fatalf("status of %d in %s: %s has %+v (listed %v), want %+v", seq, gid, m, got, ok, want)
		}
	}
}

// wantStatusRefused asks c for the status of seq in group gid and wants
// it refused with code.
func wantStatusRefused(ctx context.Context, t *testing.T, c *client.Client, gid string, seq uint64, code protocol.ErrorCode) {
	t.Helper()
	var se *client.ServerError
	if st, err := c.GroupStatus(ctx, gid, seq); !errors.As(err, &se) || se.Code != code {
		t.Fatalf("status of %d in %s: %+v, %v; want %s", seq, gid, st, err, code)
	}
}

// "Message info" about a group message sent from another region than
// the group's. bob and dave (eu) send to a group homed in us among
// alice's (us) messages, and are "sent" eu's OUTBOX sequences. Asked by
// such a seq, eu's receipts function passes the question to us's, which
// finds the log message that came from it (among the others from eu and
// from us) and answers each member's ticks as they move: nobody, all
// delivered, all read. Only the sender gets an answer: another member
// asking about the seq, from eu or us, and bob about dave's message or a
// seq never sent, get unknown_seq. While us is cut off, bob's question
// about a send still waiting in eu is unavailable; once it has crossed it
// is answered.
func TestRegionsGroupStatusAcrossRegions(t *testing.T) {
	us, eu, alice, bob, carol, dave := groupRegions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	createClub(ctx, t, us, eu, alice, bob, carol, dave)

	const n = 5
	fromBob, fromDave := map[string]uint64{}, map[string]uint64{}
	var bobSeqs, daveSeqs []uint64
	for i := range n {
		sendGroupAll(ctx, t, alice, "club", []string{"alice-" + strconv.Itoa(i)})
		for _, w := range []struct {
			who  string
			c    *client.Client
			sent map[string]uint64
			seqs *[]uint64
		}{{"bob", bob, fromBob, &bobSeqs}, {"dave", dave, fromDave, &daveSeqs}} {
			id := w.who + "-" + strconv.Itoa(i)
			s := sendGroupAll(ctx, t, w.c, "club", []string{id})[id]
			if !contract.IsOutboxSeq(s) {
				t.Fatalf("%s sent at %d: not eu's OUTBOX", id, s)
			}
			w.sent[id] = s
			*w.seqs = append(*w.seqs, s)
		}
	}
	// carol has them all: they are in the log. Nobody has acked any.
	carolGot := recvGroup(t, carol, "club", 3*n)
	bobSees := []string{"alice", "carol", "dave"}
	for _, s := range bobSeqs {
		wantGroupStatus(ctx, t, bob, "club", s, bobSees, false, false)
	}
	// Only the sender is answered.
	wantStatusRefused(ctx, t, dave, "club", bobSeqs[1], protocol.ErrUnknownSeq)
	wantStatusRefused(ctx, t, alice, "club", bobSeqs[1], protocol.ErrUnknownSeq)
	wantStatusRefused(ctx, t, bob, "club", daveSeqs[1], protocol.ErrUnknownSeq)
	wantStatusRefused(ctx, t, bob, "club", daveSeqs[n-1]+1000, protocol.ErrUnknownSeq)

	// Everyone acks: all delivered, nobody has read.
	for _, m := range carolGot {
		carol.Ack(m.Seq)
	}
	got := map[*client.Client][]client.Message{carol: carolGot,
		alice: takeGroup(t, alice, "club", 2*n), bob: takeGroup(t, bob, "club", 2*n), dave: takeGroup(t, dave, "club", 2*n)}
	wantGroupReceipts(t, bob, "club", fromBob, protocol.StatusDelivered)
	wantGroupReceipts(t, dave, "club", fromDave, protocol.StatusDelivered)
	for _, s := range bobSeqs {
		wantGroupStatus(ctx, t, bob, "club", s, bobSees, true, false)
	}
	// Everyone reads everything.
	for c, ms := range got {
		c.Read(ms[len(ms)-1].Seq)
	}
	wantGroupReceipts(t, bob, "club", fromBob, protocol.StatusRead)
	wantGroupReceipts(t, dave, "club", fromDave, protocol.StatusRead)
	for _, s := range bobSeqs {
		wantGroupStatus(ctx, t, bob, "club", s, bobSees, true, true)
	}
	for _, s := range daveSeqs {
		wantGroupStatus(ctx, t, dave, "club", s, []string{"alice", "bob", "carol"}, true, true)
	}
	wantStatusRefused(ctx, t, dave, "club", bobSeqs[n-1], protocol.ErrUnknownSeq)

	// us cut off: the home cannot answer, and the send is not in its log
	// yet. Ask again later.
	outboxEmpty(t, us, eu)
	us.Cut(t)
	cut, err := bob.SendGroup(ctx, "club", "bob-cut", tk.Body("cut"))
	if err != nil {
		t.Fatal(err)
	}
	wantStatusRefused(ctx, t, bob, "club", cut.Seq, protocol.ErrUnavailable)
	us.Restore()
	for _, c := range []*client.Client{alice, carol, dave} {
		tk.NextMsgIs(t, c, "bob", "bob-cut", 30*time.Second)
	}
	wantGroupStatus(ctx, t, bob, "club", cut.Seq, bobSees, false, false)
}

// A group everyone left keeps its home: made again from another region,
// it is made there, so its members homed there can use it and no region
// makes a second group of that id.
func TestRegionsGroupMadeAgainElsewhereKeepsItsHome(t *testing.T) {
	us, eu, alice, bob, carol, _ := groupRegions(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := alice.CreateGroup(ctx, "club", "Club"); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, alice, "club", "create")
	if _, err := alice.LeaveGroup(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, alice, "club", "leave")
	waitGroupEverywhere(t, "club", 0, us, eu)

	if _, err := bob.CreateGroup(ctx, "club", "Club again", "carol"); err != nil {
		t.Fatalf("bob's create of the emptied id: %v", err)
	}
	nextEvent(t, bob, "club", "create")
	nextEvent(t, carol, "club", "create")
	waitGroupEverywhere(t, "club", 2, us, eu)
	if g, err := carol.GroupInfo(ctx, "club"); err != nil || len(g.Members) != 2 {
		t.Fatalf("carol (us) asks for the group she was added to: %+v, %v", g, err)
	}
	if _, err := carol.SendGroup(ctx, "club", "carol-0", tk.Body("hi")); err != nil {
		t.Fatalf("carol (us) writes to the group she was added to: %v", err)
	}
	if g, err := alice.CreateGroup(ctx, "club", "Mine"); err == nil {
		t.Fatalf("alice (us) made a second club beside bob's: %+v", g)
	}
}

// A user lists their groups from their home region whatever the groups'
// homes: those homed in another region come from GROUP_DIR, sourced with
// the records; a group left there is gone from the list too.
func TestRegionsGroupsListedFromEveryHome(t *testing.T) {
	us, eu, alice, bob, _, dave := groupRegions(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := alice.CreateGroup(ctx, "club", "Club", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.CreateGroup(ctx, "chess", "Chess", "bob"); err != nil {
		t.Fatal(err)
	}
	// Each from its home region: in either order.
	var creates []string
	for range 2 {
		m := tk.RecvMsg(t, bob, 15*time.Second)
		if m.Event == nil || m.Event.Op != "create" {
			t.Fatalf("bob got %+v, want a create", m)
		}
		bob.Ack(m.Seq)
		creates = append(creates, m.Group)
	}
	if slices.Sort(creates); !slices.Equal(creates, []string{"chess", "club"}) {
		t.Fatalf("bob got the creates of %q", creates)
	}
	waitGroupEverywhere(t, "club", 2, us, eu)
	names := func(c *client.Client) []string {
		list, err := c.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, g := range list {
			out = append(out, g.Group+":"+g.Name)
		}
		return out
	}
	// The record is there: its member's key may be a moment behind it.
	tk.WaitFor(t, 15*time.Second, func() error {
		if got := names(bob); !slices.Equal(got, []string{"chess:Chess", "club:Club"}) {
			return tk.Errorf("bob (eu) lists %q", got)
		}
		return nil
	})
	if got := names(alice); !slices.Equal(got, []string{"club:Club"}) {
		t.Fatalf("alice (us) lists %q", got)
	}
	if _, err := bob.LeaveGroup(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, bob, "club", "leave")
	tk.WaitFor(t, 15*time.Second, func() error {
		if got := names(bob); !slices.Equal(got, []string{"chess:Chess"}) {
			return tk.Errorf("bob (eu) lists %q after leaving club", got)
		}
		return nil
	})
}
