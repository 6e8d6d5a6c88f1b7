package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/protocol"
)

// stuck is how long a helper waits for something the test is sure will
// happen before it fails the test instead of hanging. It is a deadline for
// a broken client, never a window that passes a test.
const stuck = 10 * time.Second

// script is a scripted gateway: a WebSocket server on real TCP that
// upgrades like the gateway, writes the welcome frame, and then writes
// only what the test tells it to. Every frame the client writes must be
// one the gateway accepts (protocol.DecodeClient).
type script struct {
	t     *testing.T
	url   string
	conns chan *sconn
	// auths gets the Authorization header of every upgrade attempt,
	// refused ones included.
	auths chan string
	// refuse is how many upgrades to refuse next, with 503.
	refuse atomic.Int32

	// hooks are given to the clients dial makes (wait is dial's).
	hooks hooks

	mu      sync.Mutex // guards open
	open    []*sconn
	readers sync.WaitGroup
	n       atomic.Int32
}

// sconn is one connection as the scripted gateway sees it.
type sconn struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan *protocol.Frame // what the client wrote, in order
	wmu    sync.Mutex           // one writer at a time on ws
}

func newScript(t *testing.T) *script {
	t.Helper()
	s := &script{t: t, conns: make(chan *sconn, 16), auths: make(chan string, 64)}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	t.Cleanup(func() {
		srv.Close()
		s.mu.Lock()
		for _, c := range s.open {
			c.ws.Close()
		}
		s.mu.Unlock()
		s.readers.Wait()
	})
	return s
}

func (s *script) serve(w http.ResponseWriter, r *http.Request) {
	s.auths <- r.Header.Get("Authorization")
	if s.refuse.Load() > 0 {
		s.refuse.Add(-1)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"code":"shutting_down","message":"draining"}`)
		return
	}
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		s.t.Errorf("upgrade: %v", err)
		return
	}
	if ws.Subprotocol() != protocol.Subprotocol {
		s.t.Errorf("client offered %q, want %s", r.Header.Get("Sec-WebSocket-Protocol"), protocol.Subprotocol)
	}
	c := &sconn{t: s.t, ws: ws, frames: make(chan *protocol.Frame, 1024)}
	s.mu.Lock()
	s.open = append(s.open, c)
	s.mu.Unlock()
	c.write(protocol.EncodeWelcome("alice", "phone", fmt.Sprintf("session-%d", s.n.Add(1)), 65536))
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		c.read()
	}()
	s.conns <- c
}

// read hands on every frame the client writes until the connection ends.
func (c *sconn) read() {
	defer close(c.frames)
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if typ != websocket.TextMessage {
			c.t.Errorf("client wrote a %d frame; the protocol has only text frames", typ)
			return
		}
		f, err := protocol.DecodeClient(data)
		if err != nil {
			c.t.Errorf("client wrote a frame the gateway refuses: %s: %v", data, err)
			return
		}
		c.frames <- f
	}
}

// accept returns the next connection the client made.
func (s *script) accept(t *testing.T) *sconn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(stuck):
		t.Fatal("the client did not connect")
		return nil
	}
}

// dial connects a client to the script through hooks.wait = w.
func (s *script) dial(t *testing.T, opts Options, w *waiter) *Client {
	t.Helper()
	opts.URL = s.url
	if opts.Token == nil {
		opts.Token = WithToken("tok")
	}
	ctx, cancel := context.WithTimeout(context.Background(), stuck)
	defer cancel()
	h := s.hooks
	if w != nil {
		h.wait = w.wait
	}
	c, err := dialWith(ctx, opts, h)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialConnected dials through an automatic waiter and returns once the
// client is connected: the client, its connection as the script sees it,
// and the channel its later connects are told on.
func (s *script) dialConnected(t *testing.T, opts Options) (*Client, *sconn, <-chan string) {
	t.Helper()
	return s.dialConnectedWith(t, opts, newWaiter(true))
}

// dialConnectedWith is dialConnected through waiter w.
func (s *script) dialConnectedWith(t *testing.T, opts Options, w *waiter) (*Client, *sconn, <-chan string) {
	t.Helper()
	connected := make(chan string, 4)
	opts.OnConnect = func(sid string) { connected <- sid }
	c := s.dial(t, opts, w)
	conn := s.accept(t)
	select {
	case <-connected:
	case <-time.After(stuck):
		t.Fatal("the client never said it was connected")
	}
	return c, conn, connected
}

// errorsTo has opts.OnError tell each error on the returned channel, as
// "code:seq".
func errorsTo(opts *Options) <-chan string {
	errs := make(chan string, 16)
	opts.OnError = func(code protocol.ErrorCode, _ string, seq uint64) { errs <- fmt.Sprintf("%s:%d", code, seq) }
	return errs
}

func (c *sconn) write(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		c.t.Errorf("writing %s: %v", frame, err)
	}
}

// closeWith ends the connection with a close frame.
func (c *sconn) closeWith(code int, reason string) {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	c.wmu.Unlock()
	c.ws.Close()
}

// next returns the next frame the client wrote.
func (c *sconn) next(t *testing.T) *protocol.Frame {
	t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			t.Fatal("the connection ended; the test expected a frame")
		}
		return f
	case <-time.After(stuck):
		t.Fatal("the client wrote nothing; the test expected a frame")
		return nil
	}
}

// expectSends checks that the next frames are sends of ids, in this order.
func (c *sconn) expectSends(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if f := c.next(t); f.Type != protocol.TypeSend || f.ID != id {
			t.Fatalf("next frame %s %q, want send %q (of %v)", f.Type, f.ID, id, ids)
		}
	}
}

// expectAcks checks that the next frames are acks of seqs, in this order.
func (c *sconn) expectAcks(t *testing.T, seqs ...uint64) {
	t.Helper()
	for _, seq := range seqs {
		if f := c.next(t); f.Type != protocol.TypeAck || f.Seq != seq {
			t.Fatalf("next frame %s id %q seq %d, want ack %d (of %v)", f.Type, f.ID, f.Seq, seq, seqs)
		}
	}
}

// fence makes the client write a typing frame and checks that it is the
// next frame: whatever the client was not to write before it, it did not.
func (c *sconn) fence(t *testing.T, cl *Client) {
	t.Helper()
	if err := cl.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	if f := c.next(t); f.Type != protocol.TypeTyping || f.To != "fence" {
		t.Fatalf("next frame %s id %q, want the typing fence", f.Type, f.ID)
	}
}

func (c *sconn) sent(id string, seq uint64) {
	c.write(protocol.AppendSent(nil, id, seq, 1795582349000, false))
}

func (c *sconn) fail(code protocol.ErrorCode, id string, retryMS int64) {
	c.write(protocol.EncodeError(code, "scripted", id, 0, retryMS))
}

func (c *sconn) msg(id, from string, seq uint64) {
	c.write(protocol.AppendMsg(nil, id, from, "phone", seq, 1795582349000, []byte(`"hi"`), nil))
}

// receipt writes a receipt frame: by did status to this user's messages
// stored from from (0: the start) to to; seq is the frame's own.
func (c *sconn) receipt(status, by string, from, to, seq uint64) {
	c.write(protocol.AppendReceipt(nil, status, by, "phone", from, to, seq, 1795582350000))
}

// waiter stands in for hooks.wait: it records every wait the client asks
// for (reconnect backoff and resend backoff) and, unless auto, lets the
// test end each one.
type waiter struct {
	auto bool
	reqs chan *waitReq
}

type waitReq struct {
	d    time.Duration
	done chan struct{}
}

func newWaiter(auto bool) *waiter { return &waiter{auto: auto, reqs: make(chan *waitReq, 256)} }

func (w *waiter) wait(ctx context.Context, d time.Duration) bool {
	r := &waitReq{d: d, done: make(chan struct{})}
	if w.auto {
		close(r.done)
	}
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		return false
	}
	select {
	case <-r.done:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// next returns the next wait the client asked for.
func (w *waiter) next(t *testing.T) *waitReq {
	t.Helper()
	select {
	case r := <-w.reqs:
		return r
	case <-time.After(stuck):
		t.Fatal("the client asked for no wait")
		return nil
	}
}

func (r *waitReq) end() { close(r.done) }

// queue makes a send the way Send does, and returns once the client has
// queued it (and written it, if it may go out now).
func queue(t *testing.T, c *Client, id string) *outgoing {
	t.Helper()
	return queueTo(t, c, "bob", id)
}

// queueTo is queue to another recipient.
func queueTo(t *testing.T, c *Client, to, id string) *outgoing {
	t.Helper()
	o, err := c.enqueueTo(dest{to: to}, id, []byte(`"`+id+`"`), nil)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// outcome waits for a queued send's outcome.
func outcome(t *testing.T, c *Client, o *outgoing) (Sent, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stuck)
	defer cancel()
	s, err := c.await(ctx, o)
	if err == context.DeadlineExceeded {
		t.Fatalf("send %s: no outcome", o.id)
	}
	return s, err
}

func recvMsg(t *testing.T, c *Client) Message {
	t.Helper()
	select {
	case m := <-c.Messages():
		return m
	case <-time.After(stuck):
		t.Fatal("no message")
		return Message{}
	}
}

func recvReceipt(t *testing.T, c *Client) Receipt {
	t.Helper()
	return recvWithin(t, c.Receipts(), "no receipt")
}

// recvWithin returns the next value on ch, failing the test with what
// if none comes.
func recvWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(stuck):
		t.Fatal(what)
		var none T
		return none
	}
}

// A read the gateway answers with a retryable code (too many calls in
// flight, receipts unavailable) is written again after the wait the
// answer names, up to maxRetries times; then, and for an error that
// is final or names a seq the device did not read, the app's OnError is
// told.
func TestReadRefusedForNowIsWrittenAgain(t *testing.T) {
	s := newScript(t)
	var opts Options
	errs := errorsTo(&opts)
	c, conn, _ := s.dialConnected(t, opts)
	c.Read(7)
	codes := []protocol.ErrorCode{protocol.ErrRateLimited, protocol.ErrUnavailable}
	for i := range maxRetries + 1 {
		if f := conn.next(t); f.Type != protocol.TypeRead || f.Seq != 7 {
			t.Fatalf("write %d: %s seq %d, want the read of 7", i+1, f.Type, f.Seq)
		}
		conn.write(protocol.EncodeError(codes[i%2], "busy", "", 7, 1))
	}
	select {
	case e := <-errs:
		if want := fmt.Sprintf("%s:7", codes[maxRetries%2]); e != want {
			t.Fatalf("OnError got %s, want %s once the retries ran out", e, want)
		}
	case <-time.After(stuck):
		t.Fatal("OnError never told of the read refused for good")
	}
	// Final, or about a seq not read: told at once, written again never.
	conn.write(protocol.EncodeError(protocol.ErrUnknownSeq, "no", "", 8, 0))
	conn.write(protocol.EncodeError(protocol.ErrUnavailable, "no", "", 9, 0))
	for _, want := range []string{"unknown_seq:8", "unavailable:9"} {
		select {
		case e := <-errs:
			if e != want {
				t.Fatalf("OnError got %s, want %s", e, want)
			}
		case <-time.After(stuck):
			t.Fatalf("OnError never got %s", want)
		}
	}
	// Fence: the next frame the client writes is this read, not a repeat.
	c.Read(10)
	if f := conn.next(t); f.Type != protocol.TypeRead || f.Seq != 10 {
		t.Fatalf("next frame %s seq %d, want the read of 10", f.Type, f.Seq)
	}
}

// An ack the app makes, after a reconnect, of a message it got on the
// last connection is not written before the message comes again on this
// one (the gateway would answer unknown_seq: it has not delivered it
// here yet); the client acks it by itself when it does. An ack of a
// message this connection delivered is written at once.
func TestAckOfAMessageFromTheLastConnectionWaitsForItToComeAgain(t *testing.T) {
	s := newScript(t)
	c, conn, connected := s.dialConnected(t, Options{})
	conn.msg("m1", "bob", 5)
	m := <-c.Messages()
	conn.closeWith(protocol.CloseServiceRestart, "restart")
	conn = s.accept(t)
	<-connected

	c.Ack(m.Seq)
	if err := c.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	if f := conn.next(t); f.Type != protocol.TypeTyping {
		t.Fatalf("next frame %s seq %d, want the typing fence: the ack of 5 went before 5 came again", f.Type, f.Seq)
	}
	conn.msg("m1", "bob", 5) // again, as the gateway redelivers it
	conn.expectAcks(t, 5)
	conn.msg("m2", "bob", 6)
	m = <-c.Messages()
	c.Ack(m.Seq)
	conn.expectAcks(t, 6)
}

// An ack of a seq made before its message was first delivered here (an
// app acking what it kept across a restart, say) is written when the
// message comes, by the client, as for a redelivery; the app still gets
// the message, and its second ack writes nothing more.
func TestAckBeforeTheFirstDeliveryIsWrittenWhenItComes(t *testing.T) {
	s := newScript(t)
	c, conn, _ := s.dialConnected(t, Options{AckGather: -1})
	c.Ack(5) // not delivered here yet: recorded, not written
	conn.msg("m1", "bob", 5)
	conn.expectAcks(t, 5)
	m := <-c.Messages()
	c.Ack(m.Seq)
	if err := c.SendTyping("fence"); err != nil {
		t.Fatal(err)
	}
	if f := conn.next(t); f.Type != protocol.TypeTyping {
		t.Fatalf("next frame %s seq %d, want the typing fence", f.Type, f.Seq)
	}
}

// An error frame names the frame it refuses: a read refused for now while
// a group status is asked at the same number (an inbox seq and a group
// log seq can be equal) is written again, and the status waits for its
// own answer; a status refusal naming the group is that status's: asked
// again when refused for now, failing the call when refused for good.
func TestRefusalsGoToTheFrameTheyName(t *testing.T) {
	s := newScript(t)
	var opts Options
	errs := errorsTo(&opts)
	c, conn, _ := s.dialConnected(t, opts)
	res := askGroupStatus(c, "g1", 7)
	if f := conn.next(t); f.Type != protocol.TypeStatus || f.Seq != 7 || f.Group != "g1" {
		t.Fatalf("got %s %d in %q, want the status of 7 in g1", f.Type, f.Seq, f.Group)
	}
	readOf7 := func() {
		t.Helper()
		if f := conn.next(t); f.Type != protocol.TypeRead || f.Seq != 7 {
			t.Fatalf("got %s %d, want the read of 7", f.Type, f.Seq)
		}
	}
	c.Read(7)
	readOf7()
	conn.write(protocol.EncodeRefusal(protocol.ErrRateLimited, "too many frames", protocol.TypeRead, "", 7, 1))
	readOf7() // written again
	conn.write(protocol.EncodeRefusal(protocol.ErrUnavailable, "receipts are unavailable", protocol.TypeStatus, "g1", 7, 0))
	if f := conn.next(t); f.Type != protocol.TypeStatus || f.Seq != 7 || f.Group != "g1" {
		t.Fatalf("got %s %d in %q, want the status of 7 in g1 asked again", f.Type, f.Seq, f.Group)
	}
	conn.write(protocol.EncodeRefusal(protocol.ErrUnknownSeq, "not yours", protocol.TypeStatus, "g1", 7, 0))
	var se *ServerError
	if err := recvWithin(t, res, "GroupStatus never ended"); !errors.As(err, &se) || se.Code != protocol.ErrUnknownSeq {
		t.Fatalf("GroupStatus: %v, want its own refusal, unknown_seq", err)
	}
	// An ack's refusal goes to the app.
	conn.write(protocol.EncodeRefusal(protocol.ErrUnknownSeq, "no", protocol.TypeAck, "", 9, 0))
	if e := <-errs; e != "unknown_seq:9" {
		t.Fatalf("OnError got %s, want unknown_seq:9", e)
	}
}

// statusCall is the outcome of a status call made in the background.
type statusCall struct {
	to  map[string]protocol.Ticks
	err error
}

// askStatusOf calls StatusOf(seq) in the background.
func askStatusOf(c *Client, seq uint64) <-chan statusCall {
	ch := make(chan statusCall, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stuck)
		defer cancel()
		to, err := c.StatusOf(ctx, seq)
		ch <- statusCall{to, err}
	}()
	return ch
}

// askGroupStatus calls GroupStatus(group, seq) in the background; its
// error comes on the channel.
func askGroupStatus(c *Client, group string, seq uint64) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stuck)
		defer cancel()
		_, err := c.GroupStatus(ctx, group, seq)
		ch <- err
	}()
	return ch
}

// outcomeOf waits for a status call's outcome.
func outcomeOf(t *testing.T, ch <-chan statusCall) statusCall {
	t.Helper()
	return recvWithin(t, ch, "the status call never ended")
}

// A status the gateway refuses for now (too many frames, receipts
// unavailable) is asked again after the wait the refusal names, or a
// backoff, and every call waiting on it gets the answer to the frame
// written again. One refused for good, or refused for now past
// maxRetries times, fails its calls with the refusal; one waiting to be
// asked again ends with the client's Close.
func TestStatusRefusedForNowIsAskedAgain(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c, conn, _ := s.dialConnectedWith(t, Options{}, w)
	expectStatus := func(group string, seq uint64) {
		t.Helper()
		if f := conn.next(t); f.Type != protocol.TypeStatus || f.Seq != seq || f.Group != group {
			t.Fatalf("got %s %d in %q, want the status of %d in %q", f.Type, f.Seq, f.Group, seq, group)
		}
	}

	// Two calls about one message, one refusal: both wait for the
	// status asked again, and both get its answer.
	a := askStatusOf(c, 7)
	expectStatus("", 7)
	b := askStatusOf(c, 7)
	expectStatus("", 7)
	conn.write(protocol.EncodeRefusal(protocol.ErrRateLimited, "too many frames", protocol.TypeStatus, "", 7, 30))
	r := w.next(t)
	if r.d != 30*time.Millisecond {
		t.Fatalf("asked again after %v, want the refusal's retry_ms, 30ms", r.d)
	}
	for _, ch := range []<-chan statusCall{a, b} {
		select {
		case got := <-ch:
			t.Fatalf("a call ended on the refusal for now: %+v", got)
		default:
		}
	}
	r.end()
	expectStatus("", 7)
	conn.write(protocol.EncodeStatus(7, map[string]protocol.Ticks{"bob": {Delivered: true}}))
	for _, ch := range []<-chan statusCall{a, b} {
		if got := outcomeOf(t, ch); got.err != nil || got.to["bob"] != (protocol.Ticks{Delivered: true}) || len(got.to) != 1 {
			t.Fatalf("status of 7: %+v, want bob delivered", got)
		}
	}

	// Refused for good (by a gateway that does not say what it
	// refuses): the call fails at once.
	d := askStatusOf(c, 8)
	expectStatus("", 8)
	conn.write(protocol.EncodeError(protocol.ErrUnknownSeq, "not yours", "", 8, 0))
	var se *ServerError
	if got := outcomeOf(t, d); !errors.As(got.err, &se) || se.Code != protocol.ErrUnknownSeq {
		t.Fatalf("status of 8: %+v, want unknown_seq", got)
	}

	// A group's, refused for now each time it is asked: asked again
	// after a growing backoff (no retry_ms), maxRetries times, then
	// the call gets the last refusal.
	g := askGroupStatus(c, "g1", 9)
	expectStatus("g1", 9)
	for n := 1; n <= maxRetries; n++ {
		conn.write(protocol.EncodeRefusal(protocol.ErrUnavailable, "receipts are unavailable", protocol.TypeStatus, "g1", 9, 0))
		r := w.next(t)
		if bound := min(c.opts.MinBackoff<<(n-1), c.opts.MaxBackoff); r.d <= 0 || r.d > bound {
			t.Fatalf("refusal %d: asked again after %v, want a backoff up to %v", n, r.d, bound)
		}
		r.end()
		expectStatus("g1", 9)
	}
	conn.write(protocol.EncodeRefusal(protocol.ErrUnavailable, "receipts are unavailable", protocol.TypeStatus, "g1", 9, 0))
	if err := recvWithin(t, g, "GroupStatus never ended"); !errors.As(err, &se) || se.Code != protocol.ErrUnavailable {
		t.Fatalf("GroupStatus: %v, want unavailable once the retries ran out", err)
	}

	// Close ends a wait to ask again, and the call waiting on it.
	e := askStatusOf(c, 10)
	expectStatus("", 10)
	conn.write(protocol.EncodeRefusal(protocol.ErrRateLimited, "too many frames", protocol.TypeStatus, "", 10, 60000))
	w.next(t) // never ended
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(stuck):
		t.Fatal("Close waited for the status to be asked again")
	}
	if got := outcomeOf(t, e); !errors.Is(got.err, ErrClosed) {
		t.Fatalf("status of 10: %+v, want ErrClosed", got)
	}
}

// Status questions still waiting when the connection drops (their answer
// lost with it, or a write again after a refusal for now that came due
// with no connection) are asked again on the new connection. A question
// asked again is a waiting call's: a call that gave up does not have its
// frame (naming another recipient) written again.
func TestStatusesWaitingAreAskedAgainOnTheNextConnection(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c, conn, connected := s.dialConnectedWith(t, Options{}, w)

	// Asked, then the connection drops before the answer.
	a := askStatusOf(c, 7)
	if f := conn.next(t); f.Type != protocol.TypeStatus || f.Seq != 7 {
		t.Fatalf("got %s %d, want the status of 7", f.Type, f.Seq)
	}
	// Refused for now, and the connection drops before it is asked again.
	g := askGroupStatus(c, "g1", 9)
	if f := conn.next(t); f.Type != protocol.TypeStatus || f.Seq != 9 || f.Group != "g1" {
		t.Fatalf("got %s %d in %q, want the status of 9 in g1", f.Type, f.Seq, f.Group)
	}
	conn.write(protocol.EncodeRefusal(protocol.ErrRateLimited, "too many frames", protocol.TypeStatus, "g1", 9, 50))
	retry := w.next(t)
	conn.closeWith(protocol.CloseServiceRestart, "restart")
	w.next(t).end() // the reconnect's own wait
	conn = s.accept(t)
	<-connected
	asked := map[string]bool{}
	for range 2 {
		f := conn.next(t)
		if f.Type != protocol.TypeStatus {
			t.Fatalf("got %s, want the statuses still waiting asked again", f.Type)
		}
		asked[fmt.Sprintf("%s/%d", f.Group, f.Seq)] = true
	}
	if !asked["/7"] || !asked["g1/9"] {
		t.Fatalf("asked again %v, want /7 and g1/9", asked)
	}
	conn.write(protocol.EncodeStatus(7, map[string]protocol.Ticks{"bob": {Delivered: true}}))
	if got := outcomeOf(t, a); got.err != nil || !got.to["bob"].Delivered {
		t.Fatalf("status of 7: %+v, want bob delivered", got)
	}
	conn.write(protocol.EncodeGroupStatus(9, "g1", map[string]protocol.Ticks{"bob": {Delivered: true}}, true, false))
	if err := recvWithin(t, g, "GroupStatus never ended"); err != nil {
		t.Fatalf("GroupStatus: %v, want the answer on the new connection", err)
	}
	retry.end() // answered meanwhile: nothing is written
	conn.fence(t, c)

	// Two calls about 11 naming different recipients; the first gives up
	// while the refusal's wait runs: the question asked again is the
	// second's.
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.StatusTo(ctx1, "carol", 11)
		first <- err
	}()
	if f := conn.next(t); f.Type != protocol.TypeStatus || f.Seq != 11 || f.To != "carol" {
		t.Fatalf("got %s %d to %q, want the status of 11 to carol", f.Type, f.Seq, f.To)
	}
	second := make(chan statusCall, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stuck)
		defer cancel()
		to, err := c.StatusTo(ctx, "bob", 11)
		second <- statusCall{to, err}
	}()
	if f := conn.next(t); f.Type != protocol.TypeStatus || f.Seq != 11 || f.To != "bob" {
		t.Fatalf("got %s %d to %q, want the status of 11 to bob", f.Type, f.Seq, f.To)
	}
	conn.write(protocol.EncodeRefusal(protocol.ErrRateLimited, "too many frames", protocol.TypeStatus, "", 11, 50))
	retry = w.next(t)
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the first call: %v, want its context's end", err)
	}
	retry.end()
	if f := conn.next(t); f.Type != protocol.TypeStatus || f.Seq != 11 || f.To != "bob" {
		t.Fatalf("asked again %s %d to %q, want the waiting call's, to bob", f.Type, f.Seq, f.To)
	}
	conn.write(protocol.EncodeStatus(11, map[string]protocol.Ticks{"bob": {Delivered: true}}))
	if got := outcomeOf(t, second); got.err != nil || !got.to["bob"].Delivered {
		t.Fatalf("status of 11: %+v, want bob delivered", got)
	}
}
