package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

// startRegions runs us and eu from deploy/regions, each with its
// functions and a gateway, alice homed in us and bob in eu.
func startRegions(t *testing.T) (*tk.Regions, *tk.Region, *tk.Region) {
	t.Helper()
	return startRegionsWith(t, tk.RegionsOptions{})
}

// startRegionsWith is startRegions with o.
func startRegionsWith(t *testing.T, o tk.RegionsOptions) (*tk.Regions, *tk.Region, *tk.Region) {
	t.Helper()
	rs := tk.StartRegionsWith(t, o, "us", "eu")
	rs.Apply(t, streams.Options{})
	rs.SetHome(t, "alice", "us")
	rs.SetHome(t, "bob", "eu")
	rs.Start(t, tk.TestConfig())
	return rs, rs.Region("us"), rs.Region("eu")
}

func wantReceipt(t *testing.T, c *client.Client, id, status, by string) client.Receipt {
	t.Helper()
	r := tk.RecvReceipt(t, c, 15*time.Second)
	if r.ID != id || r.Status != status || r.By != by {
		t.Fatalf("receipt %s %s by %s, want %s %s by %s", r.ID, r.Status, r.By, id, status, by)
	}
	return r
}

// Users homed in two regions chat as if in one: "sent" comes from the
// sender's region (an OUTBOX sequence), the message reaches the
// recipient's home inbox across the leaf link, the sender's other device
// gets its own copy, and the delivered and read ticks come back naming
// the messages as the sender knows them.
func TestRegionsChatAcrossRegions(t *testing.T) {
	_, us, eu := startRegions(t)
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	laptop := tk.Dial(t, us.Gateway.URL, "alice", "laptop")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var sent []client.Sent
	for _, id := range []string{"m1", "m2", "m3"} {
		s, err := alice.Send(ctx, "bob", id, tk.Body("hello "+id))
		if err != nil {
			t.Fatal(err)
		}
		if !contract.IsOutboxSeq(s.Seq) {
			t.Fatalf("%s sent at %d: not an OUTBOX sequence", id, s.Seq)
		}
		sent = append(sent, s)
	}
	// Alice's laptop has her messages to bob, naming where they were sent.
	for i, id := range []string{"m1", "m2", "m3"} {
		if m := tk.NextMsgIs(t, laptop, "alice", id, 15*time.Second); m.To != "bob" || m.SentSeq != sent[i].Seq {
			t.Fatalf("laptop got %+v, want alice's %s to bob sent at %d", m, id, sent[i].Seq)
		}
	}
	var got []client.Message
	for _, id := range []string{"m1", "m2", "m3"} {
		m := tk.NextMsgIs(t, bob, "alice", id, 15*time.Second)
		if contract.IsOutboxSeq(m.Seq) {
			t.Fatalf("bob got %s at %d: not an INBOX sequence", id, m.Seq)
		}
		got = append(got, m)
	}
	// One ack for the three: one tick, which names alice's three sends.
	bob.Ack(got[0].Seq)
	bob.Ack(got[1].Seq)
	bob.Ack(got[2].Seq)
	for i, id := range []string{"m1", "m2", "m3"} {
		r := wantReceipt(t, alice, id, protocol.StatusDelivered, "bob")
		if r.Seq != sent[i].Seq {
			t.Fatalf("delivered %s at %d, sent at %d", id, r.Seq, sent[i].Seq)
		}
	}
	// Bob reads up to m2: m1 and m2 are read, m3 not yet.
	bob.Read(got[1].Seq)
	wantReceipt(t, alice, "m1", protocol.StatusRead, "bob")
	wantReceipt(t, alice, "m2", protocol.StatusRead, "bob")

	// And the other way round, through eu's OUTBOX into us.
	s, err := bob.Send(ctx, "alice", "r1", tk.Body("hi alice"))
	if err != nil {
		t.Fatal(err)
	}
	m := tk.NextMsgIs(t, alice, "bob", "r1", 15*time.Second)
	alice.Ack(m.Seq)
	if r := wantReceipt(t, bob, "r1", protocol.StatusDelivered, "alice"); r.Seq != s.Seq {
		t.Fatalf("delivered r1 at %d, sent at %d", r.Seq, s.Seq)
	}
	alice.Read(m.Seq)
	wantReceipt(t, bob, "r1", protocol.StatusRead, "alice")

	// m3's read tick comes only when bob reads it, and it is the next
	// receipt alice gets: nothing else was on its way.
	bob.Read(got[2].Seq)
	wantReceipt(t, alice, "m3", protocol.StatusRead, "bob")
}

// A device is served only in its user's home region: elsewhere the
// handshake is refused with 421 naming the home region's URL, and a user
// with no home region is refused with 403. Sends to a user with no home
// region, or one homed in a region the deployment does not know, are
// refused with bad_field, and media to another region with bad_media;
// the pair that is well configured keeps chatting.
func TestRegionsRefuseWhatHasNoPlace(t *testing.T) {
	rs, us, eu := startRegions(t)
	rs.SetHome(t, "dave", "mars")

	for _, c := range []struct {
		user   string
		status int
		code   string
		url    string
	}{
		{"bob", http.StatusMisdirectedRequest, "wrong_region", eu.Gateway.URL},
		{"carol", http.StatusForbidden, "no_home_region", ""},
		{"dave", http.StatusForbidden, "no_home_region", ""},
	} {
		for _, path := range []string{gateway.PathWS, gateway.PathSSE} { // the HTTP fallback alike
			req, _ := http.NewRequest(http.MethodGet, "http://"+us.Gateway.Addr+path, nil)
			req.Header.Set("Authorization", "Bearer "+tk.Token(t, c.user, "phone", time.Hour))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Code, Message, Region, URL string }
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != c.status || body.Code != c.code || body.URL != c.url {
				t.Fatalf("%s in us on %s: %d %+v (%v), want %d %s %q", c.user, path, resp.StatusCode, body, err, c.status, c.code, c.url)
			}
		}
	}
	// The SDK reports the refusal, with the body that says where to go.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, client.Options{URL: us.Gateway.URL, Token: client.WithToken(tk.Token(t, "bob", "phone", time.Hour))})
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusMisdirectedRequest || !strings.Contains(he.Body, eu.Gateway.URL) {
		t.Fatalf("bob's SDK in us: %v", err)
	}

	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	for _, to := range []string{"carol", "dave"} {
		_, err := alice.Send(ctx, to, "x-"+to, tk.Body("anyone?"))
		var se *client.ServerError
		if !errors.As(err, &se) || se.Code != protocol.ErrBadField {
			t.Fatalf("send to %s: %v, want bad_field", to, err)
		}
	}
	_, err = alice.SendMedia(ctx, "bob", "pic", protocol.Media{Key: "u/alice/" + strings.Repeat("a", 32), Mime: "image/png", Size: 1,
		SHA256: strings.Repeat("0", 64)}, tk.Body("look"))
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != protocol.ErrBadMedia {
		t.Fatalf("media to another region: %v, want bad_media", err)
	}
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("still here")); err != nil {
		t.Fatal(err)
	}
	tk.NextMsgIs(t, bob, "alice", "m1", 15*time.Second)
}

// A cut leaf link loses nothing and duplicates nothing. While us is cut
// off from the hub both users keep sending and get "sent" at once (their
// own region stores the messages); once the link is back every message
// arrives once, in the order sent, and the ticks catch up, each message
// ticked once. A raw retry of a stored send, published again under its
// dedup id during the cut, is stored once. The fences at the end prove
// that nothing more is on its way.
func TestRegionsPartitionLosesAndDuplicatesNothing(t *testing.T) {
	_, us, eu := startRegions(t)
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 50

	us.Cut(t)
	sendAll := func(c *client.Client, from, to string) map[string]uint64 {
		sent := map[string]uint64{}
		for i := 0; i < n; i++ {
			id := from + "-" + strconv.Itoa(i)
			s, err := c.Send(ctx, to, id, tk.Body(id))
			if err != nil {
				t.Fatalf("%s while the link is cut: %v", id, err)
			}
			sent[id] = s.Seq
		}
		return sent
	}
	fromAlice := sendAll(alice, "alice", "bob")
	fromBob := sendAll(bob, "bob", "alice")
	// A gateway's retry of alice's first send, as after a lost PubAck.
	ack, err := us.JS.PublishMsg(ctx, &nats.Msg{Subject: contract.OutboxSubject("eu", "bob"), Data: []byte(`"alice-0"`),
		Header: nats.Header{contract.HdrMsgID: {contract.MsgDedupID("alice", "alice-0")}, contract.HdrKind: {contract.KindMsg},
			contract.HdrFrom: {"alice"}, contract.HdrDevice: {"phone"}, contract.HdrID: {"alice-0"},
			contract.HdrOriginRegion: {"us"}, contract.HdrTS: {"1"}}})
	if err != nil || !ack.Duplicate || ack.Sequence != fromAlice["alice-0"] {
		t.Fatalf("retry of alice-0: %+v %v, want a duplicate of %d", ack, err, fromAlice["alice-0"])
	}
	// Everything waits in its sender's region, once.
	for _, r := range []*tk.Region{us, eu} {
		info, err := r.JS.Stream(ctx, contract.Outbox)
		if err != nil {
			t.Fatal(err)
		}
		if msgs := info.CachedInfo().State.Msgs; msgs != n {
			t.Fatalf("%s's OUTBOX holds %d during the cut, want %d", r.Name, msgs, n)
		}
	}
	us.Restore()

	receive := func(c *client.Client, from string) {
		for i := 0; i < n; i++ {
			m := tk.NextMsgIs(t, c, from, from+"-"+strconv.Itoa(i), 30*time.Second)
			c.Ack(m.Seq)
		}
	}
	receive(bob, "alice")
	receive(alice, "bob")
	ticked := func(c *client.Client, sent map[string]uint64, by string) {
		seen := map[string]bool{}
		for len(seen) < n {
			r := tk.RecvReceipt(t, c, 30*time.Second)
			switch {
			case r.Status != protocol.StatusDelivered || r.By != by || sent[r.ID] != r.Seq:
				t.Fatalf("receipt %+v", r)
			case seen[r.ID]:
				t.Fatalf("%s ticked delivered twice", r.ID)
			}
			seen[r.ID] = true
		}
	}
	ticked(alice, fromAlice, "bob")
	ticked(bob, fromBob, "alice")

	// Fences: the next message each way is the fence, and the SDKs
	// dropped no repeat on the way.
	if _, err := alice.Send(ctx, "bob", "fence-a", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, "alice", "fence-b", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	bob.Ack(tk.NextMsgIs(t, bob, "alice", "fence-a", 30*time.Second).Seq)
	alice.Ack(tk.NextMsgIs(t, alice, "bob", "fence-b", 30*time.Second).Seq)
	wantReceipt(t, alice, "fence-a", protocol.StatusDelivered, "bob")
	wantReceipt(t, bob, "fence-b", protocol.StatusDelivered, "alice")
	if d := alice.Stats().DuplicatesDropped + bob.Stats().DuplicatesDropped; d != 0 {
		t.Fatalf("%d repeats reached the SDKs", d)
	}
	// A second stored copy of anything would have come before the
	// fences, and been dropped and counted by the SDK: none was. And
	// OUTBOX keeps nothing once the other region has it.
	for _, r := range []*tk.Region{us, eu} {
		tk.WaitFor(t, 10*time.Second, func() error {
			s, err := r.JS.Stream(ctx, contract.Outbox)
			if err != nil {
				return err
			}
			if msgs := s.CachedInfo().State.Msgs; msgs != 0 {
				return tk.Errorf("%s's OUTBOX still holds %d", r.Name, msgs)
			}
			return nil
		})
	}
}

// Operators see each link: a working one is heard from every second
// (the consumer's heartbeat), traffic or none, and counts as up; a cut one
// counts as down once unheard for gateway.LinkStale, on both sides, while
// what is sent meanwhile waits in the sender's OUTBOX, which is counted;
// once restored it is up again and OUTBOX empties.
func TestRegionsLinksShowInMetrics(t *testing.T) {
	_, us, eu := startRegions(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	up := func(g *tk.Gateway, from string) float64 {
		return metricValue(t, g, `switchboard_region_link_up{from="`+from+`"}`)
	}
	// The other streams that source across the link, each on its own.
	sourcesUp := func(g *tk.Gateway, from string, want float64) error {
		for _, stream := range []string{"GROUPS", "TICKS", "KV_GROUP_DIR"} {
			if v := metricValue(t, g, `switchboard_region_source_up{from="`+from+`",stream="`+stream+`"}`); v != want {
				return tk.Errorf("%s's source from %s: up %v, want %v", stream, from, v, want)
			}
		}
		return nil
	}
	tk.WaitFor(t, 15*time.Second, func() error {
		if up(eu.Gateway, "us") != 1 || up(us.Gateway, "eu") != 1 {
			return tk.Errorf("links not up yet")
		}
		if err := sourcesUp(eu.Gateway, "us", 1); err != nil {
			return err
		}
		return sourcesUp(us.Gateway, "eu", 1)
	})
	// Idle, no message crossing: eu still hears from us, more than 2.5 s
	// into the quiet, through the heartbeats alone.
	idleFrom := time.Now()
	tk.WaitFor(t, 15*time.Second, func() error {
		links, err := eu.Gateway.Server.Links(ctx)
		switch {
		case err != nil:
			return err
		case len(links) != 1 || links[0].From != "us" || !links[0].Up():
			return tk.Errorf("eu's links %+v, want one up from us", links)
		case time.Now().Add(-links[0].Active).Before(idleFrom.Add(2500 * time.Millisecond)):
			return tk.Errorf("nothing heard from us since %s into the quiet", time.Since(idleFrom)-links[0].Active)
		}
		return nil
	})

	us.Cut(t)
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	if _, err := alice.Send(ctx, "bob", "while-cut", tk.Body("later")); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, gateway.LinkStale+10*time.Second, func() error {
		if up(eu.Gateway, "us") != 0 || up(us.Gateway, "eu") != 0 {
			return tk.Errorf("links still up after the cut")
		}
		if err := sourcesUp(eu.Gateway, "us", 0); err != nil {
			return err
		}
		return sourcesUp(us.Gateway, "eu", 0)
	})
	if v := metricValue(t, eu.Gateway, `switchboard_region_link_last_active_seconds{from="us"}`); v < gateway.LinkStale.Seconds() {
		t.Errorf("eu last heard from us %v s ago, with the link down", v)
	}
	if v := metricValue(t, us.Gateway, `switchboard_region_outbox_messages`); v != 1 {
		t.Errorf("us's OUTBOX holds %v during the cut, want 1", v)
	}
	if v := metricValue(t, us.Gateway, `switchboard_region_links_read`); v != 1 {
		t.Errorf("links_read %v", v)
	}

	us.Restore()
	tk.WaitFor(t, 30*time.Second, func() error {
		switch {
		case up(eu.Gateway, "us") != 1 || up(us.Gateway, "eu") != 1:
			return tk.Errorf("links not up again")
		case metricValue(t, us.Gateway, `switchboard_region_outbox_messages`) != 0:
			return tk.Errorf("us's OUTBOX not empty")
		}
		if err := sourcesUp(eu.Gateway, "us", 1); err != nil {
			return err
		}
		return sourcesUp(us.Gateway, "eu", 1)
	})
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	tk.NextMsgIs(t, bob, "alice", "while-cut", 15*time.Second)
}

// sentMsg is a message a test sent, with its "sent" sequence.
type sentMsg struct {
	id  string
	seq uint64
}

// sendUntil sends from c to to, paced under the send rate, until stop is
// closed, and returns what was sent in order; every send must be "sent".
func sendUntil(ctx context.Context, c *client.Client, from, to string, stop <-chan struct{}, count *atomic.Int64) ([]sentMsg, error) {
	var sent []sentMsg
	for i := 0; ; i++ {
		select {
		case <-stop:
			return sent, nil
		case <-time.After(25 * time.Millisecond):
		}
		id := from + "-" + strconv.Itoa(i)
		s, err := c.Send(ctx, to, id, tk.Body(id))
		if err != nil {
			return sent, fmt.Errorf("%s: %w", id, err)
		}
		sent = append(sent, sentMsg{id, s.Seq})
		count.Add(1)
	}
}

// traffic counts the sends answered "sent" on each side of a
// trafficThrough.
type traffic struct {
	t          *testing.T
	alice, bob atomic.Int64
}

// flowing waits until both sides have had n more sends answered "sent"
// than when it was called: the fault comes in the middle of traffic, and
// traffic goes on (or resumes) after it.
func (tr *traffic) flowing(n int64) {
	tr.t.Helper()
	a0, b0 := tr.alice.Load(), tr.bob.Load()
	tk.WaitFor(tr.t, time.Minute, func() error {
		if a, b := tr.alice.Load()-a0, tr.bob.Load()-b0; a < n || b < n {
			return tk.Errorf("%d and %d of %d sends answered on each side", a, b, n)
		}
		return nil
	})
}

// trafficThrough has alice and bob send to each other while disrupt
// runs, then checks that everything arrived once and in order, that
// every message was ticked delivered once under the sequence its sender
// knows, and, by fences, that nothing more is on its way.
func trafficThrough(t *testing.T, alice, bob *client.Client, disrupt func(*traffic)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	type result struct {
		sent []sentMsg
		err  error
	}
	fromAlice, fromBob := make(chan result, 1), make(chan result, 1)
	tr := &traffic{t: t}
	go func() { s, err := sendUntil(ctx, alice, "alice", "bob", stop, &tr.alice); fromAlice <- result{s, err} }()
	go func() { s, err := sendUntil(ctx, bob, "bob", "alice", stop, &tr.bob); fromBob <- result{s, err} }()
	disrupt(tr)
	close(stop)
	ra, rb := <-fromAlice, <-fromBob
	if ra.err != nil || rb.err != nil {
		t.Fatalf("sends during the disruption: alice %v, bob %v", ra.err, rb.err)
	}
	receive := func(c *client.Client, from string, sent []sentMsg) {
		for _, s := range sent {
			c.Ack(tk.NextMsgIs(t, c, from, s.id, 30*time.Second).Seq)
		}
	}
	receive(bob, "alice", ra.sent)
	receive(alice, "bob", rb.sent)
	ticked := func(c *client.Client, sent []sentMsg, by string) {
		want := map[string]uint64{}
		for _, s := range sent {
			want[s.id] = s.seq
		}
		seen := map[string]bool{}
		for len(seen) < len(sent) {
			r := tk.RecvReceipt(t, c, 30*time.Second)
			switch {
			case r.Status != protocol.StatusDelivered || r.By != by || want[r.ID] != r.Seq:
				t.Fatalf("receipt %+v", r)
			case seen[r.ID]:
				t.Fatalf("%s ticked delivered twice", r.ID)
			}
			seen[r.ID] = true
		}
	}
	ticked(alice, ra.sent, "bob")
	ticked(bob, rb.sent, "alice")
	if _, err := alice.Send(ctx, "bob", "fence-a", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, "alice", "fence-b", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	bob.Ack(tk.NextMsgIs(t, bob, "alice", "fence-a", 30*time.Second).Seq)
	alice.Ack(tk.NextMsgIs(t, alice, "bob", "fence-b", 30*time.Second).Seq)
	wantReceipt(t, alice, "fence-a", protocol.StatusDelivered, "bob")
	wantReceipt(t, bob, "fence-b", protocol.StatusDelivered, "alice")
	if d := alice.Stats().DuplicatesDropped + bob.Stats().DuplicatesDropped; d != 0 {
		t.Fatalf("%d repeats reached the SDKs", d)
	}
	t.Logf("%d messages from alice, %d from bob, each delivered and ticked once", len(ra.sent), len(rb.sent))
}

// The hub stops, as its machine would crash, while users in us and eu
// chat, and starts again: sends go on being "sent" in their own region
// meanwhile, and afterwards everything is delivered once, in order, and
// ticked once.
func TestRegionsHubRestartDuringTraffic(t *testing.T) {
	rs, us, eu := startRegions(t)
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	trafficThrough(t, alice, bob, func(tr *traffic) {
		tr.flowing(10)
		rs.StopHub(t)
		tr.flowing(20) // "sent" in their own regions while the hub is down
		rs.StartHub(t)
		tr.flowing(10)
	})
}

// eu's server shuts down cleanly and starts again on its store while
// users in us and eu chat: bob's sends wait for it (his gateway
// publishes them again under the same ids), alice's wait in us, and
// afterwards everything is delivered once, in order, and ticked once.
func TestRegionsRegionRestartDuringTraffic(t *testing.T) {
	_, us, eu := startRegions(t)
	euBackDuringTraffic(t, us, eu, func() { eu.Restart(t) })
}

// euBackDuringTraffic has alice in us and bob in eu chat while bounce
// takes eu's server away and brings it back, once traffic flows and until
// it flows again, then checks what trafficThrough promises.
func euBackDuringTraffic(t *testing.T, us, eu *tk.Region, bounce func()) {
	t.Helper()
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	trafficThrough(t, alice, bob, func(tr *traffic) {
		tr.flowing(10)
		bounce()
		eu.WaitSourcing(t, 30*time.Second)
		tr.flowing(10)
	})
}

// eu's nats-server, a process running deploy/regions/eu.conf, is killed
// (SIGKILL: no shutdown, nothing flushed or written on the way out) while
// users in us and eu chat, and started again on its store. Every send
// answered "sent" before the kill is in the store it recovers (a PubAck
// comes once the message is written), bob's sends in flight are
// published again under the same ids and stored once (the duplicate
// window is rebuilt from the store), alice's wait in us; afterwards
// everything is delivered once, in order, and ticked once.
func TestRegionsRegionCrashDuringTraffic(t *testing.T) {
	_, us, eu := startRegionsWith(t, tk.RegionsOptions{Processes: []string{"eu"}})
	t.Cleanup(func() { regionsState(t, us, eu) })
	euBackDuringTraffic(t, us, eu, func() { eu.Crash(t) })
}

// The partition: us's leaf link is cut for 60 s while alice and
// bob send to each other the whole time, then restored. Everything is
// delivered once, in per-sender order, and ticked once.
func TestRegionsSixtySecondPartition(t *testing.T) {
	_, us, eu := startRegions(t)
	t.Cleanup(func() { regionsState(t, us, eu) })
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	trafficThrough(t, alice, bob, func(*traffic) {
		us.Cut(t)
		time.Sleep(60 * time.Second) // the partition's length is what is tested
		us.Restore()
	})
}

// regionsState logs, for a failed test, what each region's OUTBOX and
// INBOX hold and what INBOX's sources report.
func regionsState(t *testing.T, rs ...*tk.Region) {
	if !t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range rs {
		if m, err := r.Gateway.Metrics(); err == nil {
			for _, l := range strings.Split(m, "\n") {
				if strings.HasPrefix(l, "switchboard_gateway_catchups_total") || strings.HasPrefix(l, "switchboard_gateway_closes_total") && !strings.HasSuffix(l, " 0") ||
					strings.HasPrefix(l, "switchboard_gateway_deliveries_total") || strings.HasPrefix(l, "switchboard_gateway_inbox_skipped") || strings.HasPrefix(l, "switchboard_gateway_sessions") {
					t.Logf("%s gateway: %s", r.Name, l)
				}
			}
		}
		for _, name := range []string{contract.Outbox, contract.Inbox} {
			s, err := r.JS.Stream(ctx, name)
			if err != nil {
				t.Logf("%s %s: %v", r.Name, name, err)
				continue
			}
			info := s.CachedInfo()
			t.Logf("%s %s: %d msgs, seq %d..%d", r.Name, name, info.State.Msgs, info.State.FirstSeq, info.State.LastSeq)
			for _, si := range info.Sources {
				t.Logf("%s %s source %s %v: lag %d active %v error %v", r.Name, name, si.Name, si.External, si.Lag, si.Active, si.Error)
			}
			if name == contract.Outbox {
				for _, c := range []string{"to-us", "to-eu"} {
					if ci, err := s.Consumer(ctx, c); err == nil {
						i := ci.CachedInfo()
						t.Logf("%s OUTBOX consumer %s: delivered %+v ackfloor %+v pending %d ackpending %d push bound %v", r.Name, c, i.Delivered, i.AckFloor, i.NumPending, i.NumAckPending, i.PushBound)
					}
				}
			}
		}
	}
}

// inboxHolds counts what region r's INBOX holds on inbox.<user> of the
// given kind from sender.
func inboxHolds(t *testing.T, r *tk.Region, user, kind, from string) int {
	t.Helper()
	return inboxHas(t, r, user, func(h nats.Header) bool {
		return h.Get(contract.HdrKind) == kind && h.Get(contract.HdrFrom) == from
	})
}

// inboxHas counts the messages stored on user's inbox in region r whose
// headers pass is.
func inboxHas(t *testing.T, r *tk.Region, user string, is func(nats.Header) bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for seq := s.CachedInfo().State.FirstSeq; seq > 0 && seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		if m.Subject == contract.InboxSubject(user) && is(m.Header) {
			n++
		}
	}
	return n
}

// Where data lives, read from the streams: a message from us to a user
// of eu is stored in eu's INBOX and nowhere in us once delivered (OUTBOX
// held it in transit only). A pinned region keeps its users' messages:
// bob's send to alice, homed in us, is refused by eu's pinned gateway and
// stored nowhere, while alice's messages still reach him; his delivered
// tick, which is alice's, goes back to us.
func TestRegionsDataStaysWhereItBelongs(t *testing.T) {
	_, us, eu := startRegions(t)
	cfg := tk.TestConfig()
	cfg.Regions = gateway.RegionsConfig{Region: "eu", URLs: map[string]string{"us": us.Gateway.URL, "eu": eu.Gateway.URL}, Pinned: true}
	pinned := tk.StartGatewayURL(t, eu.Server.ClientURL(), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	bob := tk.Dial(t, pinned.URL, "bob", "phone")

	if _, err := alice.Send(ctx, "bob", "to-bob", tk.Body("hi")); err != nil {
		t.Fatal(err)
	}
	bob.Ack(tk.NextMsgIs(t, bob, "alice", "to-bob", 15*time.Second).Seq)
	wantReceipt(t, alice, "to-bob", protocol.StatusDelivered, "bob")
	_, err := bob.Send(ctx, "alice", "to-alice", tk.Body("from a pinned region"))
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != protocol.ErrBadField || !strings.Contains(se.Message, "keeps its users' messages") {
		t.Fatalf("bob's send out of his pinned region: %v, want bad_field", err)
	}

	tk.WaitFor(t, 10*time.Second, func() error {
		s, err := us.JS.Stream(ctx, contract.Outbox)
		if err != nil {
			return err
		}
		if n := s.CachedInfo().State.Msgs; n != 0 {
			return tk.Errorf("us's OUTBOX still holds %d", n)
		}
		return nil
	})
	for _, c := range []struct {
		r          *tk.Region
		user, from string
		want       int
	}{
		{eu, "bob", "alice", 1},   // alice's message lives in bob's region
		{us, "bob", "alice", 0},   // and not in hers,
		{us, "alice", "alice", 1}, // where only her own copy of what she wrote is
		{us, "alice", "bob", 0},   // bob's refused send is nowhere
		{eu, "alice", "bob", 0},
	} {
		if got := inboxHolds(t, c.r, c.user, contract.KindMsg, c.from); got != c.want {
			t.Errorf("%s's INBOX holds %d messages from %s to %s, want %d", c.r.Name, got, c.from, c.user, c.want)
		}
	}
	if got := inboxHolds(t, us, "alice", contract.KindReceipt, "bob"); got != 1 {
		t.Errorf("us's INBOX holds %d ticks from bob for alice, want 1", got)
	}
}

// "Message info" about a message sent to a user homed in another region.
// alice and carol (us) are "sent" us's OUTBOX sequences for their
// messages to bob (eu), which land in bob's inbox among dave's, sent in
// eu. Asked by such a seq and its recipient, us's receipts function
// passes the question to eu's, which finds where the message landed and
// answers bob's ticks as they move: neither, delivered, read. alice's
// laptop, which saw her messages as her own copies, asks the same way.
// Only the sender is answered: carol asking about alice's message, a seq
// never sent, and a question that does not name the recipient get
// unknown_seq; a device that does not remember the message names the
// recipient itself (StatusTo), and without it is refused by its SDK.
// alice's own read-receipt setting, kept in us, hides bob's read in the
// answer, and her inbox gets no read tick, once she turns hers off. A send still in us's
// OUTBOX (its carrier paused, or eu cut off) is unavailable (ask again);
// once it has crossed it is answered.
func TestRegionsStatusAcrossRegions(t *testing.T) {
	rs := tk.StartRegionsWith(t, tk.RegionsOptions{}, "us", "eu")
	rs.Apply(t, streams.Options{})
	for u, r := range map[string]string{"alice": "us", "carol": "us", "bob": "eu", "dave": "eu"} {
		rs.SetHome(t, u, r)
	}
	rs.Start(t, tk.TestConfig())
	us, eu := rs.Region("us"), rs.Region("eu")
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	laptop := tk.Dial(t, us.Gateway.URL, "alice", "laptop")
	deskPath := filepath.Join(t.TempDir(), "desk.db")
	deskStore, err := localstore.Open(deskPath)
	if err != nil {
		t.Fatal(err)
	}
	desk := tk.Dial(t, us.Gateway.URL, "alice", "desk", func(o *client.Options) { o.Store = deskStore })
	carol := tk.Dial(t, us.Gateway.URL, "carol", "phone")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	dave := tk.Dial(t, eu.Gateway.URL, "dave", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	send := func(c *client.Client, id string) client.Sent {
		t.Helper()
		s, err := c.Send(ctx, "bob", id, tk.Body(id))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	wantStatus := func(c *client.Client, seq uint64, delivered, read bool) {
		t.Helper()
		tk.WaitFor(t, 15*time.Second, func() error {
			st, err := c.StatusOf(ctx, seq)
			if err != nil {
				return err
			}
			if want := (protocol.Ticks{Delivered: delivered, Read: read}); len(st) != 1 || st["bob"] != want {
				return tk.Errorf("status of %d: %+v, want bob %+v", seq, st, want)
			}
			return nil
		})
	}
	wantRefused := func(err error, code protocol.ErrorCode) {
		t.Helper()
		if !isServerError(err, code) {
			t.Fatalf("status: %v, want %s", err, code)
		}
	}

	const n = 5
	var fromAlice []client.Sent
	for i := range n {
		fromAlice = append(fromAlice, send(alice, "a"+strconv.Itoa(i)))
		send(carol, "c"+strconv.Itoa(i))
		send(dave, "d"+strconv.Itoa(i))
		if !contract.IsOutboxSeq(fromAlice[i].Seq) {
			t.Fatalf("alice's a%d sent at %d: not us's OUTBOX", i, fromAlice[i].Seq)
		}
	}
	var got []client.Message
	for range 3 * n {
		got = append(got, tk.RecvMsg(t, bob, 15*time.Second))
	}
	for _, s := range fromAlice {
		wantStatus(alice, s.Seq, false, false)
	}
	for range n {
		tk.RecvMsg(t, laptop, 15*time.Second) // her own copies: the laptop learns to whom
	}
	wantStatus(laptop, fromAlice[2].Seq, false, false)

	// Only the sender, naming the recipient, about a message sent.
	raw := connectRaw(t, us.Gateway, "carol", "tablet")
	raw.write(fmt.Sprintf(`{"type":"status","seq":%d,"to":"bob"}`, fromAlice[0].Seq))
	raw.expectError(protocol.ErrUnknownSeq, "", fromAlice[0].Seq)
	never := fromAlice[n-1].Seq + 1000
	if _, err := alice.StatusTo(ctx, "bob", never); !isServerError(err, protocol.ErrUnknownSeq) {
		t.Fatalf("status of a seq never sent: %v, want unknown_seq", err)
	}
	mine := connectRaw(t, us.Gateway, "alice", "tablet")
	mine.write(fmt.Sprintf(`{"type":"status","seq":%d,"to":"bob"}`, never))
	mine.expectError(protocol.ErrUnknownSeq, "", never)
	mine.write(fmt.Sprintf(`{"type":"status","seq":%d}`, fromAlice[0].Seq))
	mine.expectError(protocol.ErrUnknownSeq, "", fromAlice[0].Seq)

	// bob has them all; then he reads up to alice's last.
	for _, m := range got {
		bob.Ack(m.Seq)
	}
	for i := range n {
		wantReceipt(t, alice, "a"+strconv.Itoa(i), protocol.StatusDelivered, "bob")
	}
	for _, s := range fromAlice {
		wantStatus(alice, s.Seq, true, false)
	}
	var lastFromAlice uint64
	for _, m := range got {
		if m.From == "alice" {
			lastFromAlice = max(lastFromAlice, m.Seq)
		}
	}
	bob.Read(lastFromAlice)
	for i := range n {
		wantReceipt(t, alice, "a"+strconv.Itoa(i), protocol.StatusRead, "bob")
	}
	for _, s := range fromAlice {
		wantStatus(alice, s.Seq, true, true)
	}
	wantStatus(laptop, fromAlice[2].Seq, true, true)
	// A device started again remembers, from its local store, whom a
	// message it saw as its own, now read, went to.
	tk.WaitFor(t, 15*time.Second, func() error {
		ms, err := deskStore.Messages("bob", 0)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.From == "" && m.Seq == fromAlice[0].Seq && m.Status == localstore.Read {
				return nil
			}
		}
		return tk.Errorf("the desk's store has not a0 read: %+v", ms)
	})
	desk.Close()
	if err := deskStore.Close(); err != nil {
		t.Fatal(err)
	}
	if deskStore, err = localstore.Open(deskPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deskStore.Close() })
	desk = tk.Dial(t, us.Gateway.URL, "alice", "desk", func(o *client.Options) { o.Store = deskStore })
	wantStatus(desk, fromAlice[0].Seq, true, true)
	// A device that does not remember the message names its recipient.
	tablet := tk.Dial(t, us.Gateway.URL, "alice", "tablet")
	if _, err := tablet.StatusOf(ctx, fromAlice[1].Seq); !errors.Is(err, client.ErrUnknownMessage) {
		t.Fatalf("tablet's status of a1 without its recipient: %v, want the client's own refusal", err)
	}
	if st, err := tablet.StatusTo(ctx, "bob", fromAlice[1].Seq); err != nil || st["bob"] != (protocol.Ticks{Delivered: true, Read: true}) {
		t.Fatalf("tablet's status of a1 to bob: %+v, %v", st, err)
	}
	// Read receipts need both users: alice's setting is kept in us, so us
	// applies it to eu's answer.
	off := false
	if _, err := alice.Settings(ctx, client.SettingsChange{ReadReceipts: &off}); err != nil {
		t.Fatal(err)
	}
	wantStatus(alice, fromAlice[0].Seq, true, false)
	// Nor does a read tick reach her inbox now: eu makes it knowing only
	// bob's setting and sends it to us's TICKS, where us's receipts
	// function applies hers. Fenced on the servers: once bob's read
	// position is raised in eu the tick is in eu's OUTBOX; once that is
	// empty it is in us's TICKS; once that is empty it was taken.
	late := send(alice, "a-late")
	m := tk.NextMsgIs(t, bob, "alice", "a-late", 15*time.Second)
	bob.Ack(m.Seq)
	wantReceipt(t, alice, "a-late", protocol.StatusDelivered, "bob")
	bob.Read(m.Seq)
	readPast(ctx, t, eu, "bob", "alice", m.Seq)
	outboxEmpty(t, eu)
	streamEmpty(t, contract.TicksStream, us)
	if n := inboxHas(t, us, "alice", func(h nats.Header) bool {
		return h.Get(contract.HdrKind) == contract.KindReceipt && h.Get(contract.HdrStatus) == protocol.StatusRead &&
			h.Get(contract.HdrSeqTo) == strconv.FormatUint(late.Seq, 10)
	}); n != 0 {
		t.Fatalf("alice, with read receipts off, has %d read ticks of a-late stored", n)
	}
	wantStatus(alice, late.Seq, true, false)
	// Turned on again, the next read reaches her, the same way.
	on := true
	if _, err := alice.Settings(ctx, client.SettingsChange{ReadReceipts: &on}); err != nil {
		t.Fatal(err)
	}
	send(alice, "a-late2")
	m = tk.NextMsgIs(t, bob, "alice", "a-late2", 15*time.Second)
	bob.Ack(m.Seq)
	wantReceipt(t, alice, "a-late2", protocol.StatusDelivered, "bob")
	bob.Read(m.Seq)
	wantReceipt(t, alice, "a-late", protocol.StatusRead, "bob")
	wantReceipt(t, alice, "a-late2", protocol.StatusRead, "bob")

	// A send not yet taken from us's OUTBOX (its carrier to eu paused,
	// the link up): eu does not know it yet. Ask again later.
	outboxEmpty(t, us, eu)
	if _, err := us.JS.PauseConsumer(ctx, contract.Outbox, contract.CrossRegionConsumer("eu"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	held := send(alice, "a-held")
	_, err = alice.StatusOf(ctx, held.Seq)
	wantRefused(err, protocol.ErrUnavailable)
	if !strings.Contains(err.Error(), "has not reached") {
		t.Fatalf("status of a send still in OUTBOX: %v, want it said to be on its way", err)
	}
	if _, err := us.JS.ResumeConsumer(ctx, contract.Outbox, contract.CrossRegionConsumer("eu")); err != nil {
		t.Fatal(err)
	}
	tk.NextMsgIs(t, bob, "alice", "a-held", 30*time.Second)
	wantStatus(alice, held.Seq, false, false)

	// eu cut off: neither its receipts function nor the send can be
	// reached. Ask again later.
	outboxEmpty(t, us, eu)
	eu.Cut(t)
	cut := send(alice, "a-cut")
	_, err = alice.StatusOf(ctx, cut.Seq)
	wantRefused(err, protocol.ErrUnavailable)
	eu.Restore()
	tk.NextMsgIs(t, bob, "alice", "a-cut", 30*time.Second)
	wantStatus(alice, cut.Seq, false, false)
}

// isServerError reports whether err is the gateway's error frame with code.
func isServerError(err error, code protocol.ErrorCode) bool {
	var se *client.ServerError
	return errors.As(err, &se) && se.Code == code
}

// readPast waits until reader's read position in their chat with sender
// is at least seq in region r (raised once the read tick is stored).
func readPast(ctx context.Context, t *testing.T, r *tk.Region, reader, sender string, seq uint64) {
	t.Helper()
	reads, err := r.JS.KeyValue(ctx, contract.ReadsKV)
	if err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, 15*time.Second, func() error {
		e, err := reads.Get(ctx, contract.ReadKey(reader, sender))
		if err != nil {
			return err
		}
		if at, _ := strconv.ParseUint(string(e.Value()), 10, 64); at < seq {
			return tk.Errorf("%s's read position in %s's chat %d, want %d", reader, sender, at, seq)
		}
		return nil
	})
}

// The gateway tells an outbox seq from an inbox one by the number the
// protocol gives the clients.
func TestOutboxSeqsStartWhereTheProtocolSays(t *testing.T) {
	if contract.OutboxFirstSeq != protocol.OutboxSeqFloor {
		t.Fatalf("OUTBOX starts at %d, the protocol says %d", contract.OutboxFirstSeq, protocol.OutboxSeqFloor)
	}
}
