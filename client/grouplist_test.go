package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// A device added later lists its user's groups before any of them says
// anything, through a real gateway and groups function: each with its
// name and where in its log the user joined; a group left is gone from
// the list once its leave is told; a list frame naming a group is
// refused.
func TestGroupsListedOnANewDevice(t *testing.T) {
	n := tk.StartNATS(t)
	startGroups(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := alice.CreateGroup(ctx, "club", "Club ❤", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateGroup(ctx, "chess", "Chess"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddMembers(ctx, "chess", "bob"); err != nil {
		t.Fatal(err)
	}
	bob := tk.Dial(t, g.URL, "bob", "phone")
	var since []uint64
	for range 2 {
		m := tk.RecvMsg(t, bob, 15*time.Second)
		if m.Event == nil {
			t.Fatalf("bob got %+v, want a system message", m)
		}
		// A system message's id is ev-<its place in the group's log>.
		seq, err := strconv.ParseUint(strings.TrimPrefix(m.ID, protocol.SystemIDPrefix), 10, 64)
		if err != nil {
			t.Fatalf("system message id %q", m.ID)
		}
		since = append(since, seq)
		bob.Ack(m.Seq)
	}

	laptop := tk.Dial(t, g.URL, "bob", "laptop")
	list, err := laptop.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []client.GroupEntry{{Group: "chess", Name: "Chess", Since: since[1]}, {Group: "club", Name: "Club ❤", Since: since[0]}}
	if !slices.Equal(list, want) {
		t.Fatalf("bob's groups on a new device: %+v, want %+v", list, want)
	}

	if _, err := bob.LeaveGroup(ctx, "club"); err != nil {
		t.Fatal(err)
	}
	// Fenced by bob's own copy of his leave: stored after his list lost it.
	if m := tk.RecvMsg(t, laptop, 15*time.Second); m.Event == nil || m.Event.Op != protocol.GroupLeave {
		t.Fatalf("bob's laptop got %+v, want his leave", m)
	}
	if list, err = laptop.Groups(ctx); err != nil || !slices.Equal(list, want[:1]) {
		t.Fatalf("bob's groups after leaving club: %+v %v, want %+v", list, err, want[:1])
	}
	if list, err = tk.Dial(t, g.URL, "carol", "phone").Groups(ctx); err != nil || len(list) != 0 || list == nil {
		t.Fatalf("carol's groups: %#v %v, want none", list, err)
	}

	_, err = laptop.GroupOp(ctx, protocol.GroupList, "club", "", nil)
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != protocol.ErrBadField {
		t.Fatal(fmt.Errorf("a list naming a group: %w, want bad_field", err))
	}
}
