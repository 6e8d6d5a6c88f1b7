package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

const wait = 10 * time.Second

// cursor reads a device's saved position: everything at or below it is
// settled. 0 when none is saved.
func cursor(t *testing.T, n *tk.NATS, user, device string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := n.JS.KeyValue(ctx, contract.CursorsKV)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, contract.CursorKey(user, device))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	f, _, _ := strings.Cut(string(e.Value()), " ")
	floor, err := strconv.ParseUint(f, 10, 64)
	if err != nil {
		t.Fatalf("cursor %q: %v", e.Value(), err)
	}
	return floor
}

func send(t *testing.T, c *client.Client, to, id, body string) client.Sent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := c.Send(ctx, to, id, tk.Body(body))
	if err != nil {
		t.Fatalf("send %s: %v", id, err)
	}
	return s
}

func TestOneToOneBothWaysWithTicks(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")

	sent := send(t, alice, "bob", "m1", "hello bob")
	if sent.Seq == 0 || sent.Dup {
		t.Fatalf("sent = %+v, want a fresh sequence", sent)
	}
	m := tk.RecvMsg(t, bob, wait)
	if m.ID != "m1" || m.From != "alice" || m.Device != "phone" || string(m.Body) != `"hello bob"` || m.Seq != sent.Seq {
		t.Fatalf("bob got %+v", m)
	}
	bob.Ack(m.Seq)
	r := tk.RecvReceipt(t, alice, wait)
	if r.ID != "m1" || r.Status != protocol.StatusDelivered || r.By != "bob" || r.Device != "phone" {
		t.Fatalf("first receipt %+v, want delivered by bob", r)
	}
	bob.Read(m.Seq)
	r = tk.RecvReceipt(t, alice, wait)
	if r.ID != "m1" || r.Status != protocol.StatusRead || r.By != "bob" {
		t.Fatalf("second receipt %+v, want read by bob", r)
	}

	// And back.
	send(t, bob, "alice", "r1", "hi alice")
	m = tk.RecvMsg(t, alice, wait)
	if m.ID != "r1" || m.From != "bob" {
		t.Fatalf("alice got %+v", m)
	}
	alice.Ack(m.Seq)
	if r := tk.RecvReceipt(t, bob, wait); r.Status != protocol.StatusDelivered || r.ID != "r1" {
		t.Fatalf("bob's receipt %+v", r)
	}
}

func TestOfflineRecipientGetsAllInOrderOnce(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	// bob connects once so his device exists, then goes away.
	bob := tk.Dial(t, g.URL, "bob", "phone")
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	const count = 100
	for i := range count {
		send(t, alice, "bob", fmt.Sprintf("m%03d", i), fmt.Sprintf("msg %d", i))
	}
	bob = tk.Dial(t, g.URL, "bob", "phone")
	for i := range count {
		m := tk.RecvMsg(t, bob, wait)
		if want := fmt.Sprintf("m%03d", i); m.ID != want {
			t.Fatalf("message %d is %s, want %s", i, m.ID, want)
		}
		bob.Ack(m.Seq)
	}
	// Nothing more, not even a repeat the SDK would drop: the fence is
	// stored after the hundred and comes next.
	send(t, alice, "bob", "fence", "fence")
	tk.NextMsgIs(t, bob, "alice", "fence", wait)
	if st := bob.Stats(); st.DuplicatesDropped != 0 {
		t.Fatalf("bob's SDK dropped %d repeats: a message came twice", st.DuplicatesDropped)
	}
}

func TestNeverConnectedUserGetsMessagesOnFirstConnect(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	send(t, alice, "carol", "a", "one")
	send(t, alice, "carol", "b", "two")
	carol := tk.Dial(t, g.URL, "carol", "laptop")
	if m := tk.RecvMsg(t, carol, wait); m.ID != "a" {
		t.Fatalf("first message %s, want a", m.ID)
	}
	if m := tk.RecvMsg(t, carol, wait); m.ID != "b" {
		t.Fatalf("second message %s, want b", m.ID)
	}
}

func TestTwoDevicesEachGetEveryMessageAndAckIndependently(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	phone := tk.Dial(t, g.URL, "bob", "phone")
	laptop := tk.Dial(t, g.URL, "bob", "laptop")

	send(t, alice, "bob", "m1", "to both")
	send(t, alice, "bob", "m2", "again")
	p1, l1 := tk.RecvMsg(t, phone, wait), tk.RecvMsg(t, laptop, wait)
	if p1.ID != "m1" || l1.ID != "m1" {
		t.Fatalf("phone %s laptop %s, want m1 on both", p1.ID, l1.ID)
	}
	// Only the phone acks m1: the delivered receipt names the phone.
	phone.Ack(p1.Seq)
	r := tk.RecvReceipt(t, alice, wait)
	if r.Device != "phone" || r.ID != "m1" {
		t.Fatalf("receipt %+v, want m1 delivered to phone", r)
	}
	// The laptop drops without acking: m1 and m2 come again to it, not to
	// the phone.
	p2 := tk.RecvMsg(t, phone, wait)
	phone.Ack(p2.Seq)
	if err := laptop.Close(); err != nil {
		t.Fatal(err)
	}
	laptop = tk.Dial(t, g.URL, "bob", "laptop")
	if m := tk.RecvMsg(t, laptop, wait); m.ID != "m1" {
		t.Fatalf("laptop after reconnect got %s, want m1", m.ID)
	}
	if m := tk.RecvMsg(t, laptop, wait); m.ID != "m2" {
		t.Fatalf("laptop after reconnect got %s, want m2", m.ID)
	}
	// The laptop's read is over, so anything it sent the phone's way came
	// before the fence; the phone's SDK would drop m1 and m2 as repeats,
	// so its count is what shows them.
	send(t, alice, "bob", "fence", "fence")
	tk.NextMsgIs(t, phone, "alice", "fence", wait)
	if st := phone.Stats(); st.DuplicatesDropped != 0 {
		t.Fatalf("the phone's SDK dropped %d repeats: m1 or m2 came to it again", st.DuplicatesDropped)
	}
}

func TestNewDeviceGetsMessagesFromWhenItJoined(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	phone := tk.Dial(t, g.URL, "bob", "phone")
	send(t, alice, "bob", "old", "before the tablet")
	tk.RecvMsg(t, phone, wait)
	tablet := tk.Dial(t, g.URL, "bob", "tablet")
	send(t, alice, "bob", "new", "after the tablet")
	if m := tk.RecvMsg(t, tablet, wait); m.ID != "new" {
		t.Fatalf("tablet got %s, want only messages from after it joined", m.ID)
	}
}

func TestRetryAfterDropIsStoredAndDeliveredOnce(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	first := send(t, alice, "bob", "same-id", "once")
	// The connection drops; the app (or SDK) retries the same id on a new
	// connection. The store keeps one copy.
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	alice = tk.Dial(t, g.URL, "alice", "phone")
	again := send(t, alice, "bob", "same-id", "once")
	if !again.Dup || again.Seq != first.Seq {
		t.Fatalf("retry sent = %+v, want dup of seq %d", again, first.Seq)
	}
	m := tk.RecvMsg(t, bob, wait)
	bob.Ack(m.Seq)
	// A second copy would come before the fence, and be dropped by the
	// SDK as a repeat: its count shows it.
	send(t, alice, "bob", "fence", "fence")
	tk.NextMsgIs(t, bob, "alice", "fence", wait)
	if st := bob.Stats(); st.DuplicatesDropped != 0 {
		t.Fatalf("bob's SDK dropped %d repeats: the retry was delivered again", st.DuplicatesDropped)
	}
	inbox, err := n.JS.Stream(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	// The message, its delivered receipt and the fence (not acked, so
	// with no receipt), nothing more.
	tk.WaitFor(t, wait, func() error {
		info, err := inbox.Info(context.Background())
		if err != nil || info.State.Msgs != 3 {
			return tk.Errorf("stream holds %v messages (err %v), want 3", info, err)
		}
		return nil
	})
}

func TestDropBeforeAckRedeliversAndSDKDropsDuplicate(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	proxy := tk.StartProxy(t, g.Addr)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, "ws://"+proxy.Addr+"/v1/ws", "bob", "phone")

	send(t, alice, "bob", "m1", "one")
	m := tk.RecvMsg(t, bob, wait)
	// The network drops before bob acks. The SDK reconnects, the message
	// is redelivered, and the SDK recognises it.
	proxy.DropAll()
	tk.WaitFor(t, wait, func() error {
		if st := bob.Stats(); st.DuplicatesDropped != 1 {
			return tk.Errorf("stats %+v, want one duplicate dropped", st)
		}
		return nil
	})
	// The app acks with the seq it holds; it works on the new session.
	bob.Ack(m.Seq)
	if r := tk.RecvReceipt(t, alice, wait); r.ID != "m1" || r.Status != protocol.StatusDelivered {
		t.Fatalf("receipt %+v", r)
	}
	send(t, alice, "bob", "m2", "two")
	if m := tk.RecvMsg(t, bob, wait); m.ID != "m2" {
		t.Fatalf("next message %s, want m2 (m1 must not reach the app twice)", m.ID)
	}
}

// An offline sender gets its ticks when it comes back: they wait in its
// inbox as receipts, each a position covering the message.
func TestOfflineSenderGetsReceiptsOnReconnect(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	sent := send(t, alice, "bob", "m1", "are you there?")
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	m := tk.RecvMsg(t, bob, wait)
	bob.Ack(m.Seq)
	bob.Read(m.Seq)
	// Both receipts are stored in alice's inbox while she is away.
	inbox, err := n.JS.Stream(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	tk.WaitFor(t, wait, func() error {
		info, err := inbox.Info(context.Background(), jetstream.WithSubjectFilter("inbox.alice"))
		if err != nil || info.State.Subjects["inbox.alice"] != 2 {
			return tk.Errorf("alice's inbox: %+v, %v; want 2 receipts", info, err)
		}
		return nil
	})
	// As a device that comes back knows the seq of what it sent (an app
	// keeps it with the message), the receipt frames are checked as such.
	back := connectRaw(t, g, "alice", "phone")
	got := map[string]bool{}
	for range 2 {
		f := nextOfType(back, protocol.TypeReceipt)
		covers := f.ToSeq >= sent.Seq && (f.Status == protocol.StatusRead || f.FromSeq <= sent.Seq)
		if f.By != "bob" || !covers {
			t.Fatalf("receipt %+v does not cover m1 at seq %d", *f, sent.Seq)
		}
		got[f.Status] = true
	}
	if !got[protocol.StatusDelivered] || !got[protocol.StatusRead] {
		t.Fatalf("receipts %v, want delivered and read", got)
	}
}

// Two connections of one device at the same instant: exactly one survives,
// so two sockets never share the device's queue.
func TestSimultaneousSessionsOfOneDeviceLeaveOne(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	tok := tk.Token(t, "bob", "phone", time.Hour)
	for round := range 5 {
		var conns [2]*websocket.Conn
		var wg sync.WaitGroup
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
				ws, _, err := d.Dial(g.URL, http.Header{"Authorization": {"Bearer " + tok}})
				if err != nil {
					t.Error(err)
					return
				}
				conns[i] = ws
				go func() { // read until closed, so close frames are seen
					for {
						if _, _, err := ws.ReadMessage(); err != nil {
							return
						}
					}
				}()
			}()
		}
		wg.Wait()
		tk.WaitFor(t, wait, func() error {
			if s := g.Server.Sessions(); s != 1 {
				return tk.Errorf("round %d: %d sessions of bob/phone, want 1", round, s)
			}
			return nil
		})
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		tk.WaitFor(t, wait, func() error {
			if s := g.Server.Sessions(); s != 0 {
				return tk.Errorf("%d sessions after closing", s)
			}
			return nil
		})
	}
}

// A second stored copy of a message (a sender's resend after the duplicate
// window) reaches the app once, and the SDK acks the copy so the device's
// queue does not stall on it.
func TestSecondStoredCopyIsAckedNotShown(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	first := send(t, alice, "bob", "m1", "once")
	m := tk.RecvMsg(t, bob, wait)
	bob.Ack(m.Seq)
	// The same message stored again under a new dedup id, as a resend past
	// the 2-minute window would be.
	copyMsg := nats.NewMsg("inbox.bob")
	copyMsg.Header.Set("Nats-Msg-Id", "m:alice:m1:again")
	for k, v := range map[string]string{"Sb-Kind": "msg", "Sb-From": "alice", "Sb-Device": "phone", "Sb-Id": "m1", "Sb-Ts": "1"} {
		copyMsg.Header.Set(k, v)
	}
	copyMsg.Data = []byte(`"once"`)
	ack, err := n.JS.PublishMsg(context.Background(), copyMsg)
	if err != nil || ack.Sequence == first.Seq {
		t.Fatalf("second copy: %v %+v", err, ack)
	}
	send(t, alice, "bob", "m2", "next")
	if m := tk.RecvMsg(t, bob, wait); m.ID != "m2" {
		t.Fatalf("bob got %s, want m2 (the copy of m1 must not reach the app)", m.ID)
	}
	tk.WaitFor(t, wait, func() error {
		if floor := cursor(t, n, "bob", "phone"); floor < ack.Sequence {
			return tk.Errorf("cursor %d, want %d: the copy was never acked", floor, ack.Sequence)
		}
		return nil
	})
}

// An operator deletes and recreates INBOX: sequences restart at 1, so the
// position saved for a device in the old stream must not make it skip the
// new stream's messages.
func TestRecreatedInboxDoesNotSkipMessages(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	for i := range 5 {
		send(t, alice, "bob", fmt.Sprintf("old%d", i), "old stream")
		bob.Ack(tk.RecvMsg(t, bob, wait).Seq)
	}
	_ = bob.Close() // saves bob's cursor (5 or more)
	tk.WaitFor(t, wait, func() error {
		if floor := cursor(t, n, "bob", "phone"); floor < 5 {
			return tk.Errorf("bob's cursor at %d, want 5 or more", floor)
		}
		return nil
	})
	_ = alice.Close()
	g.Kill()

	ctx := context.Background()
	cfg, err := streams.InboxConfig(streams.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.JS.DeleteStream(ctx, "INBOX"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.JS.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	g2 := tk.StartGateway(t, n, tk.TestConfig())
	alice = tk.Dial(t, g2.URL, "alice", "phone")
	send(t, alice, "bob", "new", "new stream") // seq 1 of the new stream
	bob = tk.Dial(t, g2.URL, "bob", "phone")
	if m := tk.RecvMsg(t, bob, wait); m.ID != "new" {
		t.Fatalf("bob got %s, want the new stream's first message", m.ID)
	}
}

// Delivery never waits on the receipts function: with none running, or
// one too slow to answer, a device's acks are settled once their ticks
// are left in TICKS (on a context of their own: the request's has run out
// by then), so it gets far more than it may hold unacked; when the
// function answers again, the sender gets every tick, none twice.
func TestReceiptsFunctionDownStallsNothingLosesNoTick(t *testing.T) {
	for _, slow := range []bool{false, true} {
		name := map[bool]string{false: "stopped", true: "too slow"}[slow]
		t.Run(name, func(t *testing.T) {
			n := tk.StartNATS(t)
			n.Functions.Stop()
			var hole *nats.Subscription
			if slow {
				var err error
				if hole, err = n.Conn.QueueSubscribeSync(contract.DeliveredSubject, "q"); err != nil {
					t.Fatal(err)
				}
			}
			cfg := tk.TestConfig()
			cfg.MaxInflight = 4
			cfg.FunctionTimeout = 200 * time.Millisecond
			g := tk.StartGateway(t, n, cfg)
			alice := tk.Dial(t, g.URL, "alice", "phone")
			bob := tk.Dial(t, g.URL, "bob", "phone")
			const total = 20
			for i := range total {
				send(t, alice, "bob", fmt.Sprintf("m%02d", i), "while receipts do not answer")
			}
			for i := range total {
				m := tk.RecvMsg(t, bob, wait)
				if want := fmt.Sprintf("m%02d", i); m.ID != want {
					t.Fatalf("bob got %s, want %s", m.ID, want)
				}
				bob.Ack(m.Seq)
			}
			if slow {
				if _, err := hole.NextMsg(wait); err != nil {
					t.Fatalf("the ticks were never asked for: %v", err)
				}
				_ = hole.Unsubscribe()
			}
			tk.StartFunctions(t, n)
			got := map[string]bool{}
			for len(got) < total {
				r := tk.RecvReceipt(t, alice, wait)
				if r.Status != protocol.StatusDelivered || got[r.ID] {
					t.Fatalf("receipt %+v (had %d)", r, len(got))
				}
				got[r.ID] = true
			}
		})
	}
}

// A gateway killed after the device acked and before the delivered tick
// was stored loses no tick and shows none twice: the message was not
// settled, so it comes again on the device's next connection, its ack asks
// for the tick again, and the sender's app sees it once.
func TestGatewayKilledBetweenAckAndTick(t *testing.T) {
	n := tk.StartNATS(t)
	n.Functions.Stop()
	// Something takes the delivered requests and never answers, so the
	// ack's tick is on its way when the gateway dies.
	hole, err := n.Conn.QueueSubscribeSync(contract.DeliveredSubject, "q")
	if err != nil {
		t.Fatal(err)
	}
	cfg := tk.TestConfig()
	cfg.FunctionTimeout = time.Minute
	g1 := tk.StartGateway(t, n, cfg)
	g2 := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g1.URL, "alice", "phone")
	bob := tk.Dial(t, g2.URL, "bob", "phone")
	send(t, alice, "bob", "m1", "hi")
	bob.Ack(tk.RecvMsg(t, bob, wait).Seq)
	if _, err := hole.NextMsg(wait); err != nil {
		t.Fatalf("the tick was never asked for: %v", err)
	}
	g2.Kill()
	_ = hole.Unsubscribe()
	tk.StartFunctions(t, n)

	bob2 := tk.Dial(t, g1.URL, "bob", "phone")
	m := tk.RecvMsg(t, bob2, wait)
	if m.ID != "m1" {
		t.Fatalf("bob got %s again, want m1", m.ID)
	}
	bob2.Ack(m.Seq)
	if r := tk.RecvReceipt(t, alice, wait); r.ID != "m1" || r.Status != protocol.StatusDelivered {
		t.Fatalf("receipt %+v, want m1 delivered", r)
	}
	// Fence: m2's tick is the next thing alice's app gets.
	send(t, alice, "bob", "m2", "fence")
	bob2.Ack(tk.NextMsgIs(t, bob2, "alice", "m2", wait).Seq)
	if r := tk.RecvReceipt(t, alice, wait); r.ID != "m2" {
		t.Fatalf("alice got %+v before m2's tick", r)
	}
}

// A device reads, on a new connection, messages it got on its last one
// and did not ack there: the new session has not delivered them again yet
// (here it may hold one unacked, and the first of the backlog is out), so
// the reads wait for them instead of being refused, and each sender gets
// its read tick once its message has come again.
func TestReadOfAMessageFromTheLastConnectionWaitsForIt(t *testing.T) {
	n := tk.StartNATS(t)
	g1 := tk.StartGateway(t, n, tk.TestConfig())
	cfg := tk.TestConfig()
	cfg.MaxInflight = 1
	g2 := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g1.URL, "alice", "phone")
	carol := tk.Dial(t, g1.URL, "carol", "phone")
	s1 := send(t, alice, "bob", "m1", "first")
	sc := send(t, carol, "bob", "c1", "from carol")
	s2 := send(t, alice, "bob", "m2", "second")

	bob := connectRaw(t, g1, "bob", "phone")
	for _, want := range []uint64{s1.Seq, sc.Seq, s2.Seq} {
		if f := skipTo(bob, protocol.TypeMsg); f.Seq != want {
			t.Fatalf("bob got seq %d, want %d", f.Seq, want)
		}
	}
	_ = bob.ws.Close() // none acked

	bob = connectRaw(t, g2, "bob", "phone")
	if f := skipTo(bob, protocol.TypeMsg); f.Seq != s1.Seq {
		t.Fatalf("bob got seq %d again first, want m1 at %d", f.Seq, s1.Seq)
	}
	// Read on the last connection, written on this one (as the SDKs write
	// reads made offline): two conversations, each its own position.
	bob.write(fmt.Sprintf(`{"type":"read","seq":%d}`, sc.Seq))
	bob.write(fmt.Sprintf(`{"type":"read","seq":%d}`, s2.Seq))
	for _, seq := range []uint64{s1.Seq, sc.Seq} {
		bob.write(fmt.Sprintf(`{"type":"ack","seq":%d}`, seq)) // room for the next
		for f := bob.next(); f.Type != protocol.TypeMsg; f = bob.next() {
			if f.Type == protocol.TypeError {
				t.Fatalf("bob's read refused: %s %s (seq %d)", f.Code, f.Message, f.Seq)
			}
		}
	}
	for sender, c := range map[string]*client.Client{"m2": alice, "c1": carol} {
		for {
			r := tk.RecvReceipt(t, c, wait)
			if r.Status == protocol.StatusRead && r.ID == sender {
				break
			}
		}
	}
}
