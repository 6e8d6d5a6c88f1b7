package gateway

import (
	"fmt"
	"testing"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Updates of one user can be published out of order: a follower is
// forwarded none older than one it was forwarded, whatever the order
// they come in; an update without a revision (a settings change) always.
func TestPresenceUpdatesOlderThanOneForwardedAreDropped(t *testing.T) {
	srv := testServer(t, sharedConfig(), &fakeStream{}, &fakeCursors{})
	s, ft := startedSession(t, srv, "alice", 0)
	for _, u := range []contract.PresenceUpdate{
		{User: "bob", Online: true, Rev: 5},
		{User: "bob", Online: false, LastSeen: 1000, Rev: 9},
		{User: "bob", Online: true, Rev: 7}, // published late
		{User: "bob", Online: false, LastSeen: 1000, Rev: 9},
		{User: "bob", Online: true},
		{User: "carol", Online: true, Rev: 2}, // another user's count apart
	} {
		u.Visibility = contract.VisibleEveryone
		s.follows.onPresence(&u)
	}
	type seen struct {
		user   string
		online bool
	}
	var got []seen
	for _, f := range ft.sent(t) {
		if f.Type == protocol.TypePresence {
			got = append(got, seen{f.User, f.Online})
		}
	}
	want := []seen{{"bob", true}, {"bob", false}, {"bob", false}, {"bob", true}, {"carol", true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("forwarded %v, want %v (the update of revision 7, after 9, dropped)", got, want)
	}
}
