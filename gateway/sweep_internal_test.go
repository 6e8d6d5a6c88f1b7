package gateway

import (
	"fmt"
	"slices"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/switchboard-im/switchboard/contract"
)

// The sweep asks about its due sessions' inboxes in one read and wakes
// only the sessions whose inbox holds a message past what they delivered;
// an answer cut short (the server's byte limit) wakes the sessions it did
// not answer for, so a lost copy in the part left out is still read.
func TestSweepWakesTheNewsAndTheUnanswered(t *testing.T) {
	fs := &fakeStream{}
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	var due []*session
	fts := map[string]*fakeTransport{}
	for i := range 5 {
		user := fmt.Sprintf("u%d", i)
		seq := fs.store(user, "alice", "had-"+user) // delivered before: the feed starts past it
		s, ft := startedSession(t, srv, user, seq)
		due, fts[user] = append(due, s), ft
	}
	// Each feed's first read has run: a message stored before it would be
	// read there, not found by the sweep.
	for _, s := range due {
		waitIdle(t, s)
	}
	woken := func() float64 {
		var m dto.Metric
		if err := srv.metrics.catchUps.WithLabelValues(reasonSweep).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	got := func(user, id string) error {
		for _, f := range fts[user].sent(t) {
			if f.ID == id {
				return nil
			}
		}
		return fmt.Errorf("%s has not got %s", user, id)
	}

	fs.store("u1", "alice", "lost-1") // its live copy never came
	srv.sweep(due)
	waitFor(t, func() error { return got("u1", "lost-1") })
	fs.mu.Lock()
	var asked []directGet
	for _, r := range fs.reads {
		if len(r.MultiLast) > 0 {
			asked = append(asked, r)
		}
	}
	fs.mu.Unlock()
	if len(asked) != 1 || len(asked[0].MultiLast) != 5 || !slices.Contains(asked[0].MultiLast, contract.InboxSubject("u4")) {
		t.Fatalf("the sweep asked %+v, want one read naming the 5 inboxes", asked)
	}
	if w := woken(); w != 1 {
		t.Fatalf("%v sessions woken, want u1's alone", w)
	}

	// Cut short after two answers: u1 and u2 (the oldest last messages)
	// are answered, nothing new; the rest are woken, and u4's lost copy,
	// the newest, in the part left out, is read.
	fs.mu.Lock()
	fs.cut = 2
	fs.mu.Unlock()
	fs.store("u4", "alice", "lost-4")
	srv.sweep(due)
	waitFor(t, func() error { return got("u4", "lost-4") })
	if w := woken(); w != 1+3 {
		t.Fatalf("%v sessions woken in all, want u1's, then the three not answered", w)
	}
}
