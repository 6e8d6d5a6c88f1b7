package deploy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// TestLeafFile keeps deploy/regions/leaf.inc, which each region's leaf
// remote includes, the rendering of natsauth's leaf rules.
func TestLeafFile(t *testing.T) {
	file := filepath.Join("regions", natsauth.LeafConfFile)
	want := natsauth.LeafConf()
	if *update {
		if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s differs from internal/natsauth; run go test ./deploy -run TestLeafFile -update", file)
	}
}

// The regions' files start a hub and two regions, each its own JetStream
// domain, joined by leaf links that carry JetStream sourcing and nothing
// that is a region's own: a subject on the deny list published in one
// region never reaches a subscriber in the other, proved by a fence
// published after it on the same connection, which does cross and must
// arrive first.
func TestRegionsLeafLinksCarryOnlySourcing(t *testing.T) {
	rs := tk.StartRegions(t, "us", "eu")
	rs.Apply(t, streams.Options{})
	us, eu := rs.Region("us"), rs.Region("eu")

	const fence = "xr.fence"
	var denied []string
	for _, d := range natsauth.LeafDeny {
		denied = append(denied, strings.Replace(d, ">", "leak.x", 1))
	}
	// One channel for every subscription: the connection hands it the
	// messages in the order they came (callbacks would each run on a
	// goroutine of their own, in no order between subscriptions).
	got := make(chan *nats.Msg, 64)
	for _, subj := range append(denied, fence) {
		sub, err := eu.Conn.ChanSubscribe(subj, got)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := eu.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	// The fence's interest reaches us over the link (and the hub) a
	// little after the flush: publish it until it arrives.
	tk.WaitFor(t, 10*time.Second, func() error {
		_ = us.Conn.Publish(fence, nil)
		select {
		case <-got:
			return nil
		case <-time.After(50 * time.Millisecond):
			return tk.Errorf("fence not across yet")
		}
	})
	for _, subj := range denied {
		if err := us.Conn.Publish(subj, []byte("must not cross")); err != nil {
			t.Fatal(err)
		}
	}
	// The last fence is told apart from those published while waiting,
	// which may still be on their way.
	if err := us.Conn.Publish(fence, []byte("last")); err != nil {
		t.Fatal(err)
	}
	for last := false; !last; {
		select {
		case m := <-got:
			if m.Subject != fence {
				t.Fatalf("%s crossed the leaf link", m.Subject)
			}
			last = string(m.Data) == "last"
		case <-time.After(10 * time.Second):
			t.Fatal("the fence did not cross")
		}
	}

	// What does cross is a message stored in us's OUTBOX for a user of
	// eu, which eu's INBOX sources, naming where it came from.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := us.JS.PublishMsg(ctx, &nats.Msg{Subject: contract.OutboxSubject("eu", "bob"), Data: []byte("hi"),
		Header: nats.Header{contract.HdrMsgID: {"m:alice:x1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !contract.IsOutboxSeq(ack.Sequence) {
		t.Fatalf("OUTBOX stored at %d, below %d", ack.Sequence, contract.OutboxFirstSeq)
	}
	inbox, err := eu.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		m, err := inbox.GetLastMsgForSubject(ctx, contract.InboxSubject("bob"))
		if err != nil {
			return err
		}
		if got := contract.OriginSeq(m.Header.Get(contract.HdrStreamSource)); got != ack.Sequence {
			return tk.Errorf("bob's copy names origin %d (%q), want %d", got, m.Header.Get(contract.HdrStreamSource), ack.Sequence)
		}
		return nil
	})
}

// A layout that would loop messages between regions, or lay one region
// out under another's name, is refused before anything is changed.
func TestRegionsRefuseLoopingLayouts(t *testing.T) {
	rs := tk.StartRegions(t, "us", "eu")
	rs.Apply(t, streams.Options{})
	us := rs.Region("us")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// eu's layout on us's server: us would take eu's messages as its own.
	err := streams.Apply(ctx, us.JS, streams.Options{Region: rs.Layout(rs.Region("eu"))})
	if !errors.Is(err, streams.ErrRegions) || !strings.Contains(err.Error(), "domain") {
		t.Fatalf("eu's layout on us: %v", err)
	}
	// A region named twice, or a directory that is no region.
	for _, r := range []*streams.Region{
		{Name: "us", Peers: []string{"eu", "us"}, Directory: "us"},
		{Name: "us", Peers: []string{"eu"}, Directory: "ap"},
		{Name: "us", Directory: "us"},
		{Name: "U.S.", Peers: []string{"eu"}, Directory: "eu"},
	} {
		if err := streams.Apply(ctx, us.JS, streams.Options{Region: r}); !errors.Is(err, streams.ErrRegions) {
			t.Fatalf("%+v: %v", r, err)
		}
	}
	// An OUTBOX that sources another region's OUTBOX would send eu's
	// messages on again, and back: refused at the next start.
	s, err := us.JS.Stream(ctx, contract.Outbox)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Sources = []*jetstream.StreamSource{{Name: contract.Outbox, External: &jetstream.ExternalStream{APIPrefix: "$JS.eu.API"}}}
	if _, err := us.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	err = streams.Apply(ctx, us.JS, streams.Options{Region: rs.Layout(us)})
	if !errors.Is(err, streams.ErrRegions) || !strings.Contains(err.Error(), "loop") {
		t.Fatalf("a sourcing OUTBOX: %v", err)
	}
	cfg.Sources = nil
	if _, err := us.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// A GROUPS that sources eu's GROUPS, or a GROUP_DIR that sources eu's
	// GROUP_DIR, would pass logs or records round the regions.
	for _, c := range []struct{ stream, from string }{
		{contract.GroupsStream, contract.GroupsStream},
		{"KV_" + contract.GroupDirKV, "KV_" + contract.GroupDirKV},
	} {
		s, err := us.JS.Stream(ctx, c.stream)
		if err != nil {
			t.Fatal(err)
		}
		good := s.CachedInfo().Config
		bad := good
		bad.Sources = append(slices.Clone(good.Sources), &jetstream.StreamSource{Name: c.from, External: &jetstream.ExternalStream{APIPrefix: "$JS.eu.API"}})
		if _, err := us.JS.UpdateStream(ctx, bad); err != nil {
			t.Fatal(err)
		}
		err = streams.Apply(ctx, us.JS, streams.Options{Region: rs.Layout(us)})
		if !errors.Is(err, streams.ErrRegions) || !strings.Contains(err.Error(), "may source only") {
			t.Fatalf("%s sourcing eu's %s: %v", c.stream, c.from, err)
		}
		if _, err := us.JS.UpdateStream(ctx, good); err != nil {
			t.Fatal(err)
		}
	}
	// Put right, the layout applies again.
	if err := streams.Apply(ctx, us.JS, streams.Options{Region: rs.Layout(us)}); err != nil {
		t.Fatalf("the layout put right: %v", err)
	}
}
