package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/web"
)

// The JavaScript SDK's own tests: the SDK runs in headless Chromium, in a
// page that imports it as any page would, against a scripted gateway, a
// real WebSocket server on loopback that writes only what the test tells
// it to and hands on every frame the SDK writes. They pin the rules of
// sending, receiving and reconnecting that the real gateway cannot be
// made to exercise on demand (a store_failed, a redelivery, a 4002).

// stuck is how long a helper waits for something the test is sure will
// happen: a deadline for a broken SDK, never a window that passes a test.
const stuck = 10 * time.Second

// script is the scripted gateway; it also serves the SDK and a page that
// imports it, and, when media is set, the media routes.
type script struct {
	t     *testing.T
	srv   *httptest.Server
	conns chan *sconn
	// refuse is how many upgrades to refuse next, with 503.
	refuse atomic.Int32
	// deny, when set, refuses every upgrade and plain request to /v1/ws
	// with 401 and this code.
	deny atomic.Value
	// media serves /v1/media/... when set.
	media http.Handler
	// badGateway is how many requests to /v1/ws, upgrades or not, to
	// answer 502 next, as a proxy does while the gateway behind it is
	// away; sseTries counts the requests for the event stream.
	badGateway atomic.Int32
	sseTries   atomic.Int32

	mu   sync.Mutex // guards open
	open []*sconn
	n    atomic.Int32
}

type sconn struct {
	t      *testing.T
	ws     *websocket.Conn
	token  string
	frames chan *protocol.Frame
	wmu    sync.Mutex
}

const sdkPage = `<!doctype html><title>sdk</title><script type="module">
import * as sb from '/sdk/switchboard.js';
window.sb = sb;
window.log = [];
window.results = {};
window.ready = true;
</script>`

func newScript(t *testing.T) *script {
	t.Helper()
	s := &script{t: t, conns: make(chan *sconn, 16)}
	s.deny.Store("")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, sdkPage)
	})
	mux.HandleFunc(web.PathSDK, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		f, _ := web.Files.Open(strings.TrimPrefix(web.PathSDK, "/"))
		defer f.Close()
		_, _ = io.Copy(w, f)
	})
	mux.HandleFunc("/v1/ws", s.serve)
	mux.HandleFunc("/v1/sse", func(w http.ResponseWriter, r *http.Request) {
		s.sseTries.Add(1)
		http.NotFound(w, r)
	})
	mux.HandleFunc("/v1/media/", func(w http.ResponseWriter, r *http.Request) {
		if s.media == nil {
			http.NotFound(w, r)
			return
		}
		s.media.ServeHTTP(w, r)
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
		s.mu.Lock()
		for _, c := range s.open {
			c.ws.Close()
		}
		s.mu.Unlock()
	})
	return s
}

func (s *script) wsURL() string { return "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/v1/ws" }

func (s *script) serve(w http.ResponseWriter, r *http.Request) {
	if s.badGateway.Load() > 0 {
		s.badGateway.Add(-1)
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if code := s.deny.Load().(string); code != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"code":%q,"message":"scripted"}`, code)
		return
	}
	if s.refuse.Load() > 0 {
		s.refuse.Add(-1)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}, CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	if ws.Subprotocol() != protocol.Subprotocol {
		s.t.Errorf("the SDK offered %q, want %s", r.Header.Get("Sec-WebSocket-Protocol"), protocol.Subprotocol)
	}
	c := &sconn{t: s.t, ws: ws, token: r.URL.Query().Get("access_token"), frames: make(chan *protocol.Frame, 1024)}
	s.mu.Lock()
	s.open = append(s.open, c)
	s.mu.Unlock()
	c.write(protocol.EncodeWelcome("alice", "browser", fmt.Sprintf("session-%d", s.n.Add(1)), 65536))
	go c.read()
	s.conns <- c
}

// read hands on every frame the SDK writes, each one the gateway accepts.
func (c *sconn) read() {
	defer close(c.frames)
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if typ != websocket.TextMessage {
			c.t.Errorf("the SDK wrote a %d frame; the protocol has only text frames", typ)
			return
		}
		f, err := protocol.DecodeClient(data)
		if err != nil {
			c.t.Errorf("the SDK wrote a frame the gateway refuses: %s: %v", data, err)
			return
		}
		c.frames <- f
	}
}

func (s *script) accept(t *testing.T) *sconn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(stuck):
		t.Fatal("the SDK did not connect")
		return nil
	}
}

func (c *sconn) write(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.WriteMessage(websocket.TextMessage, frame)
}

func (c *sconn) closeWith(code int, reason string) {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	c.wmu.Unlock()
	c.ws.Close()
}

func (c *sconn) next(t *testing.T) *protocol.Frame {
	t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			t.Fatal("the connection ended; the test expected a frame")
		}
		return f
	case <-time.After(stuck):
		t.Fatal("the SDK wrote nothing; the test expected a frame")
		return nil
	}
}

func (c *sconn) expect(t *testing.T, typ string, idOrSeq ...any) {
	t.Helper()
	for _, want := range idOrSeq {
		f := c.next(t)
		got := any(f.ID)
		if _, isSeq := want.(int); isSeq {
			got = int(f.Seq)
		}
		if f.Type != typ || got != want {
			t.Fatalf("next frame %s id %q seq %d, want %s %v (of %v)", f.Type, f.ID, f.Seq, typ, want, idOrSeq)
		}
	}
}

// fence makes the SDK write a typing frame and checks that it is the
// next frame: whatever the SDK was not to write before it, it did not.
func (c *sconn) fence(t *testing.T, pg *tk.Page) {
	t.Helper()
	js(pg, `c.typing('fence')`)
	if f := c.next(t); f.Type != protocol.TypeTyping || f.To != "fence" {
		t.Fatalf("next frame %s id %q seq %d, want the typing fence", f.Type, f.ID, f.Seq)
	}
}

func (c *sconn) sent(id string, seq uint64) {
	c.write(protocol.AppendSent(nil, id, seq, 1795582349000, false))
}

func (c *sconn) msg(id, from string, seq uint64) {
	c.write(protocol.AppendMsg(nil, id, from, "phone", seq, 1795582349000, []byte(`"hi"`), nil))
}

// js runs statements on the page.
func js(pg *tk.Page, code string) {
	tk.Eval[json.RawMessage](pg, "(() => { "+code+"; return null; })()")
}

// startSDK opens the page and connects a client to the script, recording
// every event in window.log as [type, detail]. opts are more Client
// options, as JavaScript.
func startSDK(t *testing.T, s *script, opts string) (*tk.Page, *sconn) {
	t.Helper()
	pg := tk.StartBrowser(t).NewPage(t, "sdk")
	pg.Navigate(s.srv.URL + "/")
	pg.WaitFor(stuck, "the SDK imported", `window.ready === true`)
	js(pg, fmt.Sprintf(`
		window.c = new sb.Client({ url: %q, token: 'tok', minBackoff: 1, maxBackoff: 20, %s });
		for (const ev of ['message', 'receipt', 'typing', 'presence', 'connect', 'disconnect', 'close', 'error']) {
			c.on(ev, (d) => log.push([ev, d]));
		}
		c.start().then(() => { window.started = true; }, (e) => { window.started = { name: e.name, status: e.status, code: e.code }; })`,
		s.wsURL(), opts))
	conn := s.accept(t)
	pg.WaitFor(stuck, "connected", `window.started === true`)
	return pg, conn
}

// send calls c.send on the page; its outcome goes to results[id].
func send(pg *tk.Page, id string) {
	js(pg, fmt.Sprintf(`c.send('bob', %q, %q).then((v) => { results[%q] = v; }, (e) => { results[%q] = { error: e.name, code: e.code }; })`, id, id, id, id))
}

// result waits for a send's outcome: its seq, or its error's code.
func result(t *testing.T, pg *tk.Page, id string) string {
	t.Helper()
	pg.WaitFor(stuck, "the outcome of "+id, fmt.Sprintf(`results[%q] !== undefined`, id))
	return tk.Eval[string](pg, fmt.Sprintf(`(() => { const r = results[%q]; return r.error ? r.error + ' ' + r.code : 'seq ' + r.seq; })()`, id))
}

// events returns the logged events of one type, as JSON.
func events(pg *tk.Page, typ string) string {
	return tk.Eval[string](pg, fmt.Sprintf(`JSON.stringify(log.filter(([t]) => t === %q).map(([, d]) => d))`, typ))
}

// Unconfirmed sends go again after a reconnect, under their ids, in
// order, and resolve on the new connection's "sent".
func TestSDKResendsInOrderAfterReconnect(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	for _, id := range []string{"m1", "m2", "m3"} {
		send(pg, id)
	}
	c.expect(t, protocol.TypeSend, "m1", "m2", "m3")
	c.sent("m1", 1)
	if got := result(t, pg, "m1"); got != "seq 1" {
		t.Fatalf("m1: %s", got)
	}
	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	c.expect(t, protocol.TypeSend, "m2", "m3")
	c.sent("m2", 2)
	c.sent("m3", 3)
	if a, b := result(t, pg, "m2"), result(t, pg, "m3"); a != "seq 2" || b != "seq 3" {
		t.Fatalf("m2: %s, m3: %s", a, b)
	}
	if got := events(pg, "disconnect"); got != `[{"code":1012,"reason":"restart"}]` {
		t.Fatalf("disconnects: %s", got)
	}
}

// A read made while there is no connection is written on the next one,
// after the resends: the sender learns of it without another read.
func TestSDKWritesAReadMadeOfflineOnTheNextConnection(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	c.msg("m1", "bob", 5)
	pg.WaitFor(stuck, "the message", `log.some(([t, m]) => t === 'message' && m.seq === 5)`)
	s.refuse.Store(1 << 30) // the gateway is away until the test lets it back
	c.closeWith(protocol.CloseServiceRestart, "restart")
	pg.WaitFor(stuck, "the disconnect", `log.some(([t]) => t === 'disconnect')`)
	js(pg, `c.read(5)`)
	s.refuse.Store(0)
	c = s.accept(t)
	c.expect(t, protocol.TypeRead, 5)
	c.fence(t, pg)
}

// An ack the app makes, after a reconnect, of a message it got on the
// last connection waits for the message to come again on this one (the
// gateway would answer unknown_seq), and the SDK acks it then by itself;
// an ack of a message this connection gave is written at once.
func TestSDKAcksAMessageFromTheLastConnectionWhenItComesAgain(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	c.msg("m1", "bob", 5)
	pg.WaitFor(stuck, "the message", `log.some(([t, m]) => t === 'message' && m.seq === 5)`)
	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	pg.WaitFor(stuck, "the second connect", `log.filter(([t]) => t === 'connect').length === 2`)
	js(pg, `c.ack(5)`)
	c.fence(t, pg)
	c.msg("m1", "bob", 5)
	c.expect(t, protocol.TypeAck, 5)
	c.msg("m2", "bob", 6)
	pg.WaitFor(stuck, "the next message", `log.some(([t, m]) => t === 'message' && m.seq === 6)`)
	js(pg, `c.ack(6)`)
	c.expect(t, protocol.TypeAck, 6)
	// Acked before it first came (kept across a reload, say): the SDK
	// acks it when it comes; the app's ack of it then writes nothing.
	js(pg, `c.ack('7')`)
	c.msg("m3", "bob", 7)
	c.expect(t, protocol.TypeAck, 7)
	pg.WaitFor(stuck, "the third message", `log.some(([t, m]) => t === 'message' && m.seq === 7)`)
	js(pg, `c.ack(7)`)
	c.fence(t, pg)
}

// An error frame names the frame it refuses: a read refused for now while
// a group status is asked at the same number is written again, and the
// status waits for its own answer, a refusal naming its group: asked
// again when refused for now, rejected when refused for good.
func TestSDKRoutesRefusalsToTheFrameTheyName(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.groupStatus('g1', 7).then(() => { window.gs = 'answered'; }, (e) => { window.gs = e.code; })`)
	if f := c.next(t); f.Type != protocol.TypeStatus || f.Seq != 7 || f.Group != "g1" {
		t.Fatalf("got %s %d in %q, want the status of 7 in g1", f.Type, f.Seq, f.Group)
	}
	js(pg, `c.read(7)`)
	c.expect(t, protocol.TypeRead, 7)
	c.write(protocol.EncodeRefusal(protocol.ErrRateLimited, "too many frames", protocol.TypeRead, "", 7, 1))
	c.expect(t, protocol.TypeRead, 7) // written again
	if got := tk.Eval[string](pg, `String(window.gs)`); got != "undefined" {
		t.Fatalf("group status settled by the read's refusal: %s", got)
	}
	c.write(protocol.EncodeRefusal(protocol.ErrUnavailable, "receipts are unavailable", protocol.TypeStatus, "g1", 7, 0))
	if f := c.next(t); f.Type != protocol.TypeStatus || f.Seq != 7 || f.Group != "g1" {
		t.Fatalf("got %s %d in %q, want the status of 7 in g1 asked again", f.Type, f.Seq, f.Group)
	}
	c.write(protocol.EncodeRefusal(protocol.ErrUnknownSeq, "not yours", protocol.TypeStatus, "g1", 7, 0))
	pg.WaitFor(stuck, "the status refused", `window.gs === 'unknown_seq'`)
}

// A read the gateway answers with a retryable code (too many calls in
// flight, receipts unavailable) is written again after the wait the
// answer names, up to five times; then, and for a final error, the app
// gets an error event.
func TestSDKWritesAgainAReadRefusedForNow(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.read(7)`)
	codes := []protocol.ErrorCode{protocol.ErrRateLimited, protocol.ErrUnavailable}
	for i := range 6 {
		c.expect(t, protocol.TypeRead, 7)
		c.write(protocol.EncodeError(codes[i%2], "busy", "", 7, 1))
	}
	pg.WaitFor(stuck, "the error event", `log.some(([t]) => t === 'error')`)
	c.write(protocol.EncodeError(protocol.ErrUnknownSeq, "no", "", 8, 0))
	pg.WaitFor(stuck, "the second error event", `log.filter(([t]) => t === 'error').length === 2`)
	if got := events(pg, "error"); got != `[{"code":"unavailable","message":"busy","seq":7,"id":""},{"code":"unknown_seq","message":"no","seq":8,"id":""}]` {
		t.Fatalf("errors: %s", got)
	}
	c.fence(t, pg)
}

// A status the gateway refuses for now (too many requests in flight,
// receipts unavailable) is asked again after the wait the refusal names,
// or a backoff, and every call waiting on it gets the answer to the frame
// written again; refused for now past five times in a row, or refused
// for good, its calls reject with the refusal. What is asked again is a
// waiting call's question, and a question still waiting when the
// connection drops is asked again on the next.
func TestSDKAsksAgainAStatusRefusedForNow(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	ask := func(name, call string) {
		js(pg, fmt.Sprintf(`%s.then((v) => { results[%q] = v; }, (e) => { results[%q] = { error: e.name, code: e.code }; })`, call, name, name))
	}
	outcome := func(name string) string {
		t.Helper()
		pg.WaitFor(stuck, "the outcome of "+name, fmt.Sprintf(`results[%q] !== undefined`, name))
		return tk.Eval[string](pg, fmt.Sprintf(`JSON.stringify(results[%q])`, name))
	}
	expectStatus := func(group string, seq uint64) {
		t.Helper()
		if f := c.next(t); f.Type != protocol.TypeStatus || f.Seq != seq || f.Group != group {
			t.Fatalf("got %s %d in %q, want the status of %d in %q", f.Type, f.Seq, f.Group, seq, group)
		}
	}

	// Two calls about one message, one refusal: both wait for the
	// status asked again, and both get its answer.
	ask("a", `c.status(7)`)
	expectStatus("", 7)
	ask("b", `c.status(7)`)
	expectStatus("", 7)
	c.write(protocol.EncodeRefusal(protocol.ErrRateLimited, "too many requests in flight", protocol.TypeStatus, "", 7, 30))
	expectStatus("", 7) // asked again
	if got := tk.Eval[string](pg, `JSON.stringify([results.a, results.b])`); got != `[null,null]` {
		t.Fatalf("calls settled by the refusal for now: %s", got)
	}
	c.write(protocol.EncodeStatus(7, map[string]protocol.Ticks{"bob": {Delivered: true}}))
	for _, name := range []string{"a", "b"} {
		if got := outcome(name); got != `{"bob":{"delivered":true,"read":false}}` {
			t.Fatalf("status %s: %s", name, got)
		}
	}

	// A group's, refused for now each time (no retry_ms: a backoff):
	// asked again five times, then the call rejects with the refusal.
	ask("g", `c.groupStatus('g1', 9)`)
	expectStatus("g1", 9)
	for range 5 {
		c.write(protocol.EncodeRefusal(protocol.ErrUnavailable, "receipts are unavailable", protocol.TypeStatus, "g1", 9, 0))
		expectStatus("g1", 9)
	}
	c.write(protocol.EncodeRefusal(protocol.ErrUnavailable, "receipts are unavailable", protocol.TypeStatus, "g1", 9, 0))
	if got := outcome("g"); got != `{"error":"ServerError","code":"unavailable"}` {
		t.Fatalf("group status: %s", got)
	}

	// Refused for good, by a gateway that does not say what it
	// refuses: the call rejects at once.
	ask("d", `c.status(8)`)
	expectStatus("", 8)
	c.write(protocol.EncodeError(protocol.ErrUnknownSeq, "not yours", "", 8, 0))
	if got := outcome("d"); got != `{"error":"ServerError","code":"unknown_seq"}` {
		t.Fatalf("status of 8: %s", got)
	}

	// Two calls about 11 naming different recipients; the first gives
	// up (its timeout is due before the refusal's retry_ms): the
	// question asked again is the second's.
	ask("x", `c.status(11, { to: 'carol', timeout: 100 })`)
	if f := c.next(t); f.Type != protocol.TypeStatus || f.Seq != 11 || f.To != "carol" {
		t.Fatalf("got %s %d to %q, want the status of 11 to carol", f.Type, f.Seq, f.To)
	}
	ask("y", `c.status(11, { to: 'bob' })`)
	if f := c.next(t); f.Type != protocol.TypeStatus || f.Seq != 11 || f.To != "bob" {
		t.Fatalf("got %s %d to %q, want the status of 11 to bob", f.Type, f.Seq, f.To)
	}
	c.write(protocol.EncodeRefusal(protocol.ErrRateLimited, "too many requests in flight", protocol.TypeStatus, "", 11, 1000))
	if got := outcome("x"); got != `{"error":"Error"}` {
		t.Fatalf("the first call: %s, want its timeout", got)
	}
	if f := c.next(t); f.Type != protocol.TypeStatus || f.Seq != 11 || f.To != "bob" {
		t.Fatalf("asked again %s %d to %q, want the waiting call's, to bob", f.Type, f.Seq, f.To)
	}
	c.write(protocol.EncodeStatus(11, map[string]protocol.Ticks{"bob": {Delivered: true}}))
	if got := outcome("y"); got != `{"bob":{"delivered":true,"read":false}}` {
		t.Fatalf("status of 11: %s", got)
	}

	// Asked, then the connection drops before the answer: asked again
	// on the next connection.
	ask("r", `c.status(12)`)
	expectStatus("", 12)
	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	pg.WaitFor(stuck, "the second connect", `log.filter(([t]) => t === 'connect').length === 2`)
	expectStatus("", 12)
	c.write(protocol.EncodeStatus(12, map[string]protocol.Ticks{"bob": {Delivered: true}}))
	if got := outcome("r"); got != `{"bob":{"delivered":true,"read":false}}` {
		t.Fatalf("status of 12: %s", got)
	}
	c.fence(t, pg)
	if got := events(pg, "error"); got != `[]` {
		t.Fatalf("error events: %s", got)
	}
}

// A send answered with a retryable error is resent alone, after the
// server's retry_ms, and newer sends wait until it is stored; the sends
// already on the wire behind it are not held.
func TestSDKHoldsNewerSendsBehindARetryableError(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	send(pg, "a")
	send(pg, "b")
	c.expect(t, protocol.TypeSend, "a", "b")
	c.write(protocol.EncodeError(protocol.ErrStoreFailed, "scripted", "a", 0, 30))
	c.sent("b", 1)
	if got := result(t, pg, "b"); got != "seq 1" {
		t.Fatalf("b: %s", got)
	}
	send(pg, "c") // made while a holds: not written before a is stored
	c.expect(t, protocol.TypeSend, "a")
	c.fence(t, pg)
	c.sent("a", 2)
	c.expect(t, protocol.TypeSend, "c")
	c.sent("c", 3)
	if a, cc := result(t, pg, "a"), result(t, pg, "c"); a != "seq 2" || cc != "seq 3" {
		t.Fatalf("a: %s, c: %s", a, cc)
	}
}

// An error resending cannot fix rejects the send, and the sends behind it
// go on.
func TestSDKRejectsOnANonRetryableError(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	send(pg, "bad")
	c.expect(t, protocol.TypeSend, "bad")
	c.write(protocol.EncodeError(protocol.ErrBadMedia, "not your upload", "bad", 0, 0))
	if got := result(t, pg, "bad"); got != "ServerError bad_media" {
		t.Fatalf("bad: %s", got)
	}
	send(pg, "good")
	c.expect(t, protocol.TypeSend, "good")
	// An error frame that answers no call is an event.
	c.write(protocol.EncodeError(protocol.ErrUnknownSeq, "scripted", "", 99, 0))
	pg.WaitFor(stuck, "the error event", `log.some(([t, d]) => t === 'error' && d.code === 'unknown_seq' && d.seq === 99)`)
}

// A message comes to the app once: a redelivery after a reconnect is
// acked again if the app had acked it, and a second stored copy (a new
// seq, the same sender and id) is acked without being shown.
func TestSDKDropsRepeatsAndAcksThem(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.on('message', (m) => { if (m.id !== 'unacked') c.ack(m.seq); })`)
	c.msg("m-1", "bob", 5)
	c.expect(t, protocol.TypeAck, 5)
	c.msg("unacked", "bob", 6) // the app keeps it unacked
	c.fence(t, pg)
	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	c.msg("m-1", "bob", 5)     // the ack was lost with the connection: ack again
	c.msg("unacked", "bob", 6) // the app still holds it: no ack
	c.msg("m-1", "bob", 9)     // a second stored copy
	c.expect(t, protocol.TypeAck, 5, 9)
	c.fence(t, pg)
	c.msg("m-2", "bob", 10)
	c.expect(t, protocol.TypeAck, 10)
	if got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'message').map(([, m]) => m.id + '@' + m.seq))`); got != `["m-1@5","unacked@6","m-2@10"]` {
		t.Fatalf("messages given to the app: %s", got)
	}
	if got := tk.Eval[int](pg, `c.stats.duplicatesDropped`); got != 3 {
		t.Fatalf("duplicates dropped: %d, want 3", got)
	}
}

// Receipts are positions: the SDK turns each into one event per message
// it sent, each tick once, never going back, and acks the receipt.
func TestSDKTurnsReceiptsIntoMessageEvents(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	for i, id := range []string{"a", "b", "c"} {
		send(pg, id)
		c.expect(t, protocol.TypeSend, id)
		c.sent(id, uint64(10+i))
		result(t, pg, id)
	}
	c.write(protocol.AppendReceipt(nil, protocol.StatusDelivered, "bob", "phone", 10, 11, 50, 1795582350000))
	c.expect(t, protocol.TypeAck, 50)
	c.write(protocol.AppendReceipt(nil, protocol.StatusRead, "bob", "phone", 0, 12, 51, 1795582350000))
	c.expect(t, protocol.TypeAck, 51)
	// Lower ticks after a read move nothing.
	c.write(protocol.AppendReceipt(nil, protocol.StatusDelivered, "bob", "laptop", 10, 12, 52, 1795582350000))
	c.expect(t, protocol.TypeAck, 52)
	// A tick that comes before its message's "sent" is given once the
	// "sent" is in, with the device of its receipt.
	send(pg, "d")
	c.expect(t, protocol.TypeSend, "d")
	c.write(protocol.AppendReceipt(nil, protocol.StatusRead, "bob", "phone", 0, 13, 53, 1795582350000))
	c.expect(t, protocol.TypeAck, 53)
	c.sent("d", 13)
	result(t, pg, "d")
	if got := tk.Eval[string](pg, `String(results.d.tick)`); got != "read" {
		t.Fatalf("d resolved with tick %s, want read (it came before its sent)", got)
	}
	if got := tk.Eval[string](pg, `String(results.c.tick)`); got != "undefined" {
		t.Fatalf("c resolved with tick %s, want none", got)
	}
	// A message sent in an earlier page load, remembered by the app.
	js(pg, `c.trackSent('carol', 'old', 7)`)
	c.write(protocol.AppendReceipt(nil, protocol.StatusDelivered, "carol", "phone", 7, 7, 54, 1795582350000))
	c.expect(t, protocol.TypeAck, 54)
	got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'receipt').map(([, r]) => r.status + ' ' + r.id + '@' + r.seq + ' by ' + r.by + '/' + r.device))`)
	want := `["delivered a@10 by bob/phone","delivered b@11 by bob/phone","read a@10 by bob/phone","read b@11 by bob/phone","read c@12 by bob/phone","read d@13 by bob/phone","delivered old@7 by carol/phone"]`
	if got != want {
		t.Fatalf("receipt events:\n%s\nwant\n%s", got, want)
	}
}

// A close that says not to reconnect (4002: the device connected
// elsewhere) stops the client: 'close' with a CloseError, sends rejected.
// Any other close, and refused handshakes, are followed by reconnects.
func TestSDKStopsOnReplacedAndReconnectsOtherwise(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.subscribePresence('bob', 'carol')`)
	c.next(t) // presence_sub
	s.refuse.Store(3)
	c.closeWith(protocol.CloseSlow, "slow")
	c = s.accept(t) // after three refused attempts
	// Followed users are followed again on the new connection.
	if f := c.next(t); f.Type != protocol.TypePresenceSub || strings.Join(f.Users, ",") != "bob,carol" {
		t.Fatalf("after reconnecting: %s %v, want presence_sub bob,carol", f.Type, f.Users)
	}
	send(pg, "late")
	c.expect(t, protocol.TypeSend, "late")
	c.closeWith(protocol.CloseReplaced, "replaced")
	pg.WaitFor(stuck, "the client stopped", `log.some(([t, d]) => t === 'close' && d.error.name === 'CloseError' && d.error.replaced)`)
	if got := result(t, pg, "late"); got != "CloseError 4002" {
		t.Fatalf("a send pending at the 4002: %s", got)
	}
	send(pg, "after")
	if got := result(t, pg, "after"); got != "CloseError 4002" {
		t.Fatalf("a send after the 4002: %s", got)
	}
	// Fence: the stopped client does not reconnect; a second client's
	// connection is the next one the gateway sees (the first would have
	// come back within a millisecond).
	js(pg, fmt.Sprintf(`new sb.Client({ url: %q, token: 'second' }).start()`, s.wsURL()))
	if c := s.accept(t); c.token != "second" {
		t.Fatalf("the next connection has token %q: the stopped client reconnected", c.token)
	}
}

// A first connect the gateway refuses rejects with the refusal's status
// and code, learnt over plain HTTP (a browser cannot read a refused
// handshake).
func TestSDKSaysWhyTheFirstConnectFailed(t *testing.T) {
	s := newScript(t)
	s.deny.Store("token_expired")
	pg := tk.StartBrowser(t).NewPage(t, "sdk")
	pg.Navigate(s.srv.URL + "/")
	pg.WaitFor(stuck, "the SDK imported", `window.ready === true`)
	got := tk.Eval[string](pg, fmt.Sprintf(`sb.connect({ url: %q, token: 'old' }).then(() => 'connected', (e) => e.name + ' ' + e.status + ' ' + e.code)`, s.wsURL()))
	if got != "ConnectError 401 token_expired" {
		t.Fatalf("connect: %s", got)
	}
}

// upload asks for a ticket and sends the bytes as the ticket says: a PUT
// with its headers (the embedded store), or a form with its fields and
// the file last (S3). download checks the digest.
func TestSDKMedia(t *testing.T) {
	s := newScript(t)
	var mu sync.Mutex
	stored := map[string][]byte{}
	s.media = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" && !strings.HasPrefix(r.URL.Path, "/v1/media/blob/") {
			http.Error(w, `{"code":"no_token"}`, 401)
			return
		}
		switch {
		case r.URL.Path == "/v1/media/uploads":
			var req struct {
				Mime string
				Size int64
			}
			_ = json.NewDecoder(r.Body).Decode(&req)
			key := fmt.Sprintf("u/alice/%032d", req.Size)
			ticket := map[string]any{"key": key, "url": s.srv.URL + "/v1/media/blob/" + key + "?sig=x", "method": "PUT",
				"headers": map[string]string{"Content-Type": req.Mime}}
			if req.Mime == "application/pdf" { // this one goes as an S3 form
				ticket["method"], ticket["url"] = "POST", s.srv.URL+"/v1/media/blob/form"
				ticket["fields"] = map[string]string{"key": key, "policy": "p", "x-amz-signature": "s"}
			}
			w.WriteHeader(201)
			_ = json.NewEncoder(w).Encode(ticket)
		case r.URL.Path == "/v1/media/blob/form":
			mr, err := r.MultipartReader()
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			var names []string
			var key string
			for {
				part, err := mr.NextPart()
				if err != nil {
					break
				}
				b, _ := io.ReadAll(part)
				names = append(names, part.FormName())
				if part.FormName() == "key" {
					key = string(b)
				}
				if part.FormName() == "file" {
					mu.Lock()
					stored[key] = b
					mu.Unlock()
				}
			}
			if strings.Join(names, ",") != "key,policy,x-amz-signature,file" {
				http.Error(w, "form parts "+strings.Join(names, ","), 400)
				return
			}
			w.WriteHeader(204)
		case strings.HasPrefix(r.URL.Path, "/v1/media/blob/"):
			key := strings.TrimPrefix(r.URL.Path, "/v1/media/blob/")
			if r.Method == "PUT" {
				if r.URL.Query().Get("sig") != "x" || r.Header.Get("Content-Type") != "image/png" {
					http.Error(w, `{"code":"bad_signature"}`, 403)
					return
				}
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				stored[key] = b
				mu.Unlock()
				w.WriteHeader(201)
				return
			}
			mu.Lock()
			b := stored[key]
			mu.Unlock()
			_, _ = w.Write(b)
		case r.URL.Path == "/v1/media/download":
			key := r.URL.Query().Get("key")
			_ = json.NewEncoder(w).Encode(map[string]any{"key": key, "url": s.srv.URL + "/v1/media/blob/" + key, "method": "GET"})
		default:
			http.NotFound(w, r)
		}
	})
	pg, _ := startSDK(t, s, "")
	got := tk.Eval[string](pg, `(async () => {
		const png = new Blob([new Uint8Array([137, 80, 78, 71, 1, 2, 3])], { type: 'image/png' });
		const m = await c.upload(png);
		const back = new Uint8Array(await (await c.download(m)).arrayBuffer());
		const pdf = await c.upload(new Blob(['%PDF-1.4 hello'], { type: 'application/pdf' }));
		const pdfBack = await (await c.download(pdf)).text();
		let refused = '';
		await c.download({ ...m, sha256: '0'.repeat(64) }).catch((e) => { refused = e.message; });
		return [m.mime, m.size, m.sha256, back.join(','), pdfBack, refused.includes('sha256')].join(' ');
	})()`)
	want := "image/png 7 " + sha256hex([]byte{137, 80, 78, 71, 1, 2, 3}) + " 137,80,78,71,1,2,3 %PDF-1.4 hello true"
	if got != want {
		t.Fatalf("media: %s\nwant %s", got, want)
	}
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// The SDK's own SHA-256, for pages without WebCrypto (plain http on a LAN
// address), agrees with WebCrypto.
func TestSDKPortableSHA256(t *testing.T) {
	s := newScript(t)
	pg := tk.StartBrowser(t).NewPage(t, "sdk")
	pg.Navigate(s.srv.URL + "/")
	pg.WaitFor(stuck, "the SDK imported", `window.ready === true`)
	bad := tk.Eval[[]int](pg, `(async () => {
		const bad = [];
		for (const n of [0, 1, 55, 56, 63, 64, 65, 1000, 70000]) {
			const b = new Uint8Array(n);
			for (let i = 0; i < n; i++) b[i] = (i * 7 + n) & 255;
			const want = [...new Uint8Array(await crypto.subtle.digest('SHA-256', b))].map((x) => x.toString(16).padStart(2, '0')).join('');
			if (sb.sha256Portable(b) !== want) bad.push(n);
		}
		return bad;
	})()`)
	if len(bad) != 0 {
		t.Fatalf("sha256Portable differs from WebCrypto at sizes %v", bad)
	}
}

// blockWebSocket makes a page's network refuse every WebSocket, as some
// proxies and firewalls do: the constructor throws.
const blockWebSocket = `window.WebSocket = class {
	constructor() { throw new DOMException('this network does not carry WebSockets', 'SecurityError'); }
};`

// Where WebSockets are blocked the SDK falls back by itself to the
// gateway's event stream, here a real gateway's from a page of another,
// allowed, origin (so the probe, the stream and the POSTs' preflights all
// cross origins): messages arrive and are acked, a run of sends is stored
// in order, and a WebSocket of the same device replaces it with 4002.
func TestSDKFallsBackToTheEventStream(t *testing.T) {
	s := newScript(t)
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.AllowedOrigins = []string{s.srv.URL}
	g := tk.StartGateway(t, n, cfg)
	bob := tk.Dial(t, g.URL, "bob", "phone")

	pg := tk.StartBrowser(t).NewPage(t, "sdk", blockWebSocket)
	pg.Navigate(s.srv.URL + "/")
	pg.WaitFor(stuck, "the SDK imported", `window.ready === true`)
	js(pg, fmt.Sprintf(`
		window.c = new sb.Client({ url: %q, token: %q, minBackoff: 1, maxBackoff: 20 });
		for (const ev of ['message', 'receipt', 'connect', 'disconnect', 'close', 'error']) {
			c.on(ev, (d) => log.push([ev, d]));
		}
		c.on('message', (m) => c.ack(m.seq));
		c.start().then(() => { window.started = true; }, (e) => { window.started = e.name + ': ' + e.message; })`,
		g.URL, tk.Token(t, "alice", "browser", time.Hour)))
	pg.WaitFor(stuck, "connected", `window.started === true`)
	if tr := tk.Eval[string](pg, `c.transport`); tr != "sse" {
		t.Fatalf("the client connected over %q, want sse", tr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), stuck)
	defer cancel()
	if _, err := bob.Send(ctx, "alice", "b1", json.RawMessage(`"hi alice"`)); err != nil {
		t.Fatal(err)
	}
	pg.WaitFor(stuck, "bob's message", `log.some(([t, d]) => t === 'message' && d.id === 'b1' && d.body === 'hi alice')`)
	if r := tk.RecvReceipt(t, bob, stuck); r.ID != "b1" || r.Status != protocol.StatusDelivered {
		t.Fatalf("bob got %+v, want b1 delivered: the page's ack went nowhere", r)
	}

	js(pg, `for (const id of ['a1', 'a2', 'a3', 'a4', 'a5']) c.send('bob', id, id).then((v) => { results[id] = v.seq; })`)
	var last uint64
	for i := range 5 {
		m := tk.RecvMsg(t, bob, stuck)
		if want := fmt.Sprintf("a%d", i+1); m.ID != want || m.Seq <= last {
			t.Fatalf("bob got %s at seq %d (after %d), want %s in order", m.ID, m.Seq, last, want)
		}
		last = m.Seq
	}
	pg.WaitFor(stuck, "every send confirmed", `Object.keys(results).length === 5`)

	tk.Dial(t, g.URL, "alice", "browser")
	pg.WaitFor(stuck, "replaced", `log.some(([t, d]) => t === 'close' && d.error.name === 'CloseError' && d.error.replaced)`)
}

// Groups: an operation resolves with the group or rejects with the
// refusal's code; sendGroup shares send's order; group messages and
// system messages carry group (and event), and their repeats are told
// apart from a user's message with the same sender and id; typing goes
// both ways with a group.
func TestSDKGroups(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.group('create', 'friends', { name: 'Friends', users: ['bob', 'carol'] }).then((v) => { results.create = v; }, (e) => { results.create = { error: e.name, code: e.code }; })`)
	f := c.next(t)
	if f.Type != protocol.TypeGroup || f.Op != protocol.GroupCreate || f.Group != "friends" || f.Name != "Friends" || fmt.Sprint(f.Users) != "[bob carol]" || f.ID == "" {
		t.Fatalf("create frame %+v", f)
	}
	c.write(protocol.EncodeGroup(f.ID, "friends", "Friends", "alice", 1795582349000,
		[]protocol.GroupMember{{User: "alice", Admin: true}, {User: "bob"}, {User: "carol"}}))
	pg.WaitFor(stuck, "the create answer", `results.create !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.create)`); got != `{"id":"friends","name":"Friends","createdBy":"alice","created":1795582349000,"members":[{"user":"alice","admin":true},{"user":"bob"},{"user":"carol"}],"history":0}` {
		t.Fatalf("create resolved with %s", got)
	}
	// The history setting: asked with the number, 0 too; answered with it.
	for _, n := range []int{3, 0} {
		js(pg, fmt.Sprintf(`c.group('history', 'friends', { history: %d }).then((v) => { results.history = v; })`, n))
		f = c.next(t)
		if f.Op != protocol.GroupHistory || f.History == nil || *f.History != n {
			t.Fatalf("history frame %+v, want %d", f, n)
		}
		c.write(protocol.EncodeGroupWithHistory(f.ID, "friends", "Friends", "alice", 1795582349000, []protocol.GroupMember{{User: "alice", Admin: true}}, n))
		pg.WaitFor(stuck, "the history answer", fmt.Sprintf(`results.history?.history === %d`, n))
		js(pg, `delete results.history`)
	}
	js(pg, `c.group('add', 'friends', { users: ['dave'] }).then((v) => { results.add = v; }, (e) => { results.add = { error: e.name, code: e.code }; })`)
	f = c.next(t)
	if f.Op != protocol.GroupAdd || fmt.Sprint(f.Users) != "[dave]" {
		t.Fatalf("add frame %+v", f)
	}
	c.write(protocol.EncodeError(protocol.ErrNotAdmin, "scripted", f.ID, 0, 0))
	pg.WaitFor(stuck, "the add refusal", `results.add !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.add)`); got != `{"error":"ServerError","code":"not_admin"}` {
		t.Fatalf("add: %s", got)
	}

	// One order for sends to groups and to users.
	js(pg, `c.sendGroup('friends', 'g-1', 'hi all').then((v) => { results['g-1'] = v; }, (e) => { results['g-1'] = { error: e.name, code: e.code }; })`)
	send(pg, "m-1")
	if f = c.next(t); f.Type != protocol.TypeSend || f.ID != "g-1" || f.Group != "friends" || f.To != "" {
		t.Fatalf("first send %+v, want g-1 to friends", f)
	}
	c.expect(t, protocol.TypeSend, "m-1")
	c.sent("g-1", 51)
	c.sent("m-1", 7)
	if got := result(t, pg, "g-1"); got != "seq 51" {
		t.Fatalf("g-1: %s", got)
	}
	if got := result(t, pg, "m-1"); got != "seq 7" {
		t.Fatalf("m-1: %s", got)
	}

	c.write(protocol.AppendGroupMsg(nil, "x", "bob", "phone", "friends", 20, 1795582349000, []byte(`"in the group"`), nil))
	c.write(protocol.AppendGroupEvent(nil, "ev-3", "alice", "browser", "friends", 21, 1795582349000, []byte(`{"op":"add","users":["dave"]}`)))
	c.msg("x", "bob", 22)                                                                                                   // the same sender and id, one to one: another message
	c.write(protocol.AppendGroupMsg(nil, "x", "bob", "phone", "friends", 23, 1795582349000, []byte(`"in the group"`), nil)) // a second stored copy
	c.expect(t, protocol.TypeAck, 23)
	if got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'message').map(([, m]) => [m.id, m.seq, m.group, m.event, m.body]))`); got != `[["x",20,"friends",null,"in the group"],["ev-3",21,"friends",{"op":"add","users":["dave"]},null],["x",22,"",null,"hi"]]` {
		t.Fatalf("messages given to the app: %s", got)
	}

	js(pg, `c.typingGroup('friends')`)
	if f = c.next(t); f.Type != protocol.TypeTyping || f.Group != "friends" || f.To != "" {
		t.Fatalf("typing frame %+v", f)
	}
	c.write(protocol.AppendGroupTyping(nil, "bob", "phone", "friends"))
	pg.WaitFor(stuck, "the typing event", `log.some(([t, d]) => t === 'typing' && d.group === 'friends' && d.from === 'bob')`)

	// A connection lost before the answer, or an unavailable answer:
	// asked again under the same id until answered.
	js(pg, `c.group('add', 'friends', { users: ['erin'] }).then((v) => { results.erin = v; }, (e) => { results.erin = { error: e.name, message: e.message }; })`)
	if f = c.next(t); f.Op != protocol.GroupAdd {
		t.Fatalf("add frame %+v", f)
	}
	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	again := c.next(t)
	for again.Type == protocol.TypeSend { // sends unanswered when the connection went are written again first
		again = c.next(t)
	}
	if again.Type != protocol.TypeGroup || again.ID != f.ID || again.Op != protocol.GroupAdd || fmt.Sprint(again.Users) != "[erin]" {
		t.Fatalf("after a lost connection %+v, want the add again under id %s", again, f.ID)
	}
	c.write(protocol.EncodeError(protocol.ErrUnavailable, "scripted", f.ID, 0, 0))
	if again = c.next(t); again.Type != protocol.TypeGroup || again.ID != f.ID {
		t.Fatalf("after unavailable %+v, want the add again under id %s", again, f.ID)
	}
	c.write(protocol.EncodeGroup(f.ID, "friends", "Friends", "alice", 1795582349000,
		[]protocol.GroupMember{{User: "alice", Admin: true}, {User: "bob"}, {User: "carol"}, {User: "erin"}}))
	pg.WaitFor(stuck, "the add's answer", `results.erin !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.erin.members)`); got != `[{"user":"alice","admin":true},{"user":"bob"},{"user":"carol"},{"user":"erin"}]` {
		t.Fatalf("add across a lost connection and unavailable: %s", tk.Eval[string](pg, `JSON.stringify(results.erin)`))
	}

	// The user's groups, and a settings change, each asked under an id of
	// its own and answered by it; a refusal for now has it asked again.
	js(pg, `c.groups().then((v) => { results.list = v; })`)
	if f = c.next(t); f.Type != protocol.TypeGroup || f.Op != protocol.GroupList || f.Group != "" || f.ID == "" {
		t.Fatalf("list frame %+v", f)
	}
	c.write(protocol.EncodeGroupList(f.ID, []protocol.GroupEntry{{Group: "friends", Name: "Friends", Since: 3}}))
	pg.WaitFor(stuck, "the list", `results.list !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.list)`); got != `[{"group":"friends","name":"Friends","since":3}]` {
		t.Fatalf("groups resolved with %s", got)
	}
	js(pg, `c.settings({ readReceipts: false }).then((v) => { results.settings = v; })`)
	if f = c.next(t); f.Type != protocol.TypeSettings || f.ID == "" || f.ReadReceipts == nil || *f.ReadReceipts {
		t.Fatalf("settings frame %+v", f)
	}
	c.write(protocol.EncodeError(protocol.ErrRateLimited, "scripted", f.ID, 0, 10))
	if again = c.next(t); again.Type != protocol.TypeSettings || again.ID != f.ID {
		t.Fatalf("after rate_limited %+v, want the settings change again under id %s", again, f.ID)
	}
	c.write(protocol.EncodeSettings("q-other", true, protocol.PrivacyNobody, nil)) // not this call's
	c.write(protocol.EncodeSettings(f.ID, false, protocol.PrivacyEveryone, nil))
	pg.WaitFor(stuck, "the settings", `results.settings !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.settings)`); got != `{"readReceipts":false,"lastSeenPrivacy":"everyone","contacts":[]}` {
		t.Fatalf("settings resolved with %s", got)
	}
}

// A group operation waits for a connection no longer than its timeout,
// and rejects then with the last retryable refusal it had; one too large
// for the gateway is refused unwritten (written, it would close the
// connection and go again on every new one).
func TestSDKGroupOpTimesOutWhileOffline(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.group('rename', 'friends', { name: 'x'.repeat(70000) }).then((v) => { results.big = v; }, (e) => { results.big = { error: e.name }; })`)
	pg.WaitFor(stuck, "the rename's rejection", `results.big !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.big)`); got != `{"error":"RangeError"}` {
		t.Fatalf("a rename past the gateway's frame size: %s", got)
	}
	js(pg, `c.group('info', 'friends', { timeout: 500 }).then((v) => { results.info = v; }, (e) => { results.info = { error: e.name, code: e.code }; })`)
	f := c.next(t) // the first frame written: the rename was not
	if f.Op != protocol.GroupInfo {
		t.Fatalf("first group frame %+v, want the info", f)
	}
	c.write(protocol.EncodeError(protocol.ErrUnavailable, "scripted", f.ID, 0, 0))
	if again := c.next(t); again.ID != f.ID {
		t.Fatalf("after unavailable %+v, want the info again under id %s", again, f.ID)
	}
	s.refuse.Store(1 << 20) // no connection comes back
	c.closeWith(protocol.CloseServiceRestart, "restart")
	pg.WaitFor(stuck, "the info's rejection while offline", `results.info !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.info)`); got != `{"error":"ServerError","code":"unavailable"}` {
		t.Fatalf("info past its timeout while offline: %s", got)
	}
}

// Group receipts tick the client's own messages in that group's range,
// not its messages to users with the same seqs; groupStatus asks with
// the group and resolves with the members' ticks and totals, or rejects
// with the error that names its seq.
func TestSDKGroupReceipts(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.sendGroup('friends', 'g-1', 'hi all').then((v) => { results['g-1'] = v; }, (e) => { results['g-1'] = { error: e.name, code: e.code }; })`)
	c.expect(t, protocol.TypeSend, "g-1")
	c.sent("g-1", 51)
	result(t, pg, "g-1")
	send(pg, "m-1")
	c.expect(t, protocol.TypeSend, "m-1")
	c.sent("m-1", 51) // an inbox seq that happens to be the same number
	result(t, pg, "m-1")
	c.write(protocol.AppendGroupReceipt(nil, protocol.StatusDelivered, "friends", "carol", "phone", 40, 51, 60, 1795582350000))
	c.expect(t, protocol.TypeAck, 60)
	c.write(protocol.AppendGroupReceipt(nil, protocol.StatusRead, "friends", "carol", "phone", 40, 51, 61, 1795582350000))
	c.expect(t, protocol.TypeAck, 61)
	c.write(protocol.AppendGroupReceipt(nil, protocol.StatusDelivered, "friends", "bob", "phone", 1, 51, 62, 1795582350000))
	c.expect(t, protocol.TypeAck, 62)
	got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t === 'receipt').map(([, r]) => r.status + ' ' + r.id + '@' + r.seq + ' in ' + r.group + ' by ' + r.by))`)
	if want := `["delivered g-1@51 in friends by carol","read g-1@51 in friends by carol"]`; got != want {
		t.Fatalf("receipt events:\n%s\nwant\n%s", got, want)
	}

	js(pg, `c.groupStatus('friends', 51).then((v) => { results.st = v; }, (e) => { results.st = { error: e.name, code: e.code }; })`)
	f := c.next(t)
	if f.Type != protocol.TypeStatus || f.Group != "friends" || f.Seq != 51 {
		t.Fatalf("status frame %+v", f)
	}
	c.write(protocol.EncodeGroupStatus(51, "friends", map[string]protocol.Ticks{"bob": {Delivered: true}, "carol": {Delivered: true, Read: true}}, true, false))
	pg.WaitFor(stuck, "the group status", `results.st !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.st)`); got != `{"members":{"bob":{"delivered":true,"read":false},"carol":{"delivered":true,"read":true}},"allDelivered":true,"allRead":false}` {
		t.Fatalf("groupStatus resolved with %s", got)
	}
	js(pg, `c.groupStatus('friends', 9).then((v) => { results.st2 = v; }, (e) => { results.st2 = { error: e.name, code: e.code }; })`)
	if f = c.next(t); f.Type != protocol.TypeStatus || f.Seq != 9 {
		t.Fatalf("status frame %+v", f)
	}
	c.write(protocol.EncodeError(protocol.ErrUnknownSeq, "scripted", "", 9, 0))
	pg.WaitFor(stuck, "the group status refusal", `results.st2 !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.st2)`); got != `{"error":"ServerError","code":"unknown_seq"}` {
		t.Fatalf("groupStatus of another's message: %s", got)
	}
}

// At most 64 sends are on the wire unanswered: the rest go out as answers
// come, in order, and after a reconnect the oldest 64 unanswered go first.
func TestSDKKeepsSendsBeyondTheWindowForAnswers(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	const window = 64
	ids := make([]any, window+6)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i+1)
		send(pg, ids[i].(string))
	}
	c.expect(t, protocol.TypeSend, ids[:window]...)
	c.fence(t, pg) // nothing more was written
	c.sent("m1", 1)
	c.sent("m2", 2)
	c.expect(t, protocol.TypeSend, ids[window], ids[window+1])
	c.fence(t, pg)
	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	c.expect(t, protocol.TypeSend, ids[2:2+window]...)
	c.fence(t, pg)
	for i := 2; i < len(ids); i++ {
		c.sent(ids[i].(string), uint64(i+1))
	}
	c.expect(t, protocol.TypeSend, ids[2+window:]...)
	if got := result(t, pg, ids[len(ids)-1].(string)); got != fmt.Sprintf("seq %d", len(ids)) {
		t.Fatalf("the last send: %s", got)
	}
}

// A proxy answering 502 while the gateway behind it restarts is not the
// gateway saying it would take the token (426): the SDK keeps to
// WebSockets, and connects over one once the gateway is back, without
// trying the event stream.
func TestSDKTakesOnlyTheGatewaysAnswerForABlockedWebSocket(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	s.badGateway.Store(6) // the WebSockets and the probes between them
	c.closeWith(protocol.CloseServiceRestart, "restart")
	s.accept(t)
	pg.WaitFor(stuck, "connected again", `log.filter(([t]) => t === 'connect').length === 2`)
	if tr := tk.Eval[string](pg, `c.transport`); tr != "websocket" {
		t.Fatalf("connected over %q, want websocket", tr)
	}
	if n := s.sseTries.Load(); n != 0 {
		t.Fatalf("the SDK asked for the event stream %d times while a proxy answered 502", n)
	}
}

// A send whose frame is larger than the gateway takes (its welcome's
// max_frame) is rejected at once and never written: written, it would
// close the connection (1009) and go first again on every reconnect.
func TestSDKRejectsASendLargerThanTheGatewayTakes(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.send('bob', 'big', 'x'.repeat(70000)).then((v) => { results.big = v; }, (e) => { results.big = { error: e.name, code: '' }; })`)
	if got := result(t, pg, "big"); got != "RangeError " {
		t.Fatalf("a send past max_frame: %q", got)
	}
	c.fence(t, pg) // nothing was written
	send(pg, "m1")
	c.expect(t, protocol.TypeSend, "m1")
	c.sent("m1", 1)
	if got := result(t, pg, "m1"); got != "seq 1" {
		t.Fatalf("m1: %s", got)
	}
}

// Withdrawing the sends on the wire (their signal aborted) frees their
// room in the window: the send waiting for room goes out at once.
func TestSDKWithdrawnSendsLetTheSendWaitingForRoomGo(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `window.ac = new AbortController();
		for (let i = 1; i <= 64; i++) c.send('bob', 'w' + i, 'x', { signal: ac.signal }).catch(() => {})`)
	ids := make([]any, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("w%d", i+1)
	}
	c.expect(t, protocol.TypeSend, ids...)
	send(pg, "next")
	c.fence(t, pg) // waiting for room
	js(pg, `ac.abort()`)
	c.expect(t, protocol.TypeSend, "next")
}

// status asks about a message by its seq; one sent to another region (an
// outbox seq, 2^52 or more) names its recipient, which the SDK remembers
// from the message's "sent", or the caller names. Without one the
// gateway could not tell which region to ask.
func TestSDKStatusNamesTheRecipientAcrossRegions(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	const far = uint64(1)<<52 + 5
	send(pg, "m-1")
	c.expect(t, protocol.TypeSend, "m-1")
	c.sent("m-1", far)
	result(t, pg, "m-1")
	send(pg, "m-2")
	c.expect(t, protocol.TypeSend, "m-2")
	c.sent("m-2", 42)
	result(t, pg, "m-2")

	for _, tc := range []struct {
		call, to string
		seq      uint64
	}{
		{fmt.Sprintf(`c.status(%d)`, far), "bob", far},                        // remembered
		{`c.status(42)`, "", 42},                                              // sent here: no recipient needed
		{fmt.Sprintf(`c.status(%d)`, far+1), "", far + 1},                     // not remembered
		{fmt.Sprintf(`c.status(%d, {to: 'carol'})`, far+1), "carol", far + 1}, // named
	} {
		js(pg, `results.st = undefined; `+tc.call+`.then((v) => { results.st = v; }, (e) => { results.st = { error: e.name, code: e.code }; })`)
		f := c.next(t)
		if f.Type != protocol.TypeStatus || f.Seq != tc.seq || f.To != tc.to || f.Group != "" {
			t.Fatalf("%s wrote %+v, want a status of %d to %q", tc.call, f, tc.seq, tc.to)
		}
		c.write(protocol.EncodeStatus(tc.seq, map[string]protocol.Ticks{"bob": {Delivered: true}}))
		pg.WaitFor(stuck, "the status", `results.st !== undefined`)
		if got := tk.Eval[string](pg, `JSON.stringify(results.st)`); got != `{"bob":{"delivered":true,"read":false}}` {
			t.Fatalf("%s resolved with %s", tc.call, got)
		}
	}
	js(pg, `c.status(7, {to: 'b.ob'}).then((v) => { results.bad = v; }, (e) => { results.bad = { error: e.name }; })`)
	pg.WaitFor(stuck, "the refusal", `results.bad !== undefined`)
	if got := tk.Eval[string](pg, `JSON.stringify(results.bad)`); got != `{"error":"TypeError"}` {
		t.Fatalf("status to a bad id: %s", got)
	}
}

// A group read from its log (docs/GROUP-LOG.md): its messages come with
// gseq and no seq, and the app acks and reads them by group and gseq.
// After a reconnect, one the app acked comes again and is acked by the
// SDK, not given to the app twice; one it still holds is not acked for
// it, and the app's own ack goes on the connection that gave it again.
func TestSDKGroupLog(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.on('message', (m) => { if (m.gseq && m.id !== 'b2') { c.ackGroup(m.group, m.gseq); c.readGroup(m.group, m.gseq); } })`)
	b1 := protocol.AppendGroupLogMsg(nil, "b1", "bob", "phone", "crowd", 70, 1795582349000, []byte(`"hi all"`), nil)
	b2 := protocol.AppendGroupLogMsg(nil, "b2", "bob", "phone", "crowd", 71, 1795582349000, []byte(`"later"`), nil)
	groupFrame := func(typ string, gseq uint64) {
		t.Helper()
		if f := c.next(t); f.Type != typ || f.Group != "crowd" || f.GSeq != gseq || f.Seq != 0 {
			t.Fatalf("next frame %+v, want %s of crowd at %d", *f, typ, gseq)
		}
	}
	c.write(b1)
	groupFrame(protocol.TypeAck, 70)
	groupFrame(protocol.TypeRead, 70)
	c.write(b2)
	c.fence(t, pg) // the app holds b2: nothing acked for it

	c.closeWith(protocol.CloseServiceRestart, "restart")
	c = s.accept(t)
	c.write(b1)
	groupFrame(protocol.TypeAck, 70) // acked by the app before: acked again by the SDK
	c.write(b2)
	c.fence(t, pg) // still held by the app
	js(pg, `c.ackGroup('crowd', 71)`)
	groupFrame(protocol.TypeAck, 71)
	if got := events(pg, "message"); got != `[{"id":"b1","from":"bob","device":"phone","seq":0,"gseq":70,"ts":1795582349000,"body":"hi all","media":null,"group":"crowd","event":null,"to":"","sentSeq":0},{"id":"b2","from":"bob","device":"phone","seq":0,"gseq":71,"ts":1795582349000,"body":"later","media":null,"group":"crowd","event":null,"to":"","sentSeq":0}]` {
		t.Fatalf("the app got %s", got)
	}
	// A read of it on another device of this user: a read_sync by gseq.
	js(pg, `c.on('read_sync', (d) => log.push(['read_sync', d]))`)
	c.write(protocol.AppendGroupLogReadSync(nil, "crowd", "laptop", 71, 90, 1795582352000))
	c.expect(t, protocol.TypeAck, 90)
	if got := events(pg, "read_sync"); got != `[{"peer":"","group":"crowd","device":"laptop","seq":0,"gseq":71,"ts":1795582352000}]` {
		t.Fatalf("read_sync events: %s", got)
	}
}
