package gateway

import (
	"fmt"
	"testing"

	"github.com/switchboard-im/switchboard/contract"
)

// sharedConfig has every read of a backlog shared (SharedCatchUps 0).
func sharedConfig() Config {
	cfg := testConfig()
	cfg.SharedCatchUps = 0
	return cfg
}

// Sessions reading their backlogs at once hand their reads to the
// backlog reader, which reads every inbox in stream order and gives each
// session its own messages, in order, once.
func TestBacklogGivesEachSessionItsOwn(t *testing.T) {
	fs := &fakeStream{}
	var bobs, carols []uint64
	for i := range 20 {
		bobs = append(bobs, fs.store("bob", "alice", fmt.Sprintf("b%d", i)))
		fs.store("dave", "alice", fmt.Sprintf("x%d", i)) // nobody's here
		carols = append(carols, fs.store("carol", "alice", fmt.Sprintf("c%d", i)))
	}
	srv := testServer(t, sharedConfig(), fs, &fakeCursors{})
	_, bob := startedSession(t, srv, "bob", 0)
	_, carol := startedSession(t, srv, "carol", carols[4]) // had five already
	expectSeqs(t, bob, bobs...)
	expectSeqs(t, carol, carols[5:]...)
	if n := fs.readsOn(contract.InboxSubject("bob")) + fs.readsOn(contract.InboxSubject("carol")); n != 0 {
		t.Fatalf("%d reads of one inbox, want every read shared", n)
	}
	if fs.readsOn(contract.InboxPrefix+"*") == 0 {
		t.Fatal("no shared read")
	}
}

// A session whose position is further behind than sharedMaxSpan reads on
// its own: one device back after weeks would otherwise have every pass
// read weeks of everyone's messages.
func TestBacklogLeavesAFarBehindSessionToItself(t *testing.T) {
	fs := &fakeStream{}
	fs.storeAt(1, "carol", "alice", "old")
	fs.storeAt(sharedMaxSpan+10, "carol", "alice", "new")
	srv := testServer(t, sharedConfig(), fs, &fakeCursors{})
	_, carol := startedSession(t, srv, "carol", 0)
	expectSeqs(t, carol, 1, sharedMaxSpan+10)
	if fs.readsOn(contract.InboxSubject("carol")) == 0 {
		t.Fatal("the far-behind session did not read on its own")
	}
}

// The reader stops giving a session messages once it holds MaxInflight
// unsettled; it reads the rest once it has settled half, as after any
// time it had too many unacked.
func TestBacklogStopsAtMaxInflight(t *testing.T) {
	fs := &fakeStream{}
	for i := range 4 {
		fs.store("bob", "alice", fmt.Sprintf("b%d", i)) // 1..4
	}
	cfg := sharedConfig()
	cfg.MaxInflight = 2
	srv := testServer(t, cfg, fs, &fakeCursors{})
	s, bob := startedSession(t, srv, "bob", 0)
	expectSeqs(t, bob, 1, 2)
	waitIdle(t, s)
	s.feed.settle(1)
	expectSeqs(t, bob, 1, 2, 3)
	s.feed.settle(2)
	s.feed.settle(3)
	expectSeqs(t, bob, 1, 2, 3, 4)
}
