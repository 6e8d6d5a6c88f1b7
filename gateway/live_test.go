package gateway_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// republish turns INBOX's live copies off or back on, so a test can store
// a message whose live copy never comes, as if lost on its way.
func republish(t *testing.T, n *tk.NATS, on bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cfg, err := streams.InboxConfig(streams.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !on {
		cfg.RePublish = nil
	}
	if _, err := n.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// catchUps reads the gateway's catchups_total for one reason.
func catchUps(t *testing.T, g *tk.Gateway, reason string) int {
	t.Helper()
	return counter(t, g, `catchups_total\{reason="`+reason+`"\}`)
}

// counter reads one of the gateway's counters, named by a pattern after
// its namespace.
func counter(t *testing.T, g *tk.Gateway, pattern string) int {
	t.Helper()
	b, err := g.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`switchboard_gateway_` + pattern + ` (\d+)`).FindStringSubmatch(b)
	if m == nil {
		t.Fatalf("/metrics has no %s", pattern)
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// The sweep asks about many sessions' inboxes in one read and wakes none
// whose inbox holds nothing past what it delivered (each used to read
// its own inbox, every sweep, to learn that); a last message whose live
// copy was lost is still found (TestLostLiveCopyIsReadFromTheStream).
func TestSweepAsksAboutManyInboxesAtOnce(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.SweepInterval = time.Second
	cfg.SendRate, cfg.SendBurst = 1000, 1000
	g := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	// 120 devices, each with a message delivered and acked: an inbox
	// that is not empty, with nothing new in it.
	for i := range 120 {
		user := fmt.Sprintf("u%d", i)
		c := tk.Dial(t, g.URL, user, "phone")
		send(t, alice, user, "m-"+user, "hello")
		c.Ack(tk.NextMsgIs(t, c, "alice", "m-"+user, wait).Seq)
	}
	// alice's delivered ticks are the last thing stored in an inbox: once
	// she has them all, nothing is on its way.
	ticked := map[string]bool{}
	for len(ticked) < 120 {
		r := tk.RecvReceipt(t, alice, wait)
		ticked[r.ID] = true
	}
	woken, sweeps := catchUps(t, g, "sweep"), counter(t, g, "sweep_reads_total")
	tk.WaitFor(t, wait, func() error {
		if d := counter(t, g, "sweep_reads_total") - sweeps; d < 120 {
			return tk.Errorf("%d sweep reads so far", d)
		}
		return nil
	})
	// Every session was asked about twice or more (a read per tick that
	// had sessions due), and none was woken to read its inbox itself.
	if d := catchUps(t, g, "sweep") - woken; d != 0 {
		t.Fatalf("the sweep woke %d sessions with nothing new", d)
	}
}

// A live copy that never arrives costs nothing but time: the next copy
// names the missed message as its predecessor and the session reads both
// from the stream, in order; a last message with no successor is found
// by the sweep.
func TestLostLiveCopyIsReadFromTheStream(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig()) // sweeps every 2 minutes: not in this test
	cfg := tk.TestConfig()
	cfg.SweepInterval = time.Second
	swept := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	carol := tk.Dial(t, swept.URL, "carol", "phone")
	expect := func(c *client.Client, ids ...string) {
		t.Helper()
		for _, id := range ids {
			m := tk.RecvMsg(t, c, wait)
			if m.ID != id {
				t.Fatalf("got %s, want %s", m.ID, id)
			}
			c.Ack(m.Seq)
		}
	}
	send(t, alice, "bob", "m1", "live")
	expect(bob, "m1")

	republish(t, n, false)
	send(t, alice, "bob", "m2", "its copy is lost")
	republish(t, n, true)
	send(t, alice, "bob", "m3", "names m2 as its predecessor")
	expect(bob, "m2", "m3")
	// (alice may have had one too: a receipt forwarded to her while the
	// copies were off.)
	if got := catchUps(t, g, "gap"); got < 1 {
		t.Fatalf("%d catch-ups for a gap, want at least bob's", got)
	}

	republish(t, n, false)
	send(t, alice, "carol", "c1", "the last, its copy lost")
	republish(t, n, true)
	expect(carol, "c1") // within a sweep
	// Fences. bob's comes live after m3's copy, whose gap the read
	// filled: had m3 also been taken from the copy, it would come before
	// the fence. carol's copy is lost too, so it comes by a read of the
	// stream (the sweep), the path c1 came by: a read that gave c1 again
	// would give it first.
	send(t, alice, "bob", "fence-bob", "fence")
	tk.NextMsgIs(t, bob, "alice", "fence-bob", wait)
	republish(t, n, false)
	send(t, alice, "carol", "fence-carol", "fence")
	republish(t, n, true)
	tk.NextMsgIs(t, carol, "alice", "fence-carol", wait)
	for _, c := range []*client.Client{bob, carol} {
		if st := c.Stats(); st.DuplicatesDropped != 0 {
			t.Fatalf("an SDK dropped %d repeats: a message was delivered twice", st.DuplicatesDropped)
		}
	}
}

// A device holds at most MaxInflight messages unacked. Past that the
// gateway lets the live copies go and, once the device has acked, reads
// the rest from the stream: all arrive, in order, once.
func TestDeviceWithTooManyUnackedGetsTheRestAfterAcking(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.MaxInflight = 8
	cfg.SendRate, cfg.SendBurst = 1000, 1000
	g := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	const count = 30
	for i := range count {
		send(t, alice, "bob", fmt.Sprintf("m%02d", i), "hi")
	}
	var held []uint64
	for i := range cfg.MaxInflight {
		m := tk.RecvMsg(t, bob, wait)
		if want := fmt.Sprintf("m%02d", i); m.ID != want {
			t.Fatalf("bob got %s, want %s", m.ID, want)
		}
		held = append(held, m.Seq)
	}
	// The ninth waits for acks. Everything held back is stored in bob's
	// inbox, so no message can fence it; the answer to a settings frame
	// sent now can: a message written to the socket before the answer
	// would be in Messages() by the time Settings returns. The feed takes
	// the copies one after another, so a ninth handed over without
	// waiting would follow the eighth at once.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := bob.Settings(ctx, client.SettingsChange{}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-bob.Messages():
		t.Fatalf("bob got %s with %d unacked", m.ID, cfg.MaxInflight)
	default:
	}
	for _, seq := range held {
		bob.Ack(seq)
	}
	for i := cfg.MaxInflight; i < count; i++ {
		m := tk.RecvMsg(t, bob, wait)
		if want := fmt.Sprintf("m%02d", i); m.ID != want {
			t.Fatalf("bob got %s, want %s", m.ID, want)
		}
		bob.Ack(m.Seq)
	}
	// Acked too, so the cursor below must reach it.
	send(t, alice, "bob", "fence", "fence")
	bob.Ack(tk.NextMsgIs(t, bob, "alice", "fence", wait).Seq)
	tk.WaitFor(t, wait, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		last, err := n.JS.Stream(ctx, contract.Inbox)
		if err != nil {
			return err
		}
		m, err := last.GetLastMsgForSubject(ctx, contract.InboxSubject("bob"))
		if err != nil {
			return err
		}
		if floor := cursor(t, n, "bob", "phone"); floor != m.Sequence {
			return tk.Errorf("bob's cursor at %d, want %d (all acked)", floor, m.Sequence)
		}
		return nil
	})
}

// Live copies sent while a gateway's NATS connection is down are lost with
// it; once the connection is back, every session on that gateway reads its
// inbox from the stream, long before a sweep would come round.
func TestSessionsReadTheirInboxAfterNATSReconnect(t *testing.T) {
	n := tk.StartNATS(t)
	addr := strings.TrimPrefix(n.Server.ClientURL(), "nats://")
	proxy := tk.StartProxy(t, addr)
	g := tk.StartGatewayURL(t, "nats://"+proxy.Addr, tk.TestConfig()) // sweeps every 2 minutes
	other := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, other.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	send(t, alice, "bob", "m1", "before")
	bob.Ack(tk.RecvMsg(t, bob, wait).Seq)

	proxy.SetTarget("127.0.0.1:1") // nothing listens: reconnects fail
	proxy.DropAll()
	send(t, alice, "bob", "m2", "while bob's gateway is cut off") // its live copy is lost
	proxy.SetTarget(addr)

	m := tk.RecvMsg(t, bob, wait)
	if m.ID != "m2" {
		t.Fatalf("bob got %s, want m2", m.ID)
	}
	bob.Ack(m.Seq)
	if got := catchUps(t, g, "reconnect"); got < 1 {
		t.Fatalf("%d catch-ups after a reconnect, want at least 1", got)
	}
	// Its live copy names m2 as its predecessor: had the read not
	// counted m2 as had, m2 would be read again ahead of it. (A repeat
	// of m1 is allowed here: its delivered event may be lost with the
	// connection, and then bob's session restarts and m1 comes again.)
	send(t, alice, "bob", "fence", "fence")
	tk.NextMsgIs(t, bob, "alice", "fence", wait)
}

// A reconnect storm's backlogs are read once for all: sessions that come
// back together share one reader, which reads the range in stream order
// and hands each message to its user's sessions. Each device gets its
// own messages, interleaved in the stream with everyone else's, in order
// and once.
func TestStormSharesOneBacklogRead(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.SharedCatchUps = 0 // share every read, however few
	cfg.SendRate, cfg.SendBurst = 1000, 1000
	g := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	const users, rounds = 24, 5
	for u := range users {
		_ = tk.Dial(t, g.URL, fmt.Sprintf("u%02d", u), "phone").Close() // registered
	}
	tk.WaitFor(t, wait, func() error {
		if s := g.Server.Sessions(); s != 1 {
			return tk.Errorf("%d sessions, want alice's alone", s)
		}
		return nil
	})
	for r := range rounds {
		for u := range users {
			send(t, alice, fmt.Sprintf("u%02d", u), fmt.Sprintf("u%02d-m%d", u, r), "while away")
		}
	}
	devs := make([]*client.Client, users)
	var wg sync.WaitGroup
	for u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			devs[u] = tk.Dial(t, g.URL, fmt.Sprintf("u%02d", u), "phone")
		}()
	}
	wg.Wait()
	for u, d := range devs {
		for r := range rounds {
			m := tk.RecvMsg(t, d, wait)
			if want := fmt.Sprintf("u%02d-m%d", u, r); m.ID != want {
				t.Fatalf("u%02d got %s, want %s", u, m.ID, want)
			}
			d.Ack(m.Seq)
		}
	}
	// Fences, live: a session's feed waits until the shared reader is
	// done with it before it takes the next live copy, so whatever the
	// reader gives a device comes before its fence.
	for u := range users {
		send(t, alice, fmt.Sprintf("u%02d", u), fmt.Sprintf("fence-u%02d", u), "fence")
	}
	for u, d := range devs {
		tk.NextMsgIs(t, d, "alice", fmt.Sprintf("fence-u%02d", u), wait)
		if st := d.Stats(); st.DuplicatesDropped != 0 {
			t.Fatalf("a device's SDK dropped %d repeats", st.DuplicatesDropped)
		}
	}
	b, err := g.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`switchboard_gateway_shared_backlog_passes_total (\d+)`).FindStringSubmatch(b)
	if m == nil || m[1] == "0" {
		t.Fatalf("no shared backlog pass ran: %q", m)
	}
}
