package gateway_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// These tests hold one session's sends to their promise: stored in the
// order the frames arrived, whatever the store or a worker function does
// meanwhile, and answered store_failed only when the gateway gives up.

// metricValue reads one sample from the gateway's metrics (-1: absent).
func metricValue(t *testing.T, g *tk.Gateway, sample string) float64 {
	t.Helper()
	b, err := g.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// refuseNewMessages makes INBOX refuse every message past those it holds
// (discard new at its current count), as a full or failing store does:
// publishes get a 503 PubAck. The returned function lets it store again.
func refuseNewMessages(t *testing.T, n *tk.NATS) (restore func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	was := info.Config
	full := was
	full.Discard, full.MaxMsgs = jetstream.DiscardNew, int64(info.State.Msgs)
	if _, err := n.JS.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if _, err := n.JS.UpdateStream(ctx, was); err != nil {
			t.Fatal(err)
		}
	}
}

// A send the store refuses is stored again by the session, and the sends
// after it wait for it: all three are answered "sent", in the order sent,
// at rising sequences, and none store_failed while the gateway still
// tries.
func TestSendsKeepTheirOrderThroughAStoreFailure(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	r := connectRaw(t, g, "alice", "phone")
	first := r.send("bob", "before")

	restore := refuseNewMessages(t, n)
	ids := []string{"m1", "m2", "m3"}
	for _, id := range ids {
		r.write(string(protocol.AppendSend(nil, id, "bob", tk.Body(id))))
	}
	answers := make(chan *protocol.Frame, len(ids))
	go func() {
		defer close(answers)
		for range ids {
			_ = r.ws.SetReadDeadline(time.Now().Add(2 * wait))
			_, data, err := r.ws.ReadMessage()
			if err != nil {
				return
			}
			f, err := protocol.DecodeServer(data)
			if err != nil {
				return
			}
			answers <- f
		}
	}()
	// The store refused m1 at least once (or m1 was answered) before it
	// may store again.
	tk.WaitFor(t, wait, func() error {
		if v := metricValue(t, g, `switchboard_gateway_republished_total{reason="refused"}`); v < 1 && len(answers) == 0 {
			return tk.Errorf("m1 published again %v times after a refusal, want at least once", v)
		}
		return nil
	})
	restore()

	prev := first.Seq
	for _, id := range ids {
		f, ok := <-answers
		if !ok {
			t.Fatalf("no answer for %s", id)
		}
		if f.Type != protocol.TypeSent || f.ID != id {
			t.Fatalf("got %+v, want sent for %s", *f, id)
		}
		if f.Seq <= prev {
			t.Fatalf("%s stored at %d, not after %d: out of the order sent", id, f.Seq, prev)
		}
		prev = f.Seq
	}
}

// A media send waits for the media function to let its recipient download
// the object, and the plain send after it waits in line behind it; the
// device's other frames do not. With the function holding the grant
// request unanswered, alice's typing reaches bob and her ack reaches
// carol as a delivered receipt; once the grant is answered both sends are
// stored, media first.
func TestSlowMediaGrantHoldsOnlyTheSendsBehindIt(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.FunctionTimeout = time.Minute // the grant is never given up while the test runs
	g := tk.StartGateway(t, n, cfg)
	grants := make(chan *nats.Msg, 1)
	sub, err := n.Conn.Subscribe(contract.MediaGrantSubject, func(m *nats.Msg) { grants <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := n.Conn.Flush(); err != nil {
		t.Fatal(err)
	}

	alice := connectRaw(t, g, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	carol := tk.Dial(t, g.URL, "carol", "phone")
	send(t, carol, "alice", "c1", "hi alice")
	msg := alice.next()
	if msg.Type != protocol.TypeMsg || msg.ID != "c1" {
		t.Fatalf("alice got %+v, want c1", *msg)
	}

	ref := protocol.Media{Key: "u/alice/0123456789abcdef0123456789abcdef", Mime: "image/png", Size: 10,
		SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
	alice.writeJSON(protocol.Frame{Type: protocol.TypeSend, ID: "p1", To: "bob", Body: tk.Body("a photo"), Media: &ref})
	alice.write(string(protocol.AppendSend(nil, "m2", "bob", tk.Body("after the photo"))))
	alice.write(string(protocol.AppendTypingTo(nil, "bob")))
	alice.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, msg.Seq)))

	var grant *nats.Msg
	select {
	case grant = <-grants:
	case <-time.After(wait):
		t.Fatal("no grant request")
	}
	// Fences: frames alice sent after the media send were handled while
	// its grant is unanswered.
	select {
	case ty := <-bob.TypingEvents():
		if ty.From != "alice" {
			t.Fatalf("bob got typing %+v", ty)
		}
	case <-time.After(wait):
		t.Fatal("alice's typing, sent after her media send, did not reach bob while the grant was pending")
	}
	if r := tk.RecvReceipt(t, carol, wait); r.ID != "c1" || r.Status != protocol.StatusDelivered {
		t.Fatalf("carol got %+v, want c1 delivered", r)
	}

	if err := grant.Respond([]byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	p1 := alice.next()
	m2 := alice.next()
	if p1.Type != protocol.TypeSent || p1.ID != "p1" || m2.Type != protocol.TypeSent || m2.ID != "m2" {
		t.Fatalf("alice got %+v then %+v, want sent for p1 then m2", *p1, *m2)
	}
	if p1.Seq >= m2.Seq {
		t.Fatalf("p1 stored at %d, m2 at %d: out of the order sent", p1.Seq, m2.Seq)
	}
	for _, want := range []string{"p1", "m2"} {
		if m := tk.RecvMsg(t, bob, wait); m.ID != want {
			t.Fatalf("bob got %s, want %s", m.ID, want)
		}
	}
}

// A send refused on arrival for its rate holds the sends after it: m3,
// written before alice could see m2's refusal and arriving once the rate
// allows it, is refused too rather than stored ahead of m2's resend.
// Resent in order, both are stored in order.
func TestSendsBehindARateLimitedSendWaitForItsResend(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.SendRate, cfg.SendBurst = 2, 1 // a send each 500 ms
	g := tk.StartGateway(t, n, cfg)
	r := connectRaw(t, g, "alice", "phone")
	for _, id := range []string{"m1", "m2"} {
		r.write(string(protocol.AppendSend(nil, id, "bob", tk.Body(id))))
	}
	// m2's refusal is answered on arrival, m1's "sent" once it is stored.
	var first, limited *protocol.Frame
	for first == nil || limited == nil {
		f := r.next()
		switch {
		case f.Type == protocol.TypeSent && f.ID == "m1" && first == nil:
			first = f
		case f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited && f.ID == "m2" && limited == nil:
			limited = f
		default:
			t.Fatalf("got %+v, want sent for m1 and rate_limited for m2", *f)
		}
	}
	// m3 comes once the limit would let it through (it was on the wire
	// behind m2): the hold refuses it.
	retry := time.Duration(limited.RetryMS) * time.Millisecond
	time.Sleep(retry) // the rate under test
	r.write(string(protocol.AppendSend(nil, "m3", "bob", tk.Body("m3"))))
	r.expectError(protocol.ErrStoreFailed, "m3", 0)

	// Resend as the SDKs do: after retry_ms, the oldest first.
	prev := first.Seq
	for _, id := range []string{"m2", "m3"} {
		for {
			time.Sleep(retry) // the wait the gateway asked for, part of the behaviour under test
			r.write(string(protocol.AppendSend(nil, id, "bob", tk.Body(id))))
			f := r.next()
			if f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited && f.ID == id {
				retry = time.Duration(f.RetryMS) * time.Millisecond
				continue
			}
			if f.Type != protocol.TypeSent || f.ID != id || f.Seq <= prev {
				t.Fatalf("got %+v for %s, want sent after seq %d", *f, id, prev)
			}
			prev = f.Seq
			break
		}
	}
}
