package gateway_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/functions/groups"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

func startGroupsFunction(t *testing.T, n *tk.NATS) {
	t.Helper()
	gnc := n.Connect(t, natsauth.Groups)
	gjs, _ := jetstream.New(gnc)
	gs, err := groups.Start(context.Background(), gnc, gjs, groups.DefaultConfig(), tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gs.Stop)
}

// nextType reads r's frames until one of type typ.
func skipTo(r *raw, typ string) *protocol.Frame {
	for {
		if f := r.next(); f.Type == typ {
			return f
		}
	}
}

// skipToEvent reads r's frames until a group system message of op.
func skipToEvent(r *raw, op string) *protocol.Frame {
	for {
		if f := r.next(); f.Type == protocol.TypeMsg && f.Event != nil && f.Event.Op == op {
			return f
		}
	}
}

// memberSeenOnAnotherGateway makes group friends (alice, on one gateway,
// its creator, with members), connects member on a second gateway and
// has them type, so that gateway keeps the group's record; it returns
// alice, the member, and when the record was read.
func memberSeenOnAnotherGateway(t *testing.T, member string, members string) (alice, m *raw, read time.Time) {
	t.Helper()
	n := tk.StartNATS(t)
	startGroupsFunction(t, n)
	g1 := tk.StartGateway(t, n, tk.TestConfig())
	g2 := tk.StartGateway(t, n, tk.TestConfig())
	alice = connectRaw(t, g1, "alice", "phone")
	alice.write(`{"type":"group","id":"a-1","op":"create","group":"friends","name":"Friends","users":` + members + `}`)
	groupAnswer(t, alice, "a-1")
	m = connectRaw(t, g2, member, "phone")
	read = time.Now()
	m.write(`{"type":"typing","group":"friends"}`)
	skipTo(alice, protocol.TypeTyping)
	return alice, m, read
}

// PROTOCOL.md: presence_sub with group "follows the members as the group
// is when the frame arrives; send it again after a membership change to
// follow newcomers". bob follows the group again once he has the system
// message of carol's add; carol must be among those followed.
func TestGroupPresenceSubAfterAnAddFollowsTheNewcomer(t *testing.T) {
	alice, bob, start := memberSeenOnAnotherGateway(t, "bob", `["bob"]`)

	alice.write(`{"type":"group","id":"a-2","op":"add","group":"friends","users":["carol"]}`)
	groupAnswer(t, alice, "a-2")
	skipToEvent(bob, "add")
	bob.write(`{"type":"presence_sub","group":"friends"}`)
	bob.write(`{"type":"presence_sub","users":["zed"]}`) // fence: taken after the group's
	elapsed := time.Since(start)
	var got []string
	for {
		f := bob.next()
		if f.Type == protocol.TypeError {
			t.Fatalf("bob's presence_sub refused: %+v", *f)
		}
		if f.Type != protocol.TypePresence {
			continue
		}
		if f.User == "zed" {
			break
		}
		got = append(got, f.User)
	}
	sort.Strings(got)
	if fmt.Sprint(got) != "[alice carol]" {
		t.Fatalf("presence_sub of friends after carol's add (stored and delivered to bob; %v after bob's gateway read the record) followed %v, want [alice carol]", elapsed, got)
	}
}

// A member removed (on another gateway) who then sends presence_sub with
// the group must get not_member: "one this user is not in not_member".
func TestGroupPresenceSubAfterRemovalIsRefused(t *testing.T) {
	alice, dave, start := memberSeenOnAnotherGateway(t, "dave", `["bob","dave"]`)

	alice.write(`{"type":"group","id":"a-2","op":"remove","group":"friends","users":["dave"]}`)
	groupAnswer(t, alice, "a-2")
	skipToEvent(dave, "remove")
	dave.write(`{"type":"presence_sub","group":"friends"}`)
	elapsed := time.Since(start)
	for {
		f := dave.next()
		switch f.Type {
		case protocol.TypeError:
			if f.Code != protocol.ErrNotMember {
				t.Fatalf("removed dave's presence_sub: %+v, want not_member", *f)
			}
			return
		case protocol.TypePresence:
			t.Fatalf("removed dave (the removal stored and delivered to him, %v after his gateway read the record) follows the group: got presence of %s", elapsed, f.User)
		}
	}
}

// A presence_sub naming a group reads its record and may ask the presence
// function about up to MaxPresenceSubs members, 256 at a time: it costs
// the frame tokens of those calls (PROTOCOL.md, limits), not one.
func TestGroupPresenceSubCostsTheCallsItMakes(t *testing.T) {
	n := tk.StartNATS(t)
	startGroupsFunction(t, n)
	cfg := tk.TestConfig()
	cfg.FrameRate, cfg.FrameBurst = 0.01, 7 // no refill during the test
	cfg.MaxPresenceSubs = 1024              // a group frame costs 1 + 1024/256 = 5
	g := tk.StartGateway(t, n, cfg)
	alice := connectRaw(t, g, "alice", "phone")
	alice.write(`{"type":"group","id":"a-1","op":"create","group":"friends","name":"Friends","users":["bob"]}`)
	groupAnswer(t, alice, "a-1")

	alice.write(`{"type":"presence_sub","group":"friends"}`) // 5 of 7
	alice.write(`{"type":"presence_sub","group":"friends"}`) // refused: 2 left
	alice.write(`{"type":"presence_sub","users":["zed"]}`)   // 1 of the 2
	var bob, limited int
	for {
		f := alice.next()
		switch {
		case f.Type == protocol.TypePresence && f.User == "bob":
			bob++
		case f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited:
			limited++
		case f.Type == protocol.TypeError:
			t.Fatalf("unexpected error %+v", *f)
		}
		if f.Type == protocol.TypePresence && f.User == "zed" {
			break
		}
	}
	if bob != 1 || limited != 1 {
		t.Fatalf("bob's state came %d times and %d frames were refused; want the first group frame taken, the second refused, the users frame taken", bob, limited)
	}
}
