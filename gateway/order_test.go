package gateway_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// These tests hold one session's sends to their promise: stored in the
// order the frames arrived, whatever the store does meanwhile, and
// answered store_failed only when the gateway gives up.

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
