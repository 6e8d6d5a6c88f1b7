package receipts_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/receipts"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// sourcedLog is a home's GROUPS sourcing two regions' OUTBOXes, as a
// regions deployment lays them out (streams/regions.go), in one server:
// the log messages from eu and ap carry Nats-Stream-Source as the
// home's do. Each store waits for its message in the log, read in order,
// so the log holds them in the order stored.
type sourcedLog struct {
	e    *env
	log  jetstream.Consumer
	next map[string]uint64 // a region's OUTBOX sequence to come
}

func newSourcedLog(t *testing.T, e *env) *sourcedLog {
	t.Helper()
	ctx := context.Background()
	l := &sourcedLog{e: e, next: map[string]uint64{}}
	groups, err := e.n.JS.Stream(ctx, contract.GroupsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := groups.CachedInfo().Config
	for _, region := range []string{"eu", "ap"} {
		name := "OUTBOX_" + region
		if _, err := e.n.JS.CreateStream(ctx, jetstream.StreamConfig{Name: name, FirstSeq: contract.OutboxFirstSeq,
			Subjects: []string{"out." + region + ".us.g.*.*", "out." + region + ".other"}}); err != nil {
			t.Fatal(err)
		}
		cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{Name: name, SubjectTransforms: []jetstream.SubjectTransformConfig{{
			Source: "out." + region + ".us.g.*.*", Destination: contract.GroupsPrefix + "{{wildcard(1)}}.{{wildcard(2)}}.m"}}})
		l.next[region] = contract.OutboxFirstSeq
	}
	if _, err := e.n.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if l.log, err = e.n.JS.OrderedConsumer(ctx, contract.GroupsStream, jetstream.OrderedConsumerConfig{}); err != nil {
		t.Fatal(err)
	}
	return l
}

// store stores a chat message from sender in gid's log: sent at home
// (region ""), or through region's OUTBOX. It returns it as the log has
// it.
func (l *sourcedLog) store(t *testing.T, gid, from, region string) logMsg {
	t.Helper()
	ctx := context.Background()
	h := nats.Header{contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {from}, contract.HdrGroup: {gid}}
	subject := contract.GroupMsgSubject(gid)
	if region != "" {
		h.Set(contract.HdrOriginRegion, region)
		subject = "out." + region + ".us.g." + contract.GroupPartition(gid) + "." + gid
	}
	if _, err := l.e.n.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: []byte(`"hi"`), Header: h}); err != nil {
		t.Fatal(err)
	}
	if region != "" {
		l.next[region]++
	}
	return l.took(t)
}

// gap stores something else in region's OUTBOX: a sequence that never
// reaches the log.
func (l *sourcedLog) gap(t *testing.T, region string) uint64 {
	t.Helper()
	if _, err := l.e.n.JS.Publish(context.Background(), "out."+region+".other", nil); err != nil {
		t.Fatal(err)
	}
	l.next[region]++
	return l.next[region] - 1
}

// took is the next message of the log.
func (l *sourcedLog) took(t *testing.T) logMsg {
	t.Helper()
	m, err := l.log.Next(jetstream.FetchMaxWait(15 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	md, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	return logMsg{seq: md.Sequence.Stream, oseq: contract.OriginSeq(m.Headers().Get(contract.HdrStreamSource)),
		region: m.Headers().Get(contract.HdrOriginRegion), from: m.Headers().Get(contract.HdrFrom)}
}

// logMsg is a message stored in a group's log for the search's tests.
type logMsg struct {
	seq, oseq uint64
	region    string
	from      string
}

// The home finds the log message a region's OUTBOX sequence became, by
// bisecting the log on the rising OUTBOX sequences of that region's
// messages: every one of them, wherever it lies among messages sent at
// home, from a third region and in other groups, dense or sparse; and
// none for a sequence that did not reach the log (a gap: a 1:1 message or
// a position in that OUTBOX), one past the last, or of another region.
func TestSentFromFindsTheLogMessageOfAnOutboxSeq(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	l := newSourcedLog(t, e)
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	var eu []logMsg
	absent := []uint64{contract.OutboxFirstSeq - 1}
	for i := range 300 {
		switch r := rnd.IntN(10); {
		case r < 4:
			l.store(t, "g", "alice", "")
		case r < 8:
			for range rnd.IntN(3) { // others' sends and positions in between
				absent = append(absent, l.gap(t, "eu"))
			}
			m := l.store(t, "g", "bob-"+strconv.Itoa(i%3), "eu")
			if m.region != "eu" || !contract.IsOutboxSeq(m.oseq) || m.oseq != l.next["eu"]-1 {
				t.Fatalf("the log took %+v from eu's OUTBOX at %d", m, l.next["eu"]-1)
			}
			eu = append(eu, m)
		case r < 9:
			l.store(t, "g", "erin", "ap")
		default:
			absent = append(absent, l.store(t, "h", "bob-0", "eu").oseq) // another group's
		}
	}
	for _, m := range eu {
		seq, from, err := s.SentFrom(ctx, "g", "eu", m.oseq)
		if err != nil || seq != m.seq || from != m.from {
			t.Fatalf("eu's %d: found %d from %q (%v), want %d from %s", m.oseq, seq, from, err, m.seq, m.from)
		}
	}
	for _, o := range append(absent, l.next["eu"]) {
		if seq, _, err := s.SentFrom(ctx, "g", "eu", o); err != nil || seq != 0 {
			t.Fatalf("eu's %d: found %d (%v), want none", o, seq, err)
		}
	}
	if seq, _, err := s.SentFrom(ctx, "g", "us", eu[0].oseq); err != nil || seq != 0 {
		t.Fatalf("us's %d: found %d (%v), want none", eu[0].oseq, seq, err)
	}

	// Sparse: one message from eu, then many sent at home, then one more;
	// and a group with no log.
	first := l.store(t, "sparse", "bob", "eu")
	gap := l.gap(t, "eu")
	for range 100 {
		l.store(t, "sparse", "alice", "")
	}
	last := l.store(t, "sparse", "bob", "eu")
	for _, m := range []logMsg{first, last} {
		if seq, _, err := s.SentFrom(ctx, "sparse", "eu", m.oseq); err != nil || seq != m.seq {
			t.Fatalf("sparse: eu's %d found at %d (%v), want %d", m.oseq, seq, err, m.seq)
		}
	}
	if seq, _, err := s.SentFrom(ctx, "sparse", "eu", gap); err != nil || seq != 0 {
		t.Fatalf("sparse: eu's gap %d found at %d (%v)", gap, seq, err)
	}
	if seq, _, err := s.SentFrom(ctx, "nobody", "eu", first.oseq); err != nil || seq != 0 {
		t.Fatalf("a group with no log: found %d (%v)", seq, err)
	}

	// Too sparse: one message from eu, then 5,000 sent at home. A search
	// with a budget of 256 reads gives up rather than read them all at
	// every probe; the default budget finds it.
	alone := l.store(t, "long", "bob", "eu")
	for range 10 { // 500 at a time: well inside the client's async window
		var acks []jetstream.PubAckFuture
		for range 500 {
			f, err := e.n.JS.PublishMsgAsync(&nats.Msg{Subject: contract.GroupMsgSubject("long"), Data: []byte(`"hi"`),
				Header: nats.Header{contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {"alice"}, contract.HdrGroup: {"long"}}})
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, f)
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatal(err)
			}
		}
	}
	if seq, _, err := s.SentFrom(ctx, "long", "eu", alone.oseq); err != nil || seq != alone.seq {
		t.Fatalf("a search through 5,000 others: found %d (%v), want %d", seq, err, alone.seq)
	}
	small, _ := e.instanceWith(t, receipts.ProbeReads(receipts.DefaultConfig(), 256))
	if seq, _, err := small.SentFrom(ctx, "long", "eu", alone.oseq); !errors.Is(err, receipts.ErrSearchTooLong) {
		t.Fatalf("a search through 5,000 others on 256 reads: found %d (%v), want it given up", seq, err)
	}
}

// A read tick another region made for a user homed here comes through
// TICKS, and is stored in the user's inbox only if the user has read
// receipts on, under the id it was made with (sent again, TICKS takes it
// as a duplicate). One for a user with them off is taken and stored
// nowhere; one that is not a read tick is dead-lettered, stored nowhere
// either.
func TestReadTickFromAnotherRegion(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	ctx := context.Background()
	setReceipts(t, e, "carol", false)
	tick := func(user, status string) *nats.Msg {
		h := nats.Header{contract.HdrMsgID: {"t:read:bob:" + user + ":0:4503599627370500"}, contract.HdrKind: {contract.KindReceipt},
			contract.HdrFrom: {"bob"}, contract.HdrDevice: {"phone"}, contract.HdrSeqTo: {"4503599627370500"}, contract.HdrTS: {"1796525320273"}}
		if status != "" {
			h.Set(contract.HdrStatus, status)
		}
		return &nats.Msg{Subject: contract.TicksPrefix + user, Header: h}
	}
	for i, m := range []*nats.Msg{tick("alice", protocol.StatusRead), tick("alice", protocol.StatusRead),
		tick("carol", protocol.StatusRead), tick("dave", "")} {
		a, err := e.n.JS.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if a.Duplicate != (i == 1) {
			t.Fatalf("tick %d taken as a duplicate: %v", i, a.Duplicate)
		}
	}
	stream := func(name string) jetstream.Stream {
		s, err := e.n.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tk.WaitFor(t, 15*time.Second, func() error { // all taken
		if n := stream(contract.TicksStream).CachedInfo().State.Msgs; n != 0 {
			return tk.Errorf("TICKS holds %d", n)
		}
		return nil
	})
	inbox := stream(contract.Inbox)
	if n := inbox.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("INBOX holds %d, want alice's one tick", n)
	}
	m, err := inbox.GetLastMsgForSubject(ctx, contract.InboxSubject("alice"))
	if err != nil {
		t.Fatal(err)
	}
	want := tick("alice", protocol.StatusRead).Header
	for k := range want {
		if m.Header.Get(k) != want.Get(k) {
			t.Fatalf("alice's tick has %s %q, want %q", k, m.Header.Get(k), want.Get(k))
		}
	}
	tk.WaitFor(t, 15*time.Second, func() error {
		if n := stream(contract.DLQ).CachedInfo().State.Msgs; n != 1 {
			return tk.Errorf("DLQ holds %d, want dave's one malformed tick", n)
		}
		return nil
	})
}

// In a user's inbox, only a chat message the sender sent them from that
// region is found by its OUTBOX sequence: not a member's copy of a group
// message from the same sender and region, not a tick, and not for
// anyone else asking.
func TestSentToFindsOnlyTheSendersChatMessage(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	ctx := context.Background()
	if _, err := e.n.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "OUTBOX_eu", FirstSeq: contract.OutboxFirstSeq,
		Subjects: []string{"out.eu.us.*"}}); err != nil {
		t.Fatal(err)
	}
	inbox, err := e.n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	cfg := inbox.CachedInfo().Config
	cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{Name: "OUTBOX_eu", SubjectTransforms: []jetstream.SubjectTransformConfig{{
		Source: "out.eu.us.*", Destination: contract.InboxPrefix + "{{wildcard(1)}}"}}})
	if _, err := e.n.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	store := func(h nats.Header) uint64 {
		t.Helper()
		h.Set(contract.HdrOriginRegion, "eu")
		a, err := e.n.JS.PublishMsg(ctx, &nats.Msg{Subject: "out.eu.us.bob", Header: h, Data: []byte(`"hi"`)})
		if err != nil {
			t.Fatal(err)
		}
		return a.Sequence
	}
	chat := store(nats.Header{contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {"alice"}})
	copied := store(nats.Header{contract.HdrKind: {contract.KindMsg}, contract.HdrFrom: {"alice"}, contract.HdrGroup: {"club"}})
	tick := store(nats.Header{contract.HdrKind: {contract.KindReceipt}, contract.HdrFrom: {"alice"}, contract.HdrStatus: {protocol.StatusRead}})
	tk.WaitFor(t, 15*time.Second, func() error {
		info, err := inbox.Info(ctx, jetstream.WithSubjectFilter(contract.InboxSubject("bob")))
		if err != nil {
			return err
		}
		if n := info.State.Msgs; n != 3 {
			return tk.Errorf("bob's inbox holds %d of 3", n)
		}
		return nil
	})
	if seq, err := s.SentTo(ctx, "alice", "bob", "eu", chat); err != nil || seq == 0 {
		t.Fatalf("alice's chat message at %d: found %d (%v)", chat, seq, err)
	}
	for _, c := range []struct {
		sender string
		oseq   uint64
	}{{"alice", copied}, {"alice", tick}, {"carol", chat}, {"alice", tick + 1}} {
		if seq, err := s.SentTo(ctx, c.sender, "bob", "eu", c.oseq); err != nil || seq != 0 {
			t.Fatalf("%s at %d: found %d (%v), want none", c.sender, c.oseq, seq, err)
		}
	}
}
