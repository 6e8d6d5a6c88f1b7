package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// A send a gateway could not publish while its NATS connection was down,
// abandoned when its device went away and resent through another
// gateway, must not be stored when the first gateway's connection comes
// back: past the duplicate window (2 min; 1 s here) it would be stored a
// second time, behind the device's later sends.
func TestSendHeldWhileNATSWasDownIsNotStoredLater(t *testing.T) {
	n := tk.StartNATS(t)
	addr := strings.TrimPrefix(n.Server.ClientURL(), "nats://")
	proxy := tk.StartProxy(t, addr)
	g1 := tk.StartGatewayURL(t, "nats://"+proxy.Addr, tk.TestConfig())
	g2 := tk.StartGateway(t, n, tk.TestConfig())
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Duplicates = 1e9 // 1 s
	if _, err := n.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	a1 := connectRaw(t, g1, "alice", "phone")
	restore := proxy.CutNATS(g1.Conn)
	a1.write(string(protocol.AppendSend(nil, "A", "bob", tk.Body("first"))))
	// Frames are handled in order, and a 1:1 send is published as it is
	// handled: the answer to this ack of nothing says A's publish was
	// tried.
	a1.write(`{"type":"ack","seq":999}`)
	for f := a1.next(); f.Type != protocol.TypeError || f.Code != protocol.ErrUnknownSeq; f = a1.next() {
	}
	_ = a1.ws.Close() // the device goes away unanswered; the session abandons A
	tk.WaitFor(t, wait, func() error {
		if n := g1.Server.Sessions(); n != 0 {
			return fmt.Errorf("%d sessions on gateway 1", n)
		}
		return nil
	})

	a2 := connectRaw(t, g2, "alice", "phone") // elsewhere, and resends
	a2.send("bob", "A")
	a2.send("bob", "B")
	// Past the duplicate window for both: a probe stored after them is
	// stored again once its own id is forgotten.
	probe := &nats.Msg{Subject: contract.InboxSubject("zed"), Header: nats.Header{jetstream.MsgIDHeader: {"probe"}}}
	if _, err := n.JS.PublishMsg(ctx, probe); err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, wait, func() error {
		ack, err := n.JS.PublishMsg(ctx, probe)
		if err == nil && ack.Duplicate {
			err = errors.New("probe still a duplicate")
		}
		return err
	})

	restore()
	tk.WaitFor(t, wait, func() error {
		if g1.Conn.Status() != nats.CONNECTED {
			return errors.New("gateway 1 not connected to NATS again")
		}
		return nil
	})
	if err := g1.Conn.Flush(); err != nil { // what it held is in INBOX's queue now
		t.Fatal(err)
	}
	fence := &nats.Msg{Subject: contract.InboxSubject("bob"), Header: nats.Header{contract.HdrID: {"fence"}}}
	if _, err := n.JS.PublishMsg(ctx, fence); err != nil {
		t.Fatal(err)
	}
	cons, err := n.JS.OrderedConsumer(ctx, contract.Inbox, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.InboxSubject("bob")}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for len(ids) == 0 || ids[len(ids)-1] != "fence" {
		m, err := cons.Next(jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatalf("bob's inbox after %v: %v", ids, err)
		}
		ids = append(ids, m.Headers().Get(contract.HdrID))
	}
	if got := strings.Join(ids, " "); got != "A B fence" {
		t.Fatalf("bob's inbox holds %s, want A B fence", got)
	}
}
