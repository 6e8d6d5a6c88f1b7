package groups_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/groups"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// list asks for user's groups and returns them as "group:name:since".
func (e *env) list(t testing.TB, user string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r contract.GroupListReply
	if err := contract.Call(ctx, e.calls, contract.GroupSubject(contract.GroupList), contract.GroupRequest{Actor: user, Device: "phone"}, &r); err != nil {
		t.Fatalf("list of %s: %v", user, err)
	}
	out := []string{}
	for _, g := range r.Groups {
		out = append(out, fmt.Sprintf("%s:%s:%d", g.Group, g.Name, g.Since))
	}
	return out
}

// A user's groups follow the changes, in each group's order, and are
// listed before the change's system message is stored for anyone: a
// create and an add make members from their change, a rename renames, a
// remove and a leave take them out, a promote changes nothing; one
// user's groups of several groups share a key.
func TestListFollowsTheChanges(t *testing.T) {
	e := newEnv(t)
	e.instance(t, groups.DefaultConfig())
	created := e.must(t, contract.GroupCreate, named("alice", "friends", "Friends", "bob"))
	club := e.must(t, contract.GroupCreate, named("bob", "club", "Club"))
	added := e.must(t, contract.GroupAdd, req("alice", "friends", "carol"))
	e.settled(t, "friends", added.Seq)
	e.settled(t, "club", club.Seq)
	// Fenced by carol's copy of her add: stored after her list has it.
	if got := inboxSays(t, e, "carol"); !slices.Equal(got, []string{"event add [carol] by alice"}) {
		t.Fatalf("carol's inbox %q", got)
	}
	want := map[string][]string{
		"alice": {fmt.Sprintf("friends:Friends:%d", created.Seq)},
		"bob":   {fmt.Sprintf("club:Club:%d", club.Seq), fmt.Sprintf("friends:Friends:%d", created.Seq)},
		"carol": {fmt.Sprintf("friends:Friends:%d", added.Seq)},
		"dave":  {},
	}
	for u, w := range want {
		if got := e.list(t, u); !slices.Equal(got, w) {
			t.Fatalf("%s's groups %q, want %q", u, got, w)
		}
	}

	e.must(t, contract.GroupRename, named("alice", "friends", "Old friends"))
	e.must(t, contract.GroupPromote, req("alice", "friends", "bob"))
	removed := e.must(t, contract.GroupRemove, req("alice", "friends", "carol"))
	left := e.must(t, contract.GroupLeave, req("bob", "club"))
	e.settled(t, "friends", removed.Seq)
	e.settled(t, "club", left.Seq)
	want = map[string][]string{
		"alice": {fmt.Sprintf("friends:Old friends:%d", created.Seq)},
		"bob":   {fmt.Sprintf("friends:Old friends:%d", created.Seq)},
		"carol": {},
	}
	for u, w := range want {
		if got := e.list(t, u); !slices.Equal(got, w) {
			t.Fatalf("after rename, remove and leave: %s's groups %q, want %q", u, got, w)
		}
	}

	// Back in: from the change that added her again.
	again := e.must(t, contract.GroupAdd, req("alice", "friends", "carol"))
	e.settled(t, "friends", again.Seq)
	if got, w := e.list(t, "carol"), []string{fmt.Sprintf("friends:Old friends:%d", again.Seq)}; !slices.Equal(got, w) {
		t.Fatalf("carol added again: %q, want %q", got, w)
	}

	// Bad input changes nothing and says why.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, bad := range []struct {
		req  contract.GroupRequest
		code string
	}{
		{contract.GroupRequest{Actor: "bob.x", Device: "phone"}, contract.GroupErrBadID},
		{contract.GroupRequest{Actor: "bob", Device: "phone", Group: "friends"}, contract.GroupErrBadField},
	} {
		var r contract.GroupListReply
		err := contract.Call(ctx, e.calls, contract.GroupSubject(contract.GroupList), bad.req, &r)
		var fe *contract.FnError
		if !errors.As(err, &fe) || fe.Code != bad.code {
			t.Fatalf("list %+v: %v, want %s", bad.req, err, bad.code)
		}
	}
}

// Groups made before users' groups were kept are filled in once, by the
// first instance that keeps them, with the record's last change as
// Since; then it says it has, and a later start leaves them be.
func TestListFilledInForGroupsFromBefore(t *testing.T) {
	e := newEnv(t)
	old := e.instance(t, groups.WithoutMemberships(groups.DefaultConfig()))
	e.must(t, contract.GroupCreate, named("alice", "friends", "Friends", "bob", "carol"))
	last := e.must(t, contract.GroupRemove, req("alice", "friends", "carol"))
	club := e.must(t, contract.GroupCreate, named("bob", "club", "Club"))
	e.settled(t, "friends", last.Seq)
	e.settled(t, "club", club.Seq)
	if got := e.list(t, "bob"); len(got) != 0 {
		t.Fatalf("kept without memberships: bob's groups %q", got)
	}
	old.Stop()

	e.instance(t, groups.DefaultConfig())
	kv, err := e.n.JS.KeyValue(context.Background(), contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 30*time.Second, func() error {
		_, err := kv.Get(context.Background(), contract.MembershipsBuilt(""))
		return err
	})
	want := map[string][]string{
		"alice": {fmt.Sprintf("friends:Friends:%d", last.Seq)},
		"bob":   {fmt.Sprintf("club:Club:%d", club.Seq), fmt.Sprintf("friends:Friends:%d", last.Seq)},
		"carol": {},
	}
	for u, w := range want {
		if got := e.list(t, u); !slices.Equal(got, w) {
			t.Fatalf("%s's groups %q, want %q", u, got, w)
		}
	}

	// Built: a restart does not fill in again (a key taken out by hand
	// stays out).
	if err := kv.Delete(context.Background(), contract.MembershipsKey("alice", "")); err != nil {
		t.Fatal(err)
	}
	e.instance(t, groups.DefaultConfig())
	later := e.must(t, contract.GroupRename, named("bob", "club", "Club 2"))
	e.settled(t, "club", later.Seq)
	if got := e.list(t, "alice"); len(got) != 0 {
		t.Fatalf("filled in again after it was built: alice's groups %q", got)
	}
	if _, err := kv.Get(context.Background(), contract.MembershipsKey("alice", "")); !errors.Is(err, jetstream.ErrKeyDeleted) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("alice's key: %v", err)
	}
}

// A user in MaxMemberships groups is listed in no more: anyone can add
// anyone to a group, and the user's key must stay a message's size. The
// join is left out, counted, and the fan-out goes on: the change's
// system message reaches the user.
func TestListOfAUserInTooManyGroups(t *testing.T) {
	e := newEnv(t)
	cfg := groups.DefaultConfig()
	cfg.MaxMemberships = 2
	s := e.instance(t, cfg)
	var want []string
	for i, gid := range []string{"g1", "g2", "g3"} {
		g := e.must(t, contract.GroupCreate, named("mallory", gid, "G", "bob"))
		e.settled(t, gid, g.Seq)
		if i < 2 {
			want = append(want, fmt.Sprintf("%s:G:%d", gid, g.Seq))
		}
	}
	if got := inboxSays(t, e, "bob"); len(got) != 3 {
		t.Fatalf("bob's inbox %q: want the three creates, the third too", got)
	}
	if got := e.list(t, "bob"); !slices.Equal(got, want) {
		t.Fatalf("bob's groups %q, want the first two %q", got, want)
	}
	if n := s.Stats().Unlisted; n != 2 {
		t.Fatalf("%d joins unlisted, want bob's and mallory's in g3", n)
	}
	// Leaving one makes room again.
	left := e.must(t, contract.GroupLeave, req("bob", "g1"))
	e.settled(t, "g1", left.Seq)
	g4 := e.must(t, contract.GroupCreate, named("mallory", "g4", "G", "bob"))
	e.settled(t, "g4", g4.Seq)
	if got := e.list(t, "bob"); len(got) != 2 || got[1] != fmt.Sprintf("g4:G:%d", g4.Seq) {
		t.Fatalf("after leaving g1: bob's groups %q, want g2 and g4", got)
	}
}
