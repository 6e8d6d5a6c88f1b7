package deploy

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/groups"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// TestClusterGroupSendersAtOnce has every member of one group send to it
// at once on a replicated GROUPS. A group send is stored only if the
// group's last change is still the one its check read, and nats-server
// proposes one such conditional store per subject at a time: the
// members' sends refuse each other while one is in flight. Each refused
// send goes again shortly (the gateway's busy retry), so every send is
// answered "sent" at the first try, stored once, in each sender's order.
// The group's own changes meet the same refusal while the members send:
// the owner renames the group meanwhile, and each rename is stored, the
// groups function's busy retry not taking the refusal for another
// change first. A send overtaken by a rename is checked again against
// the log, at most once per rename (fewer than maxRechecks), so none
// is answered store_failed for that either.
func TestClusterGroupSendersAtOnce(t *testing.T) {
	c, setupJS := startClusterWithStreams(t)
	tk.StartFunctionsURL(t, c.Nodes[1].ClientURL)
	gnc, gjs := tk.ConnectAs(t, c.Nodes[1].ClientURL, natsauth.Groups)
	gs, err := groups.Start(context.Background(), gnc, gjs, groups.DefaultConfig(), tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gs.Stop)
	cfg := tk.TestConfig()
	cfg.SendRate, cfg.SendBurst = 10000, 10000
	g := tk.StartGatewayURL(t, c.Nodes[2].ClientURL, cfg)

	const members, each = 8, 40
	users := make([]string, members)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	owner := tk.Dial(t, g.URL, users[0], "phone")
	if _, err := owner.CreateGroup(ctx, "busy", "Busy", users[1:]...); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	seqs := make([][]uint64, members)
	var wg sync.WaitGroup
	for i, u := range users {
		cl := owner
		if i > 0 {
			cl = tk.Dial(t, g.URL, u, "phone")
		}
		wg.Go(func() {
			for j := range each {
				s, err := cl.SendGroup(ctx, "busy", fmt.Sprintf("m%03d", j), tk.Body(fmt.Sprintf("%s %d", u, j)))
				if err != nil {
					t.Errorf("%s's send %d: %v", u, j, err)
					return
				}
				seqs[i] = append(seqs[i], s.Seq)
			}
		})
	}
	const renames = 10
	wg.Go(func() {
		for j := range renames {
			if _, err := owner.RenameGroup(ctx, "busy", fmt.Sprintf("Busy %d", j)); err != nil {
				t.Errorf("rename %d: %v", j, err)
				return
			}
		}
	})
	wg.Wait()
	if t.Failed() {
		return
	}
	// One instance decides the group's changes under its lock, so none
	// of its stores can meet another change first: a conflict counted
	// is a busy refusal taken for one.
	if st := gs.Stats(); st.Conflicts != 0 || st.Changes != renames+1 {
		t.Fatalf("groups function stats %+v: want %d changes, no conflict", st, renames+1)
	}
	m, err := g.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sends from %d members at once answered in %s; republished: %s",
		members*each, members, time.Since(start).Round(time.Millisecond), republished(m))
	// None was answered store_failed (which the SDK would have resent).
	if n := metricValue(m, `switchboard_gateway_error_frames_total{code="store_failed"}`); n > 0 {
		t.Fatalf("%v sends answered store_failed", n)
	}
	for i, s := range seqs {
		for j := 1; j < len(s); j++ {
			if s[j] <= s[j-1] {
				t.Fatalf("%s's send %d stored at %d, after its send %d at %d", users[i], j, s[j], j-1, s[j-1])
			}
		}
	}
	st, err := setupJS.Stream(ctx, contract.GroupsStream)
	if err != nil {
		t.Fatal(err)
	}
	// Replicated, its bells are read for, never taken: headers only.
	if rp := st.CachedInfo().Config.RePublish; rp == nil || !rp.HeadersOnly {
		t.Fatalf("GROUPS of %d replicas republishes %+v, want headers only", st.CachedInfo().Config.Replicas, rp)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(contract.GroupMsgSubject("busy")))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects[contract.GroupMsgSubject("busy")]; got != members*each {
		t.Fatalf("the group's log holds %d messages, want %d", got, members*each)
	}
}
