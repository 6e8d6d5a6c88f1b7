package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// The HTTP fallback driven by hand over real TCP, as a browser's
// EventSource and fetch would: a GET whose answer is an event stream,
// and POSTs of frames naming its session. Failure messages never include
// a token or a URL that carries one.

// sseEvent is one event of a stream, or a comment (a heartbeat).
type sseEvent struct {
	id, event, data string
	comment         bool
}

// sseStream is one event stream and the POSTs that carry its frames.
type sseStream struct {
	t       *testing.T
	addr    string
	tok     string
	resp    *http.Response
	events  chan sseEvent // closed when the stream ends
	welcome *protocol.Frame
}

// sseHTTP is a client with no timeout of its own (a stream lasts) that
// never reuses connections, so each POST is a request of its own.
var sseHTTP = &http.Client{Transport: &http.Transport{DisableCompression: true, DisableKeepAlives: true}}

// sseGet asks for a stream; the caller reads the answer.
func sseGet(t *testing.T, addr, query string, h http.Header, hc *http.Client) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+gateway.PathSSE+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	if hc == nil {
		hc = sseHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", gateway.PathSSE, err)
	}
	return resp
}

// openSSE opens a stream for tok, given in the query as a browser must,
// and reads its welcome.
func openSSE(t *testing.T, addr, tok string, h http.Header) *sseStream {
	t.Helper()
	return openSSEWith(t, addr, tok, "?access_token="+tok, h, nil)
}

func openSSEWith(t *testing.T, addr, tok, query string, h http.Header, hc *http.Client) *sseStream {
	t.Helper()
	resp := sseGet(t, addr, query, h, hc)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s", gateway.PathSSE, resp.StatusCode, b)
	}
	s := &sseStream{t: t, addr: addr, tok: tok, resp: resp, events: make(chan sseEvent, 8192)}
	t.Cleanup(func() { resp.Body.Close() })
	go s.read()
	e := s.next()
	s.welcome = s.decode(e)
	if s.welcome.Type != protocol.TypeWelcome || e.id != "" {
		t.Fatalf("first event %+v, want a welcome without an id", e)
	}
	return s
}

// read parses the stream as EventSource does, until it ends.
func (s *sseStream) read() {
	defer close(s.events)
	r := bufio.NewReader(s.resp.Body)
	var e sseEvent
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		switch {
		case line == "":
			if data != nil {
				e.data = strings.Join(data, "\n")
				s.events <- e
			}
			e, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			s.events <- sseEvent{comment: true, data: line}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				e.id = value
			case "event":
				e.event = value
			case "data":
				data = append(data, value)
			}
		}
	}
}

// next returns the next event, heartbeats skipped.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				s.t.Fatal("the event stream ended")
			}
			if !e.comment {
				return e
			}
		case <-timeout:
			s.t.Fatalf("no event within %s", wait)
		}
	}
}

func (s *sseStream) decode(e sseEvent) *protocol.Frame {
	s.t.Helper()
	if e.event != "" {
		s.t.Fatalf("event %q (%s), want a frame", e.event, e.data)
	}
	f, err := protocol.DecodeServer([]byte(e.data))
	if err != nil {
		s.t.Fatalf("event data %q: %v", e.data, err)
	}
	return f
}

// nextFrame returns the next event's frame, and the event's id.
func (s *sseStream) nextFrame() (*protocol.Frame, string) {
	s.t.Helper()
	e := s.next()
	return s.decode(e), e.id
}

// post sends frames in one POST with the stream's token and returns the
// status and the body's code.
func (s *sseStream) post(frames ...string) (int, string) {
	s.t.Helper()
	return postSSE(s.t, s.addr, s.welcome.Session, s.tok, nil, strings.Join(frames, "\n"))
}

func postSSE(t *testing.T, addr, sid, tok string, h http.Header, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+gateway.PathSSE+"/"+sid, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	resp, err := sseHTTP.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Code string }
	if len(b) > 0 {
		if err := json.Unmarshal(b, &e); err != nil || e.Code == "" {
			t.Fatalf("POST answered %d with %q, want a JSON body with a code", resp.StatusCode, b)
		}
	}
	return resp.StatusCode, e.Code
}

// mustPost posts frames, which must all reach the session.
func (s *sseStream) mustPost(frames ...string) {
	s.t.Helper()
	if status, code := s.post(frames...); status != http.StatusNoContent {
		s.t.Fatalf("POST answered %d %s, want 204", status, code)
	}
}

// expectClose reads until the close event, which must carry code (and
// reason, unless "*"), and the end of the stream after it. It returns the
// frames that came before.
func (s *sseStream) expectClose(code int, reason string) []*protocol.Frame {
	s.t.Helper()
	var frames []*protocol.Frame
	for {
		e := s.next()
		if e.event != "close" {
			frames = append(frames, s.decode(e))
			continue
		}
		var c struct {
			Type   string
			Code   int
			Reason string
		}
		if err := json.Unmarshal([]byte(e.data), &c); err != nil || c.Type != "close" {
			s.t.Fatalf("close event %q: %v", e.data, err)
		}
		if c.Code != code || (reason != "*" && c.Reason != reason) {
			s.t.Fatalf("closed with %d %q, want %d %q", c.Code, c.Reason, code, reason)
		}
		break
	}
	s.expectEnd()
	return frames
}

// expectEnd waits for the stream to end, with no event before.
func (s *sseStream) expectEnd() {
	s.t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				return
			}
			if !e.comment {
				s.t.Fatalf("event %+v, want the end of the stream", e)
			}
		case <-timeout:
			s.t.Fatal("the stream did not end")
		}
	}
}

// A device chats over the fallback with one on a WebSocket: its sends
// come back as sent events, its messages and receipts carry their stream
// sequence as the event id, and its acks and reads become the other
// side's ticks.
func TestSSEChatWithTicksAndEventIDs(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	bob := tk.Dial(t, g.URL, "bob", "phone")
	alice := openSSE(t, g.Addr, tk.Token(t, "alice", "laptop", time.Hour), nil)

	h := alice.resp.Header
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q", ct)
	}
	if h.Get("Cache-Control") != "no-cache" || h.Get("X-Accel-Buffering") != "no" {
		t.Errorf("headers %v: want Cache-Control: no-cache and X-Accel-Buffering: no", h)
	}
	if w := alice.welcome; w.User != "alice" || w.Device != "laptop" || w.Session == "" || w.MaxFrame == 0 {
		t.Fatalf("welcome %+v", *w)
	}

	// alice → bob: sent, delivered, read.
	alice.mustPost(string(protocol.AppendSend(nil, "a1", "bob", tk.Body("hello bob"))))
	sent, id := alice.nextFrame()
	if sent.Type != protocol.TypeSent || sent.ID != "a1" || sent.Seq == 0 || id != "" {
		t.Fatalf("got %+v (id %q), want sent a1 without an event id", *sent, id)
	}
	m := tk.RecvMsg(t, bob, wait)
	if m.ID != "a1" || m.Seq != sent.Seq || string(m.Body) != `"hello bob"` {
		t.Fatalf("bob got %+v", m)
	}
	bob.Ack(m.Seq)
	rc, id := alice.nextFrame()
	if rc.Type != protocol.TypeReceipt || rc.Status != protocol.StatusDelivered || rc.ToSeq != sent.Seq || id != strconv.FormatUint(rc.Seq, 10) {
		t.Fatalf("got %+v (id %q), want delivered up to %d with its seq as the id", *rc, id, sent.Seq)
	}
	bob.Read(m.Seq)
	rr, id := alice.nextFrame()
	if rr.Type != protocol.TypeReceipt || rr.Status != protocol.StatusRead || id != strconv.FormatUint(rr.Seq, 10) {
		t.Fatalf("got %+v (id %q), want read with its seq as the id", *rr, id)
	}
	// Receipts are acked like messages; both in one POST.
	alice.mustPost(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, rc.Seq)), string(protocol.AppendSeqFrame(nil, protocol.TypeAck, rr.Seq)))

	// bob → alice, with a body that spans lines (JSON whitespace): the
	// event's data lines join back into the frame.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	bs, err := bob.Send(ctx, "alice", "b1", json.RawMessage("{\"text\":\n\"hi alice\"}"))
	if err != nil {
		t.Fatal(err)
	}
	msg, id := alice.nextFrame()
	if msg.Type != protocol.TypeMsg || msg.ID != "b1" || msg.From != "bob" || msg.Seq != bs.Seq || id != strconv.FormatUint(bs.Seq, 10) {
		t.Fatalf("got %+v (id %q), want b1 at seq %d with its seq as the id", *msg, id, bs.Seq)
	}
	if string(msg.Body) != "{\"text\":\n\"hi alice\"}" {
		t.Fatalf("body %q", msg.Body)
	}
	alice.mustPost(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, msg.Seq)), string(protocol.AppendSeqFrame(nil, protocol.TypeRead, msg.Seq)))
	// The ack's delivered tick and the read are asked for at once, so the
	// read may be stored first: it implies delivered, and the SDK then
	// drops the lower tick that follows.
	r := tk.RecvReceipt(t, bob, wait)
	if r.ID != "b1" || r.By != "alice" || (r.Status != protocol.StatusDelivered && r.Status != protocol.StatusRead) {
		t.Fatalf("bob got %+v, want b1 delivered or read by alice", r)
	}
	if r.Status == protocol.StatusDelivered {
		if r := tk.RecvReceipt(t, bob, wait); r.ID != "b1" || r.Status != protocol.StatusRead || r.By != "alice" {
			t.Fatalf("bob got %+v, want b1 read by alice", r)
		}
	}

	// Other frames travel too: typing both ways, settings, status,
	// presence.
	alice.mustPost(`{"type":"typing","to":"bob"}`)
	tk.WaitFor(t, wait, func() error {
		select {
		case ty := <-bob.TypingEvents():
			if ty.From == "alice" {
				return nil
			}
		default:
		}
		return tk.Errorf("bob saw no typing from alice")
	})
	alice.mustPost(`{"type":"settings"}`, `{"type":"status","seq":`+strconv.FormatUint(sent.Seq, 10)+`}`, `{"type":"presence_sub","users":["bob"]}`)
	got := map[string]*protocol.Frame{}
	for len(got) < 3 {
		f, _ := alice.nextFrame()
		got[f.Type] = f
	}
	if st := got[protocol.TypeStatus]; st == nil || !st.Recipients["bob"].Read {
		t.Fatalf("frames %v: want a status with bob's read", got)
	}
	if p := got[protocol.TypePresence]; p == nil || p.User != "bob" || !p.Online {
		t.Fatalf("frames %v: want bob online", got)
	}
	if got[protocol.TypeSettings] == nil {
		t.Fatalf("frames %v: want settings", got)
	}
}

// A reconnect resumes from the device's cursor whatever Last-Event-ID
// says: what was acked does not come again, what was received but not
// acked does, even when the client says it had it, and nothing comes
// twice or is lost.
func TestSSEResumesFromTheCursorNotTheLastEventID(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	bob := tk.Dial(t, g.URL, "bob", "phone")
	tok := tk.Token(t, "alice", "laptop", time.Hour)
	alice := openSSE(t, g.Addr, tok, nil)

	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, send(t, bob, "alice", fmt.Sprintf("m%d", i), "hi").Seq)
	}
	var last string
	for i := range 5 {
		f, id := alice.nextFrame()
		if f.Type != protocol.TypeMsg || f.ID != fmt.Sprintf("m%d", i) || id != strconv.FormatUint(seqs[i], 10) {
			t.Fatalf("got %+v (id %q), want m%d", *f, id, i)
		}
		last = id
	}
	// The first three are acked and settled; the last two only received.
	var acks []string
	for _, s := range seqs[:3] {
		acks = append(acks, string(protocol.AppendSeqFrame(nil, protocol.TypeAck, s)))
	}
	alice.mustPost(acks...)
	tk.WaitFor(t, wait, func() error {
		if c := cursor(t, n, "alice", "laptop"); c != seqs[2] {
			return tk.Errorf("alice's cursor is %d, want %d", c, seqs[2])
		}
		return nil
	})
	alice.resp.Body.Close() // the network drops the stream
	tk.WaitFor(t, wait, func() error {
		if s := g.Server.Sessions(); s != 1 {
			return tk.Errorf("%d sessions, want bob's alone", s)
		}
		return nil
	})

	// As EventSource's own reconnect would: the header. m3 and m4 come
	// again, then the fence.
	again := openSSEWith(t, g.Addr, tok, "?access_token="+tok, http.Header{"Last-Event-ID": {last}}, nil)
	for _, i := range []int{3, 4} {
		f, id := again.nextFrame()
		if f.Type != protocol.TypeMsg || f.ID != fmt.Sprintf("m%d", i) || id != strconv.FormatUint(seqs[i], 10) {
			t.Fatalf("after the reconnect got %+v (id %q), want m%d again", *f, id, i)
		}
		again.mustPost(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, seqs[i])))
	}
	fence := send(t, bob, "alice", "fence-1", "fence")
	if f, id := again.nextFrame(); f.ID != "fence-1" || id != strconv.FormatUint(fence.Seq, 10) {
		t.Fatalf("got %+v, want the fence next", *f)
	}
	again.mustPost(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, fence.Seq)))
	tk.WaitFor(t, wait, func() error {
		if c := cursor(t, n, "alice", "laptop"); c != fence.Seq {
			return tk.Errorf("alice's cursor is %d, want %d", c, fence.Seq)
		}
		return nil
	})
	again.resp.Body.Close()

	// As the SDK does: the query. Everything is settled, so the next
	// thing is the next message.
	third := openSSEWith(t, g.Addr, tok, "?access_token="+tok+"&last_event_id="+strconv.FormatUint(fence.Seq, 10), nil, nil)
	send(t, bob, "alice", "fence-2", "fence")
	if f, _ := third.nextFrame(); f.ID != "fence-2" {
		t.Fatalf("got %+v, want the second fence next", *f)
	}
	// Each of alice's messages had one delivered receipt at bob.
	seen := map[string]bool{}
	for range 6 {
		r := tk.RecvReceipt(t, bob, wait)
		if r.Status != protocol.StatusDelivered || seen[r.ID] {
			t.Fatalf("receipt %+v: not delivered, or twice", r)
		}
		seen[r.ID] = true
	}
}

// Opening a stream is refused as a WebSocket upgrade is: no token, a bad
// or expired one, a foreign origin, a draining gateway; and POSTs need the
// same token, the same device, a live session.
func TestSSERefusesWhatTheWebSocketRefuses(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.AllowedOrigins = []string{"http://app.example:8080"}
	w := newWorld(t, cfg)
	addr := w.g.Addr

	expired := mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("mallory", "x", time.Now().Add(-time.Minute)))
	other, err := gateway.NewHS256Keys([]byte("another-secret-0123456789abcdef-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.Mint("mallory", "x", time.Hour, time.Now(), gateway.TokenRules{})
	good := tk.Token(t, "mallory", "x", time.Hour)
	for _, c := range []struct {
		name, query string
		h           http.Header
		status      int
		code        string
	}{
		{"no token", "", nil, 401, "no_token"},
		{"forged", "?access_token=" + forged, nil, 401, "bad_token"},
		{"expired", "?access_token=" + expired, nil, 401, "token_expired"},
		{"garbage", "?access_token=not.a.jwt", nil, 401, "bad_token"},
		{"foreign origin", "?access_token=" + good, http.Header{"Origin": {"http://evil.example"}}, 403, "bad_origin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := sseGet(t, addr, c.query, c.h, nil)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var body struct{ Code, Message string }
			if resp.StatusCode != c.status || json.Unmarshal(b, &body) != nil || body.Code != c.code || body.Message == "" {
				t.Fatalf("answered %d %s, want %d %s", resp.StatusCode, b, c.status, c.code)
			}
		})
	}

	// An allowed cross-origin page may read the stream and POST to it.
	s := openSSE(t, addr, good, http.Header{"Origin": {"http://app.example:8080"}})
	if o := s.resp.Header.Get("Access-Control-Allow-Origin"); o != "http://app.example:8080" {
		t.Fatalf("Access-Control-Allow-Origin %q", o)
	}
	sid := s.welcome.Session
	for _, c := range []struct {
		name, sid, tok string
		h              http.Header
		status         int
		code           string
	}{
		{"no token", sid, "", nil, 401, "no_token"},
		{"forged token", sid, forged, nil, 401, "bad_token"},
		{"expired token", sid, expired, nil, 401, "token_expired"},
		{"another device's token", sid, tk.Token(t, "mallory", "y", time.Hour), nil, 404, "no_session"},
		{"another user's token", sid, tk.Token(t, "alice", "x", time.Hour), nil, 404, "no_session"},
		{"unknown session", "nosuchsession", good, nil, 404, "no_session"},
		{"foreign origin", sid, good, http.Header{"Origin": {"http://evil.example"}}, 403, "bad_origin"},
	} {
		t.Run("POST "+c.name, func(t *testing.T) {
			status, code := postSSE(t, addr, c.sid, c.tok, c.h, string(protocol.AppendSend(nil, "refused", "sink", tk.Body("x"))))
			if status != c.status || code != c.code {
				t.Fatalf("answered %d %s, want %d %s", status, code, c.status, c.code)
			}
		})
	}
	// None of those was acted on: the fence is the next frame.
	s.mustPost(`{"type":"status","seq":1}`)
	if f, _ := s.nextFrame(); f.Type != protocol.TypeError || f.Code != protocol.ErrUnknownSeq || f.Seq != 1 {
		t.Fatalf("got %+v, want unknown_seq for the fence", *f)
	}
	if n, err := inboxCount(w.n, "sink"); err != nil || n != 0 {
		t.Fatalf("sink's inbox holds %d (err %v): a refused POST was stored", n, err)
	}

	// A browser's preflight for an allowed origin is answered; another's is not.
	for o, want := range map[string]int{"http://app.example:8080": 204, "http://evil.example": 403} {
		req, _ := http.NewRequest(http.MethodOptions, "http://"+addr+gateway.PathSSE+"/"+sid, nil)
		req.Header.Set("Origin", o)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization")
		resp, err := sseHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || (want == 204 && !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")) {
			t.Fatalf("preflight from %s: %d %v, want %d", o, resp.StatusCode, resp.Header, want)
		}
	}

	// After the session ends, a POST to it is refused and acts on nothing.
	s.resp.Body.Close()
	w.waitSessions(t, 2)
	if status, code := postSSE(t, addr, sid, good, nil, string(protocol.AppendSend(nil, "late", "sink", tk.Body("x")))); status != 404 || code != "no_session" {
		t.Fatalf("POST after the end answered %d %s, want 404 no_session", status, code)
	}

	// A draining gateway opens no stream.
	g2 := tk.StartGateway(t, w.n, tk.TestConfig())
	s2 := openSSE(t, g2.Addr, tk.Token(t, "carol", "x", time.Hour), nil)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g2.Server.Shutdown(ctx) }()
	s2.expectClose(protocol.CloseServiceRestart, "gateway shutting down")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.healthy(t)
}

// Bad frames over POST get the WebSocket's answers on the stream; a body
// over the frame limit or not UTF-8 closes the session as a WebSocket
// frame would (1009, 1007), and acts on nothing; a flood closes with 1008.
// Everyone else carries on, and the stream holds only what was stored.
func TestSSEBadInputIsAnsweredAndHarmsNoOne(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.MaxFrameBytes = 1024
	cfg.FrameRate, cfg.FrameBurst = 0.001, 3 // no refill during the test
	cfg.FloodStrikes = 5
	w := newWorld(t, cfg)
	tok := tk.Token(t, "mallory", "x", time.Hour)

	s := openSSE(t, w.g.Addr, tok, nil)
	s.mustPost(`{"type":`, `{"type":"nope"}`, `{"type":"send","id":"bad id","to":"sink","body":1}`)
	for _, want := range []protocol.ErrorCode{protocol.ErrBadJSON, protocol.ErrUnknownType, protocol.ErrBadID} {
		if f, _ := s.nextFrame(); f.Type != protocol.TypeError || f.Code != want {
			t.Fatalf("got %+v, want error %s", *f, want)
		}
	}
	// Over the frame limit: 413, and the session closes with 1009.
	big := string(protocol.AppendSend(nil, "big", "sink", tk.Body(strings.Repeat("x", 1100))))
	if status, code := s.post(big); status != http.StatusRequestEntityTooLarge || code != "too_large" {
		t.Fatalf("oversized POST answered %d %s, want 413 too_large", status, code)
	}
	s.expectClose(protocol.CloseTooBig, "*")
	w.waitSessions(t, 2)
	w.healthy(t)

	// Not UTF-8: 400, and the session closes with 1007; the valid send
	// before it in the same body is not stored either.
	s = openSSE(t, w.g.Addr, tok, nil)
	body := string(protocol.AppendSend(nil, "before", "sink", tk.Body("ok"))) + "\n" + `{"type":"send","id":"u","to":"sink","body":"` + "\xff\xfe" + `"}`
	if status, code := postSSE(t, w.g.Addr, s.welcome.Session, tok, nil, body); status != http.StatusBadRequest || code != "invalid_utf8" {
		t.Fatalf("invalid UTF-8 POST answered %d %s, want 400 invalid_utf8", status, code)
	}
	s.expectClose(protocol.CloseInvalidData, "*")
	w.waitSessions(t, 2)
	w.healthy(t)

	// A flood: 3 frames fit the burst, 4 get rate_limited, the 5th
	// refusal closes with 1008 flood, and the POST says the session ended
	// partway. (Another device: the one above spent its burst, and its
	// buckets outlive its sessions.)
	s = openSSE(t, w.g.Addr, tk.Token(t, "mallory", "flood", time.Hour), nil)
	var frames []string
	for i := range 3 + 5 + 2 {
		frames = append(frames, `{"type":"ack","seq":`+strconv.Itoa(i+1)+`}`)
	}
	if status, code := s.post(frames...); status != http.StatusGone || code != "session_ended" {
		t.Fatalf("flooding POST answered %d %s, want 410 session_ended", status, code)
	}
	got := s.expectClose(protocol.ClosePolicy, protocol.ReasonFlood)
	var unknown, limited int
	for _, f := range got {
		switch {
		case f.Type == protocol.TypeError && f.Code == protocol.ErrUnknownSeq:
			unknown++
		case f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited && f.RetryMS > 0:
			limited++
		default:
			t.Errorf("unexpected frame %+v", *f)
		}
	}
	if unknown != 3 || limited != 4 {
		t.Fatalf("%d unknown_seq and %d rate_limited answers, want 3 and 4", unknown, limited)
	}
	w.waitSessions(t, 2)
	w.healthy(t)
	if n, err := inboxCount(w.n, "sink"); err != nil || n != 0 {
		t.Fatalf("sink's inbox holds %d (err %v), want nothing", n, err)
	}
}

// One session per device whatever the transport: a WebSocket of the same
// device replaces an event stream, which gets 4002 as its last event, and
// a stream replaces a WebSocket the same way.
func TestSSEAndWebSocketReplaceEachOther(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	tok := tk.Token(t, "alice", "laptop", time.Hour)
	s := openSSE(t, g.Addr, tok, nil)

	r := dialRaw(t, websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}, g.URL, bearer(tok))
	s.expectClose(protocol.CloseReplaced, "replaced")
	if status, code := s.post(`{"type":"settings"}`); status != 404 || code != "no_session" {
		t.Fatalf("POST to the replaced stream answered %d %s, want 404 no_session", status, code)
	}

	again := openSSE(t, g.Addr, tok, nil)
	r.expectClose(protocol.CloseReplaced, "replaced")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	sent := send(t, bob, "alice", "after", "after the replacements")
	if f, _ := again.nextFrame(); f.Type != protocol.TypeMsg || f.ID != "after" || f.Seq != sent.Seq {
		t.Fatalf("got %+v, want the message on the stream that replaced the WebSocket", *f)
	}
	tk.WaitFor(t, wait, func() error {
		if s := g.Server.Sessions(); s != 2 {
			return tk.Errorf("%d sessions, want alice's stream and bob's", s)
		}
		return nil
	})
}

// The stream carries a heartbeat comment at the ping interval, with no
// frame to send.
func TestSSEHeartbeats(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.PingInterval, cfg.PongTimeout = 20*time.Millisecond, 10*time.Second
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, cfg)
	s := openSSE(t, g.Addr, tk.Token(t, "alice", "laptop", time.Hour), nil)
	for beats := 0; beats < 3; {
		select {
		case e, ok := <-s.events:
			if !ok {
				t.Fatal("the stream ended")
			}
			if !e.comment {
				t.Fatalf("event %+v on an idle stream", e)
			}
			beats++
		case <-time.After(wait):
			t.Fatalf("%d heartbeats within %s", beats, wait)
		}
	}
}

// A client that stops reading its stream is closed as slow (4001) once a
// write stalls, and loses nothing: what it had not acked comes on its next
// connection, in order and once.
func TestSSEClientThatNeverReadsIsClosedAndLosesNothing(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.WriteTimeout = 300 * time.Millisecond
	cfg.MaxInflight, cfg.MaxPendingSends = 16, 8
	cfg.OutboundQueue = 88
	cfg.MaxFrameBytes = 1000 << 10
	cfg.SendRate, cfg.SendBurst = 1000, 1000
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g.URL, "alice", "phone")

	// bob reads the welcome and nothing more, through a small receive
	// buffer, so the server's writes stall once its send buffer is full.
	small := &http.Client{Transport: &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		},
	}}
	tok := tk.Token(t, "bob", "phone", time.Hour)
	stalled := sseGet(t, g.Addr, "?access_token="+tok, nil, small)
	defer stalled.Body.Close()
	r := bufio.NewReader(stalled.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q, %v: want the welcome", line, err)
	}
	tk.WaitFor(t, wait, func() error {
		if s := g.Server.Sessions(); s != 2 {
			return tk.Errorf("%d sessions, want 2", s)
		}
		return nil
	})

	// 24 messages of 900 KB: far more than socket buffers hold.
	const count = 24
	body := strings.Repeat("b", 900<<10)
	for i := range count {
		send(t, alice, "bob", fmt.Sprintf("s%02d", i), body)
	}
	tk.WaitFor(t, 3*wait, func() error {
		if s := g.Server.Sessions(); s != 1 {
			return tk.Errorf("%d sessions, want 1: the non-reading client was not closed", s)
		}
		return nil
	})
	if m, err := g.Metrics(); err != nil || !strings.Contains(m, `switchboard_gateway_closes_total{code="4001"} 1`) {
		t.Fatalf("no close 4001 counted (%v)", err)
	}
	if floor := cursor(t, n, "bob", "phone"); floor != 0 {
		t.Fatalf("bob's cursor moved to %d without an ack", floor)
	}

	// bob comes back over the fallback and reads: everything, in order,
	// once. He comes through a second gateway with the default write
	// deadline, as TestClientThatNeverReadsIsClosedAndLosesNothing does
	// over a WebSocket: this one's 300 ms, there to close the stalled
	// client quickly, would also close a prompt reader whose process a
	// loaded machine leaves unscheduled for 300 ms while ~20 MB of
	// backlog is written to it (the POST of its ack then finds no session).
	g2 := tk.StartGateway(t, n, tk.TestConfig())
	s := openSSE(t, g2.Addr, tok, nil)
	var last uint64
	for i := range count {
		f, id := s.nextFrame()
		if want := fmt.Sprintf("s%02d", i); f.Type != protocol.TypeMsg || f.ID != want || f.Seq <= last || id != strconv.FormatUint(f.Seq, 10) || len(f.Body) != len(body)+2 {
			t.Fatalf("message %d is %s seq %d (last %d), want %s in order", i, f.ID, f.Seq, last, want)
		}
		last = f.Seq
		s.mustPost(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)))
	}
	send(t, alice, "bob", "fence", "fence")
	if f, _ := s.nextFrame(); f.ID != "fence" {
		t.Fatalf("got %s before the fence", f.ID)
	}
}

// A client that reads every event as it arrives, on a link slower than
// the gateway's (2 MB/s here), is not closed as slow when a backlog of
// 12 MB is written to it at once: WriteTimeout bounds each write of up to
// 64 KiB of events, as over a WebSocket, not the whole backlog (which this
// link takes 6 s to carry, three times the deadline).
func TestSSEPromptReaderWithBacklogIsNotClosedAsSlow(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.WriteTimeout = 2 * time.Second
	cfg.MaxFrameBytes = 256 << 10
	cfg.SendRate, cfg.SendBurst = 1000, 1000
	g := startWithBacklog(t, cfg)

	throttled := &http.Client{Transport: &http.Transport{
		DisableCompression: true,
		DialContext:        throttledDial(2 << 20),
	}}
	tok := tk.Token(t, "bob", "phone", time.Hour)
	s := openSSEWith(t, g.Addr, tok, "?access_token="+tok, nil, throttled)
	for i := range backlogCount {
		f, _ := s.nextFrame() // fails if the stream ends: closed as slow
		if want := fmt.Sprintf("s%02d", i); f.Type != protocol.TypeMsg || f.ID != want {
			t.Fatalf("event %d is %s %s, want msg %s", i, f.Type, f.ID, want)
		}
		s.mustPost(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)))
	}
	if m, err := g.Metrics(); err != nil || !strings.Contains(m, `switchboard_gateway_closes_total{code="4001"} 0`) {
		t.Fatalf("a close 4001 was counted (%v)", err)
	}
}

// Neither the stream's token (in its URL, as EventSource must send it)
// nor a POST's, nor a body, reaches the log, at debug level, on any path:
// a stream, its POSTs, refusals, malformed requests.
func TestSSELogsNoTokenOrBody(t *testing.T) {
	n := tk.StartNATS(t)
	logs := &tk.LogBuffer{}
	g := tk.StartGatewayLog(t, n, tk.TestConfig(), logs.Logger())
	bob := tk.Dial(t, g.URL, "bob", "phone")
	tok := tk.Token(t, "alice", "laptop", time.Hour)
	const secret = "a-body-no-log-may-hold"

	s := openSSEWith(t, g.Addr, tok, "?access_token="+tok+"&last_event_id=7", nil, nil)
	s.mustPost(string(protocol.AppendSend(nil, "b1", "bob", tk.Body(secret))))
	if f, _ := s.nextFrame(); f.Type != protocol.TypeSent {
		t.Fatalf("got %+v, want sent", *f)
	}
	m := tk.RecvMsg(t, bob, wait)
	bob.Ack(m.Seq)
	send(t, bob, "alice", "b2", secret)
	s.mustPost(`{"type":"send","id":"x","to":"bob","body":"` + secret + `"`) // bad JSON, quoted in no log
	expired := mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("alice", "laptop", time.Now().Add(-time.Minute)))
	postSSE(t, g.Addr, s.welcome.Session, expired, nil, secret)
	postSSE(t, g.Addr, "nosuchsession", tok, nil, secret)
	resp := sseGet(t, g.Addr, "?access_token="+expired, nil, nil)
	resp.Body.Close()
	for _, req := range []string{
		"GET " + gateway.PathSSE + "?access_token=" + tok + " HTTP/1.1\r\nHost: " + g.Addr + "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"POST " + gateway.PathSSE + "/" + s.welcome.Session + " HTTP/1.1\r\nHost: " + g.Addr + "\r\nAuthorization: Bearer " + tok + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n" + secret,
	} {
		rawExchange(t, g.Addr, req)
	}
	s.resp.Body.Close()
	tk.WaitFor(t, wait, func() error {
		if s := g.Server.Sessions(); s != 1 {
			return tk.Errorf("%d sessions, want bob's alone", s)
		}
		return nil
	})
	out := logs.String()
	if !strings.Contains(out, "event stream resumed") {
		t.Fatalf("the log has no line for the stream (is it at debug level?):\n%s", out)
	}
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	for what, s := range map[string]string{"the token": tok, "the token's signature": sig, "the expired token": expired, "a body": secret} {
		if strings.Contains(out, s) {
			t.Errorf("the log holds %s", what)
		}
	}
}

// Plain HTTP to the WebSocket's path with a good token says the gateway
// would take it (426), which is how a client tells a WebSocket stopped on
// the way from a refusal; an allowed page of another origin may read that
// answer and the refusals, a foreign one may not.
func TestPlainHTTPToTheWebSocketPathSaysUpgradeRequired(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.AllowedOrigins = []string{"http://app.example:8080"}
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, cfg)
	good := tk.Token(t, "alice", "laptop", time.Hour)
	for _, c := range []struct {
		name, query, origin string
		status              int
		code, acao          string
	}{
		{"good token", "?access_token=" + good, "", 426, "upgrade_required", ""},
		{"allowed origin", "?access_token=" + good, "http://app.example:8080", 426, "upgrade_required", "http://app.example:8080"},
		{"allowed origin, no token", "", "http://app.example:8080", 401, "no_token", "http://app.example:8080"},
		{"foreign origin", "?access_token=" + good, "http://evil.example", 403, "bad_origin", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+g.Addr+gateway.PathWS+c.query, nil)
			if c.origin != "" {
				req.Header.Set("Origin", c.origin)
			}
			resp, err := sseHTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var body struct{ Code string }
			if resp.StatusCode != c.status || json.Unmarshal(b, &body) != nil || body.Code != c.code {
				t.Fatalf("answered %d %s, want %d %s", resp.StatusCode, b, c.status, c.code)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != c.acao {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, c.acao)
			}
		})
	}
	if s := g.Server.Sessions(); s != 0 {
		t.Fatalf("%d sessions: a plain request started one", s)
	}
}

// rawStream opens an event stream with a hand-written request line of
// version proto, and returns the status line, the headers and the body.
func rawStream(t *testing.T, addr, tok, proto string) (string, http.Header, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, "GET "+gateway.PathSSE+"?access_token="+tok+" "+proto+"\r\nHost: "+addr+"\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	status, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("status line: %v", err)
	}
	h := http.Header{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("headers: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return strings.TrimSpace(status), h, r
		}
		k, v, _ := strings.Cut(line, ":")
		h.Add(k, strings.TrimSpace(v))
	}
}

// An HTTP/1.0 client, or a proxy speaking HTTP/1.0 to the gateway (the
// kind of network the fallback is for), cannot read chunked encoding and
// must not be sent it: its stream is the events as they are, ended by
// the connection's close. An HTTP/1.1 client gets chunks.
func TestSSEToAnHTTP10ClientIsNotChunked(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	status, h, r := rawStream(t, g.Addr, tk.Token(t, "alice", "laptop", time.Hour), "HTTP/1.0")
	if !strings.Contains(status, " 200 ") || h.Get("Transfer-Encoding") != "" || h.Get("Connection") != "close" {
		t.Fatalf("answered %q with %v, want 200, no Transfer-Encoding, Connection: close", status, h)
	}
	line := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimRight(l, "\n")
	}
	first := line()
	if f, err := protocol.DecodeServer([]byte(strings.TrimPrefix(first, "data: "))); !strings.HasPrefix(first, "data: ") || err != nil || f.Type != protocol.TypeWelcome {
		t.Fatalf("the stream's first line is %q (%v), want the welcome's data line", first, err)
	}
	// A message comes as its lines, nothing between them.
	bob := tk.Dial(t, g.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sent, err := bob.Send(ctx, "alice", "b1", tk.Body("hi"))
	if err != nil {
		t.Fatal(err)
	}
	seq := sent.Seq
	var lines []string
	for l := line(); !strings.HasPrefix(l, "data: "); l = line() {
		if l != "" && !strings.HasPrefix(l, ":") { // a blank line or a heartbeat between events
			lines = append(lines, l)
		}
	}
	if want := "id: " + strconv.FormatUint(seq, 10); len(lines) != 1 || lines[0] != want {
		t.Fatalf("lines before the message's data %q, want only %q", lines, want)
	}

	_, h11, r11 := rawStream(t, g.Addr, tk.Token(t, "carol", "laptop", time.Hour), "HTTP/1.1")
	size, err := r11.ReadString('\n')
	if _, perr := strconv.ParseUint(strings.TrimSpace(size), 16, 32); h11.Get("Transfer-Encoding") != "chunked" || err != nil || perr != nil {
		t.Fatalf("HTTP/1.1: Transfer-Encoding %q, first line %q: want chunks", h11.Get("Transfer-Encoding"), size)
	}
}
