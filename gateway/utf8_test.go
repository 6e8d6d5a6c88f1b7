package gateway_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// A browser fails a connection on a text frame that is not valid UTF-8
// (RFC 6455 §8.1), so one such frame must never reach a recipient: if it
// did, the message would never be acked and would come first again on
// every reconnect. The raw clients here check every frame they read.

// A text frame that is not valid UTF-8 fails its connection with 1007
// before anything in it is acted on: nothing is stored, and the would-be
// recipient's next message is one sent afterwards.
func TestInvalidUTF8FrameClosesWith1007AndStoresNothing(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	victim := connectRaw(t, g, "victim", "browser")
	alice := tk.Dial(t, g.URL, "alice", "phone")

	for i, frame := range []string{
		"{\"type\":\"send\",\"id\":\"bad\",\"to\":\"victim\",\"body\":\"\xff\"}",
		"{\"type\":\"send\",\"id\":\"bad2\",\"to\":\"victim\",\"body\":\"ok\",\"x\":\"\xc3\x28\"}",
	} {
		mallory := connectRaw(t, g, "mallory", "d"+strconv.Itoa(i))
		mallory.write(frame)
		if frames := mallory.expectClose(protocol.CloseInvalidData, "*"); len(frames) != 0 {
			t.Fatalf("frame %d: answered %+v before the close, want nothing", i, *frames[0])
		}
	}
	// The fence: sent after both closes, it must be the first message the
	// victim gets.
	s := send(t, alice, "victim", "fence", "after")
	if f := victim.next(); f.Type != protocol.TypeMsg || f.ID != "fence" || f.Seq != s.Seq {
		t.Fatalf("victim got %+v, want the fence message (seq %d)", *f, s.Seq)
	}
}

// storeByHand publishes a chat message from alice straight into user's
// inbox with the headers a gateway writes, as an older gateway or an
// operator might. media, when set, is the Sb-Media header.
func storeByHand(t *testing.T, n *tk.NATS, user, id string, body []byte, media string) uint64 {
	t.Helper()
	h := nats.Header{
		contract.HdrMsgID:  {contract.MsgDedupID("alice", id)},
		contract.HdrKind:   {contract.KindMsg},
		contract.HdrFrom:   {"alice"},
		contract.HdrDevice: {"phone"},
		contract.HdrID:     {id},
		contract.HdrTS:     {strconv.FormatInt(time.Now().UnixMilli(), 10)},
	}
	if media != "" {
		h.Set(contract.HdrMedia, media)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ack, err := n.JS.PublishMsg(ctx, &nats.Msg{Subject: contract.InboxSubject(user), Header: h, Data: body})
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// expectMsg reads the next frame, which must be the msg id at seq.
func (r *raw) expectMsg(id string, seq uint64) {
	r.t.Helper()
	if f := r.next(); f.Type != protocol.TypeMsg || f.ID != id || f.Seq != seq {
		r.t.Fatalf("got %+v, want msg %s at seq %d", *f, id, seq)
	}
}

// A message already stored with a body or header that is not valid UTF-8
// blocks nothing: the session skips it, live or read from the stream, and
// moves the device's position past it, so it never comes back first
// after a reconnect. It stays in the stream and is counted.
func TestStoredInvalidUTF8IsSkippedAndBlocksNothing(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	victim := connectRaw(t, g, "victim", "browser")

	// Live: an invalid body, then a valid message; an invalid header, then
	// another. good-2 is not acked.
	storeByHand(t, n, "victim", "bad-body", []byte("\"\xff\""), "")
	good1 := storeByHand(t, n, "victim", "good-1", tk.Body("one"), "")
	victim.expectMsg("good-1", good1)
	victim.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, good1)))
	storeByHand(t, n, "victim", "bad-media", tk.Body("caption"), "{\"key\":\"\xff\"}")
	good2 := storeByHand(t, n, "victim", "good-2", tk.Body("two"), "")
	victim.expectMsg("good-2", good2)

	// Read from the stream: the victim reconnects after more was stored.
	reconnect := func() {
		t.Helper()
		_ = victim.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(wait))
		victim.expectClose(websocket.CloseNormalClosure, "*")
		tk.WaitFor(t, wait, func() error {
			if s := g.Server.Sessions(); s != 0 {
				return tk.Errorf("%d sessions", s)
			}
			return nil
		})
		victim = connectRaw(t, g, "victim", "browser")
	}
	reconnect()
	storeByHand(t, n, "victim", "bad-away", []byte("\"\xc3\x28\""), "")
	good3 := storeByHand(t, n, "victim", "good-3", tk.Body("three"), "")
	// good-2 comes again (it was not acked); nothing invalid before it.
	victim.expectMsg("good-2", good2)
	victim.expectMsg("good-3", good3)
	for _, seq := range []uint64{good2, good3} {
		victim.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, seq)))
	}

	// Once more, everything acked: the fence is the first thing to come.
	reconnect()
	good4 := storeByHand(t, n, "victim", "good-4", tk.Body("four"), "")
	victim.expectMsg("good-4", good4)

	// bad-body and bad-media live, bad-away on the read after the first
	// reconnect: each skipped once, and all still in the stream.
	body, err := g.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`switchboard_gateway_inbox_skipped_total\{reason="invalid_utf8"\} (\d+)`).FindStringSubmatch(body); m == nil || m[1] != "3" {
		t.Fatalf("skipped invalid_utf8: %q, want 3", m)
	}
	if stored, err := inboxCount(n, "victim"); err != nil || stored != 7 {
		t.Fatalf("victim's inbox holds %d (%v), want all 7", stored, err)
	}
}

// A read naming a message the session skipped (stored by hand with a
// body that is not JSON, here) is refused unknown_seq and ticks nothing:
// the device never had it. A client cannot make the server tell a sender
// their message was read when it was never delivered.
func TestReadOfASkippedMessageTicksNothing(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := connectRaw(t, g, "alice", "phone")
	bob := connectRaw(t, g, "bob", "phone")
	bad := storeByHand(t, n, "bob", "plain", []byte("not json"), "")
	good := storeByHand(t, n, "bob", "good", tk.Body("hi"), "")
	bob.expectMsg("good", good)
	bob.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, good)))
	if r := skipTo(alice, protocol.TypeReceipt); r.Status != protocol.StatusDelivered || r.ToSeq != good {
		t.Fatalf("alice got %s up to %d, want delivered up to %d", r.Status, r.ToSeq, good)
	}

	bob.write(string(protocol.AppendSeqFrame(nil, protocol.TypeRead, bad)))
	bob.expectError(protocol.ErrUnknownSeq, "", bad)
	// Fence: the read of good is the first read alice hears of.
	bob.write(string(protocol.AppendSeqFrame(nil, protocol.TypeRead, good)))
	if r := skipTo(alice, protocol.TypeReceipt); r.Status != protocol.StatusRead || r.ToSeq != good {
		t.Fatalf("alice got %s up to %d first, want read up to %d", r.Status, r.ToSeq, good)
	}
}
