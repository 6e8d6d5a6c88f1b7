package gateway_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// These tests speak the wire protocol by hand, as a hostile or broken client
// would, and check the gateway's answers and that nobody else notices.
// Failure messages never include a token or a URL that carries one.

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// mintRaw signs arbitrary claims, for tokens Keys.Mint refuses to make.
func mintRaw(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("signing a test token: %v", err)
	}
	return tok
}

func claims(sub, dev string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "dev": dev, "iat": time.Now().Unix(), "exp": exp.Unix()}
}

func rawDial(d websocket.Dialer, u string, h http.Header) (*websocket.Conn, *http.Response, error) {
	if d.HandshakeTimeout == 0 {
		d.HandshakeTimeout = wait
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return d.DialContext(ctx, u, h)
}

// expectRefused checks that the upgrade is answered with status and a JSON
// body carrying code, and that no session was started.
func expectRefused(t *testing.T, u string, h http.Header, protos []string, status int, code string) {
	t.Helper()
	ws, resp, err := rawDial(websocket.Dialer{Subprotocols: protos}, u, h)
	if err == nil {
		ws.Close()
		t.Fatalf("handshake accepted, want %d %s", status, code)
	}
	if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil {
		t.Fatalf("handshake failed with %v, want an HTTP %d answer", err, status)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("status %d (body %s), want %d %s", resp.StatusCode, b, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content type %q, want application/json", ct)
	}
	var body struct{ Code, Message string }
	if err := json.Unmarshal(b, &body); err != nil || body.Code != code || body.Message == "" {
		t.Fatalf("body %s (%v), want code %q and a message", b, err, code)
	}
	if status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("401 without a WWW-Authenticate header")
	}
}

// raw is a WebSocket connection driven frame by frame.
type raw struct {
	t       *testing.T
	ws      *websocket.Conn
	welcome *protocol.Frame
}

// dialRaw upgrades with d and reads the welcome frame.
func dialRaw(t *testing.T, d websocket.Dialer, u string, h http.Header) *raw {
	t.Helper()
	ws, resp, err := rawDial(d, u, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("handshake refused: %v (status %d)", err, status)
	}
	t.Cleanup(func() { ws.Close() })
	r := &raw{t: t, ws: ws}
	r.welcome = r.next()
	if r.welcome.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %+v, want welcome", *r.welcome)
	}
	return r
}

// connectRaw connects user/device with a valid token and the v1 subprotocol.
func connectRaw(t *testing.T, g *tk.Gateway, user, device string) *raw {
	t.Helper()
	return dialRaw(t, websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}, g.URL,
		bearer(tk.Token(t, user, device, time.Hour)))
}

func (r *raw) write(frame string) {
	r.t.Helper()
	_ = r.ws.SetWriteDeadline(time.Now().Add(wait))
	if err := r.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// writeJSON writes v marshalled, so odd ids are still valid JSON.
func (r *raw) writeJSON(v any) {
	r.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(string(b))
}

// next reads the next frame. Like a browser, it fails on a text frame
// that is not valid UTF-8 (RFC 6455 §8.1).
func (r *raw) next() *protocol.Frame {
	r.t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(wait))
	_, data, err := r.ws.ReadMessage()
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return r.decode(data)
}

func (r *raw) decode(data []byte) *protocol.Frame {
	r.t.Helper()
	if !utf8.Valid(data) {
		r.t.Fatalf("server frame %q is not valid UTF-8: a browser fails the connection on it", data)
	}
	f, err := protocol.DecodeServer(data)
	if err != nil {
		r.t.Fatalf("server frame %q: %v", data, err)
	}
	return f
}

// expectError reads the next frame, which must be an error with code and
// the given id and seq.
func (r *raw) expectError(code protocol.ErrorCode, id string, seq uint64) *protocol.Frame {
	r.t.Helper()
	f := r.next()
	if f.Type != protocol.TypeError || f.Code != code || f.ID != id || f.Seq != seq {
		r.t.Fatalf("got %+v, want error %s with id %q seq %d", *f, code, id, seq)
	}
	if f.Message == "" {
		r.t.Errorf("error frame %s without a message", code)
	}
	return f
}

// send sends a valid message and waits for its "sent".
func (r *raw) send(to, id string) *protocol.Frame {
	r.t.Helper()
	r.write(string(protocol.AppendSend(nil, id, to, tk.Body("valid "+id))))
	f := r.next()
	if f.Type != protocol.TypeSent || f.ID != id || f.Seq == 0 || f.Dup {
		r.t.Fatalf("got %+v, want sent for %s", *f, id)
	}
	return f
}

// expectClose reads until the connection fails; it must end with a close
// frame of code (and reason, unless reason is "*"). It returns the frames
// that came before.
func (r *raw) expectClose(code int, reason string) []*protocol.Frame {
	r.t.Helper()
	var frames []*protocol.Frame
	_ = r.ws.SetReadDeadline(time.Now().Add(wait))
	for {
		_, data, err := r.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				r.t.Fatalf("connection ended with %v, want close %d %q", err, code, reason)
			}
			if ce.Code != code || (reason != "*" && ce.Text != reason) {
				r.t.Fatalf("closed with %d %q, want %d %q", ce.Code, ce.Text, code, reason)
			}
			return frames
		}
		frames = append(frames, r.decode(data))
	}
}

// world is a gateway with a well-behaved pair, alice and bob, that must
// keep working whatever other connections do, and the number of messages
// INBOX must hold.
type world struct {
	n          *tk.NATS
	g          *tk.Gateway
	alice, bob *client.Client
	stored     uint64
	rounds     int
	lastSeq    uint64 // seq of the last message alice sent bob
}

func newWorld(t *testing.T, cfg gateway.Config) *world {
	t.Helper()
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, cfg)
	w := &world{n: n, g: g, alice: tk.Dial(t, g.URL, "alice", "phone"), bob: tk.Dial(t, g.URL, "bob", "phone")}
	w.waitSessions(t, 2)
	return w
}

// healthy has alice send bob a message, bob ack it and alice get the
// delivered receipt, then checks INBOX holds exactly what was stored.
func (w *world) healthy(t *testing.T) {
	t.Helper()
	w.rounds++
	id := fmt.Sprintf("ok-%d", w.rounds)
	s := send(t, w.alice, "bob", id, "still fine")
	m := tk.RecvMsg(t, w.bob, wait)
	if m.ID != id || m.From != "alice" || m.Seq != s.Seq || string(m.Body) != `"still fine"` {
		t.Fatalf("bob got %+v, want %s at seq %d", m, id, s.Seq)
	}
	w.bob.Ack(m.Seq)
	if r := tk.RecvReceipt(t, w.alice, wait); r.ID != id || r.Status != protocol.StatusDelivered || r.By != "bob" {
		t.Fatalf("alice got receipt %+v, want %s delivered by bob", r, id)
	}
	w.lastSeq = s.Seq
	w.stored += 2 // the message and its receipt
	w.checkStored(t)
	if st := w.bob.Stats(); st.Connects != 1 || st.DuplicatesDropped != 0 {
		t.Fatalf("bob's client %+v: it was disconnected or got a message twice", st)
	}
	if st := w.alice.Stats(); st.Connects != 1 {
		t.Fatalf("alice's client %+v: it was disconnected", st)
	}
}

// checkStored waits until INBOX holds exactly w.stored messages.
func (w *world) checkStored(t *testing.T) {
	t.Helper()
	tk.WaitFor(t, wait, func() error {
		n, err := inboxCount(w.n, "")
		if err != nil || n != w.stored {
			return tk.Errorf("INBOX holds %d messages (err %v), want %d", n, err, w.stored)
		}
		return nil
	})
}

// inboxCount returns how many messages INBOX holds, or only those to user.
func inboxCount(n *tk.NATS, user string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := n.JS.Stream(ctx, "INBOX")
	if err != nil {
		return 0, err
	}
	if user == "" {
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}
	subj := "inbox." + user
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[subj], nil
}

func (w *world) waitSessions(t *testing.T, want int) {
	t.Helper()
	tk.WaitFor(t, wait, func() error {
		if got := w.g.Server.Sessions(); got != want {
			return tk.Errorf("%d sessions, want %d", got, want)
		}
		return nil
	})
}

func TestHandshakeRefusesBadTokensAndSubprotocols(t *testing.T) {
	w := newWorld(t, tk.TestConfig())
	wsURL := w.g.URL
	v1 := []string{protocol.Subprotocol}
	hour := time.Now().Add(time.Hour)
	other := []byte("another-secret-0123456789abcdefghijklmnop")

	for _, tc := range []struct {
		name   string
		h      http.Header
		status int
		code   string
	}{
		{"no token", nil, 401, "no_token"},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, 401, "no_token"},
		{"not a bearer scheme", http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}}, 401, "no_token"},
		{"malformed", bearer("not-a-jwt"), 401, "bad_token"},
		{"three garbage parts", bearer("aaa.bbb.ccc"), 401, "bad_token"},
		{"forged with another secret", bearer(mintRaw(t, jwt.SigningMethodHS256, other, claims("mallory", "d", hour))), 401, "bad_token"},
		{"wrong algorithm", bearer(mintRaw(t, jwt.SigningMethodHS512, tk.Secret, claims("mallory", "d", hour))), 401, "bad_token"},
		{"alg none", bearer(mintRaw(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("mallory", "d", hour))), 401, "bad_token"},
		{"no exp", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, jwt.MapClaims{"sub": "mallory", "dev": "d"})), 401, "bad_token"},
		{"expired", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("mallory", "d", time.Now().Add(-time.Minute)))), 401, "token_expired"},
		{"sub with dot", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("bob.phone", "d", hour))), 401, "bad_token"},
		{"sub with star", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("*", "d", hour))), 401, "bad_token"},
		{"sub with gt", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("bob>", "d", hour))), 401, "bad_token"},
		{"sub with space", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("bob smith", "d", hour))), 401, "bad_token"},
		{"sub empty", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("", "d", hour))), 401, "bad_token"},
		{"dev with dot", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("mallory", "a.b", hour))), 401, "bad_token"},
		{"dev missing", bearer(mintRaw(t, jwt.SigningMethodHS256, tk.Secret, jwt.MapClaims{"sub": "mallory", "exp": hour.Unix()})), 401, "bad_token"},
	} {
		t.Run(tc.name, func(t *testing.T) { expectRefused(t, wsURL, tc.h, v1, tc.status, tc.code) })
	}

	t.Run("control: a well-formed raw token is accepted", func(t *testing.T) {
		// So each refusal above is down to the one thing it changes.
		tok := mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("mallory", "d", hour))
		r := dialRaw(t, websocket.Dialer{Subprotocols: v1}, wsURL, bearer(tok))
		if r.welcome.User != "mallory" || r.welcome.Device != "d" {
			t.Fatalf("welcome %+v, want mallory/d", *r.welcome)
		}
	})
	t.Run("token in query", func(t *testing.T) {
		q := wsURL + "?access_token=" + url.QueryEscape(tk.Token(t, "qa", "browser", time.Hour))
		r := dialRaw(t, websocket.Dialer{Subprotocols: v1}, q, nil)
		if r.welcome.User != "qa" || r.welcome.Device != "browser" || r.welcome.Protocol != protocol.Version {
			t.Fatalf("welcome %+v, want qa/browser", *r.welcome)
		}
		r.send("sink", "q-1")
		w.stored++
	})
	t.Run("bad token in query", func(t *testing.T) {
		expectRefused(t, wsURL+"?access_token=not-a-jwt", nil, v1, 401, "bad_token")
		expired := mintRaw(t, jwt.SigningMethodHS256, tk.Secret, claims("qa", "browser", time.Now().Add(-time.Minute)))
		expectRefused(t, wsURL+"?access_token="+url.QueryEscape(expired), nil, v1, 401, "token_expired")
	})
	t.Run("only unknown subprotocols", func(t *testing.T) {
		h := bearer(tk.Token(t, "sp", "d1", time.Hour))
		expectRefused(t, wsURL, h, []string{"chat.v9"}, 400, "bad_subprotocol")
		expectRefused(t, wsURL, h, []string{"switchboard.v2.json", "switchboard.v1.proto"}, 400, "bad_subprotocol")
	})
	t.Run("v1 among others is chosen", func(t *testing.T) {
		r := dialRaw(t, websocket.Dialer{Subprotocols: []string{"chat.v9", protocol.Subprotocol}}, wsURL,
			bearer(tk.Token(t, "sp", "d2", time.Hour)))
		if got := r.ws.Subprotocol(); got != protocol.Subprotocol {
			t.Fatalf("negotiated %q, want %q", got, protocol.Subprotocol)
		}
	})
	t.Run("no subprotocol means v1", func(t *testing.T) {
		// A user of its own: sp has a device already, and a send of a
		// user with another device has its own copy stored too.
		r := dialRaw(t, websocket.Dialer{}, wsURL, bearer(tk.Token(t, "np", "d3", time.Hour)))
		r.send("sink", "np-1")
		w.stored++
	})

	w.waitSessions(t, 2)
	w.healthy(t)
}

func TestOriginCheckBlocksCrossSiteHijacking(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.AllowedOrigins = []string{"http://app.example:8080", "https://secure.example"}
	w := newWorld(t, cfg)
	host, portStr, err := net.SplitHostPort(w.g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	v1 := []string{protocol.Subprotocol}

	allowed := []string{
		"", // native apps send no Origin
		"http://" + w.g.Addr,
		"http://" + w.g.Addr + "/",
		"HTTP://" + w.g.Addr,
		"http://app.example:8080",
		"http://APP.example:8080",
		"https://secure.example",
		"https://secure.example:443",
	}
	for i, o := range allowed {
		t.Run("allowed "+o, func(t *testing.T) {
			h := bearer(tk.Token(t, "origin", fmt.Sprintf("ok%d", i), time.Hour))
			if o != "" {
				h.Set("Origin", o)
			}
			r := dialRaw(t, websocket.Dialer{Subprotocols: v1}, w.g.URL, h)
			if r.welcome.User != "origin" {
				t.Fatalf("welcome %+v", *r.welcome)
			}
		})
	}

	refused := []string{
		"http://evil.example",
		"https://evil.example",
		"http://" + host + ".evil.example:" + portStr,   // look-alike of the gateway's own host
		"http://app.example.evil.example:8080",          // look-alike of an allowed origin
		"http://evilapp.example:8080",                   // suffix look-alike
		"http://app.example:8080@evil.example",          // userinfo trick
		"http://" + w.g.Addr + "@evil.example",          // userinfo trick on same-origin
		"https://app.example:8080",                      // wrong scheme for an allowed http origin
		"http://secure.example",                         // wrong scheme for an allowed https origin
		"http://app.example:8081",                       // wrong port
		"http://app.example",                            // default port 80, not 8080
		"https://secure.example:8443",                   // wrong port
		"http://" + host + ":" + strconv.Itoa(port+1),   // same host, wrong port
		"http://localhost:" + portStr,                   // another site to a browser
		"http://app.example:8080/page",                  // not a bare origin
		"ws://" + w.g.Addr,                              // not an http(s) origin
		"null",                                          // sandboxed iframe, file://
		"http://[::1]:" + portStr,                       // another host
		"http://" + host + ":" + portStr + ".evil.test", // port look-alike
	}
	for i, o := range refused {
		t.Run("refused "+o, func(t *testing.T) {
			h := bearer(tk.Token(t, "origin", fmt.Sprintf("bad%d", i), time.Hour))
			h.Set("Origin", o)
			expectRefused(t, w.g.URL, h, v1, http.StatusForbidden, "bad_origin")
		})
	}

	w.waitSessions(t, 2)
	w.healthy(t)
}

func TestTokenExpiringMidSessionClosesWith1008(t *testing.T) {
	w := newWorld(t, tk.TestConfig())
	// JWT expiry has whole-second precision: a 2s ttl expires in 1-2s.
	tok := tk.Token(t, "mallory", "phone", 2*time.Second)
	r := dialRaw(t, websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}, w.g.URL, bearer(tok))
	r.send("sink", "before-expiry")
	w.stored++
	start := time.Now()
	r.expectClose(protocol.ClosePolicy, protocol.ReasonTokenExpired)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed %s after the send, want within the 2s token lifetime (+slack)", d)
	}
	w.waitSessions(t, 2)
	// Reconnecting with the expired token is refused.
	expectRefused(t, w.g.URL, bearer(tok), []string{protocol.Subprotocol}, 401, "token_expired")
	w.healthy(t)
}

func TestBadFramesAreAnsweredAndHarmNoOne(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.MaxFrameBytes = 1024
	w := newWorld(t, cfg)
	w.healthy(t)
	// Each case is a user of its own, with one device: a user with
	// another would have each send's own copy stored too.

	t.Run("bad json", func(t *testing.T) {
		r := connectRaw(t, w.g, "mallory-json", "json")
		for _, f := range []string{`{"type":"send","id":"m1",`, `not json`, `[1,2]`, `"send"`, ``} {
			r.write(f)
			r.expectError(protocol.ErrBadJSON, "", 0)
		}
		r.send("sink", "after-bad-json") // the connection is still open
		w.stored++
		w.healthy(t)
	})

	t.Run("unknown type", func(t *testing.T) {
		r := connectRaw(t, w.g, "mallory-type", "type")
		r.write(`{"type":"hello","id":"x1"}`)
		r.expectError(protocol.ErrUnknownType, "", 0)
		r.write(`{"type":"msg","id":"x2","from":"alice","device":"phone","seq":1,"body":"forged"}`)
		r.expectError(protocol.ErrUnknownType, "", 0)
		r.send("sink", "after-unknown-type")
		w.stored++
		w.healthy(t)
	})

	t.Run("bad ids", func(t *testing.T) {
		r := connectRaw(t, w.g, "mallory-ids", "ids")
		for i, to := range []string{"bob.phone", "bob.*", "*", ">", "bob>", "bob carol", " bob", "bob\n", "inbox.bob"} {
			id := fmt.Sprintf("bad-to-%d", i)
			r.writeJSON(map[string]any{"type": "send", "id": id, "to": to, "body": "x"})
			r.expectError(protocol.ErrBadID, id, 0)
		}
		r.writeJSON(map[string]any{"type": "send", "id": "m.1", "to": "bob", "body": "x"})
		r.expectError(protocol.ErrBadID, "", 0)
		r.send("sink", "after-bad-ids")
		w.stored++
		w.healthy(t) // bob got nothing but alice's message
	})

	t.Run("missing fields", func(t *testing.T) {
		r := connectRaw(t, w.g, "mallory-fields", "fields")
		r.write(`{"type":"send","id":"nobody","to":"bob"}`)
		r.expectError(protocol.ErrBadField, "nobody", 0)
		r.write(`{"type":"send","id":"nullbody","to":"bob","body":null}`)
		r.expectError(protocol.ErrBadField, "nullbody", 0)
		r.write(`{"type":"ack"}`)
		r.expectError(protocol.ErrBadField, "", 0)
		r.write(`{"id":"notype","to":"bob","body":1}`)
		r.expectError(protocol.ErrBadField, "", 0)
		r.send("sink", "after-missing-fields")
		w.stored++
		w.healthy(t)
	})

	t.Run("unknown seq", func(t *testing.T) {
		r := connectRaw(t, w.g, "mallory-seq", "seq")
		own := r.send("sink", "to-sink") // a message TO someone else
		w.stored++
		for _, seq := range []uint64{999999, w.lastSeq, own.Seq} {
			r.write(string(protocol.AppendSeqFrame(nil, protocol.TypeAck, seq)))
			r.expectError(protocol.ErrUnknownSeq, "", seq)
			r.write(string(protocol.AppendSeqFrame(nil, protocol.TypeRead, seq)))
			r.expectError(protocol.ErrUnknownSeq, "", seq)
		}
		r.send("sink", "after-unknown-seq")
		w.stored++
		// No receipt was stored for alice or mallory: healthy counts INBOX.
		w.healthy(t)
	})

	t.Run("frame too big", func(t *testing.T) {
		r := connectRaw(t, w.g, "mallory-big", "big")
		if r.welcome.MaxFrame != cfg.MaxFrameBytes {
			t.Fatalf("welcome announces max_frame %d, want %d", r.welcome.MaxFrame, cfg.MaxFrameBytes)
		}
		frame := func(id string, size int) string {
			head := `{"type":"send","id":"` + id + `","to":"sink","body":"`
			return head + strings.Repeat("x", size-len(head)-2) + `"}`
		}
		// Exactly the limit is allowed.
		r.write(frame("at-limit", cfg.MaxFrameBytes))
		if f := r.next(); f.Type != protocol.TypeSent || f.ID != "at-limit" {
			t.Fatalf("frame of exactly max_frame bytes: got %+v, want sent", *f)
		}
		w.stored++
		r.write(frame("over-limit", cfg.MaxFrameBytes+1))
		r.expectClose(protocol.CloseTooBig, "*")
		w.waitSessions(t, 2)
		w.healthy(t) // over-limit was not stored
	})

	t.Run("binary frame", func(t *testing.T) {
		r := connectRaw(t, w.g, "mallory-binary", "binary")
		_ = r.ws.SetWriteDeadline(time.Now().Add(wait))
		if err := r.ws.WriteMessage(websocket.BinaryMessage, protocol.AppendSend(nil, "bin", "sink", tk.Body("x"))); err != nil {
			t.Fatal(err)
		}
		r.expectClose(protocol.CloseUnsupported, "*")
		w.waitSessions(t, 2)
		w.healthy(t) // the binary send was not stored
	})
}

func TestFloodGetsRateLimitedThenClosed(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.SendRate = 0.001 // no refill during the test
	cfg.SendBurst = 3
	cfg.FrameRate = 0.001
	cfg.FrameBurst = 3
	cfg.FloodStrikes = 5
	w := newWorld(t, cfg)

	r := connectRaw(t, w.g, "mallory", "flood")
	// 3 sends fit the burst; the next 4 are refused with rate_limited; the
	// 5th refusal in a row closes the connection.
	const total = 3 + 4 + 1
	for i := range total {
		r.write(string(protocol.AppendSend(nil, fmt.Sprintf("f%d", i), "sink", tk.Body("flood"))))
	}
	frames := r.expectClose(protocol.ClosePolicy, protocol.ReasonFlood)
	var limited []string
	for _, f := range frames {
		switch {
		case f.Type == protocol.TypeSent && (f.ID == "f0" || f.ID == "f1" || f.ID == "f2"):
		case f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited:
			if f.RetryMS <= 0 {
				t.Errorf("rate_limited for %s with retry_ms %d, want > 0", f.ID, f.RetryMS)
			}
			limited = append(limited, f.ID)
		default:
			t.Errorf("unexpected frame %+v", *f)
		}
	}
	if got := strings.Join(limited, ","); got != "f3,f4,f5,f6" {
		t.Fatalf("rate_limited for [%s], want [f3,f4,f5,f6]", got)
	}
	// The three accepted sends are stored once; the refused ones not at all.
	tk.WaitFor(t, wait, func() error {
		if n, err := inboxCount(w.n, "sink"); err != nil || n != 3 {
			return tk.Errorf("sink's inbox holds %d (err %v), want 3", n, err)
		}
		return nil
	})
	w.stored += 3
	w.waitSessions(t, 2)
	w.healthy(t)

	// Garbage is limited too (by the bucket for frames other than sends).
	r = connectRaw(t, w.g, "mallory", "garbage")
	for range total {
		r.write(`{"type":`)
	}
	frames = r.expectClose(protocol.ClosePolicy, protocol.ReasonFlood)
	var bad, limitedGarbage int
	for _, f := range frames {
		switch {
		case f.Type == protocol.TypeError && f.Code == protocol.ErrBadJSON:
			bad++
		case f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited && f.RetryMS > 0:
			limitedGarbage++
		default:
			t.Errorf("unexpected frame %+v", *f)
		}
	}
	if bad != 3 || limitedGarbage != 4 {
		t.Fatalf("%d bad_json and %d rate_limited answers, want 3 and 4", bad, limitedGarbage)
	}
	w.waitSessions(t, 2)
	w.healthy(t)

	// A read refused by the bucket names its seq and that it is a read, so
	// a client knows which read to resend (the SDKs do).
	r = connectRaw(t, w.g, "mallory", "reader")
	for seq := 1001; seq <= 1005; seq++ {
		r.write(fmt.Sprintf(`{"type":"read","seq":%d}`, seq))
	}
	answers := map[string][]uint64{}
	for range 5 {
		f := r.next()
		if f.Type != protocol.TypeError || f.For != protocol.TypeRead {
			t.Fatalf("unexpected frame %+v, want a refusal of a read", *f)
		}
		answers[string(f.Code)] = append(answers[string(f.Code)], f.Seq)
	}
	slices.Sort(answers[string(protocol.ErrUnknownSeq)])
	if got := fmt.Sprint(answers); got != "map[rate_limited:[1004 1005] unknown_seq:[1001 1002 1003]]" {
		t.Fatalf("answers to five reads: %s", got)
	}
	_ = r.ws.Close()
	w.waitSessions(t, 2)
	w.healthy(t)

	// Reconnecting does not refill the device's bucket: the first send
	// of its next connection is refused too. Another device of the same
	// user has its own.
	r = connectRaw(t, w.g, "mallory", "flood")
	r.write(string(protocol.AppendSend(nil, "after-flood", "sink", tk.Body("flood"))))
	r.expectError(protocol.ErrRateLimited, "after-flood", 0)
	r = connectRaw(t, w.g, "mallory", "tablet")
	r.send("sink", "from-tablet")
	w.stored += 2 // and its own copy: mallory has other devices
	w.checkStored(t)
}

func TestClientThatNeverReadsIsClosedAndLosesNothing(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.WriteTimeout = 300 * time.Millisecond
	cfg.MaxInflight, cfg.MaxPendingSends = 8, 8
	cfg.OutboundQueue = 80
	// With only 8 in flight the socket buffers may hold them all; then it
	// is the unanswered pings (the client reads nothing) that close it.
	cfg.PingInterval, cfg.PongTimeout = 200*time.Millisecond, 3*time.Second
	cfg.MaxFrameBytes = 256 << 10
	cfg.SendRate, cfg.SendBurst = 1000, 1000
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g.URL, "alice", "phone")

	// bob reads the welcome and nothing more. His receive buffer is made
	// small so the server's writes stall once its send buffer is full.
	small := websocket.Dialer{
		Subprotocols: []string{protocol.Subprotocol},
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		},
	}
	dialRaw(t, small, g.URL, bearer(tk.Token(t, "bob", "phone", time.Hour)))
	tk.WaitFor(t, wait, func() error {
		if s := g.Server.Sessions(); s != 2 {
			return tk.Errorf("%d sessions, want 2", s)
		}
		return nil
	})

	// 48 messages of 200 KB: far more than socket buffers hold, and more
	// than the outbound queue.
	const count = 48
	body := strings.Repeat("b", 200<<10)
	for i := range count {
		send(t, alice, "bob", fmt.Sprintf("s%02d", i), body)
	}
	tk.WaitFor(t, 3*wait, func() error {
		if s := g.Server.Sessions(); s != 1 {
			return tk.Errorf("%d sessions, want 1: the non-reading client was not closed", s)
		}
		return nil
	})
	// Everything is still queued for bob's device, delivered or not.
	// bob acked nothing, so his cursor never moved.
	if floor := cursor(t, n, "bob", "phone"); floor != 0 {
		t.Fatalf("bob's cursor moved to %d without an ack", floor)
	}

	// bob comes back with the SDK, through a second gateway.
	g2 := tk.StartGateway(t, n, tk.TestConfig())
	bob := tk.Dial(t, g2.URL, "bob", "phone")
	var last uint64
	for i := range count {
		m := tk.RecvMsg(t, bob, wait)
		if want := fmt.Sprintf("s%02d", i); m.ID != want || m.Seq <= last || len(m.Body) != len(body)+2 {
			t.Fatalf("message %d is %s seq %d (last %d, body %d bytes), want %s in order", i, m.ID, m.Seq, last, len(m.Body), want)
		}
		last = m.Seq
		bob.Ack(m.Seq)
	}
	// A repeat would come before the fence (and the SDK count it).
	send(t, alice, "bob", "fence", "fence")
	tk.NextMsgIs(t, bob, "alice", "fence", wait)
	if st := bob.Stats(); st.DuplicatesDropped != 0 || st.Connects != 1 {
		t.Fatalf("bob's client %+v: the gateway dropped it or redelivered on the new connection", st)
	}
	if st := alice.Stats(); st.Connects != 1 {
		t.Fatalf("alice's client %+v: she was dropped too", st)
	}
	seen := map[string]bool{}
	for range count {
		r := tk.RecvReceipt(t, alice, wait)
		if r.Status != protocol.StatusDelivered || seen[r.ID] {
			t.Fatalf("receipt %+v: not delivered, or twice", r)
		}
		seen[r.ID] = true
	}
}

// throttledConn reads at most rate bytes a second, as a client on a slower
// network than the gateway's link to NATS does.
type throttledConn struct {
	net.Conn
	lim *rate.Limiter
}

func (c *throttledConn) Read(p []byte) (int, error) {
	if len(p) > c.lim.Burst() {
		p = p[:c.lim.Burst()]
	}
	if err := c.lim.WaitN(context.Background(), len(p)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// throttledDial dials TCP links that read at most bytesPerSec, with a
// small receive buffer, so the gateway's writes meet a slow reader.
func throttledDial(bytesPerSec int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
		return &throttledConn{Conn: c, lim: rate.NewLimiter(rate.Limit(bytesPerSec), 16<<10)}, nil
	}
}

// backlogCount messages of backlogBody wait for bob after startWithBacklog.
const backlogCount = 96

var backlogBody = strings.Repeat("b", 128<<10) // 12 MB in all

// startWithBacklog starts a gateway with cfg and has alice send bob, who
// has a device but is offline, backlogCount messages s00, s01, ...
func startWithBacklog(t *testing.T, cfg gateway.Config) *tk.Gateway {
	t.Helper()
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, cfg)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	if err := tk.Dial(t, g.URL, "bob", "phone").Close(); err != nil { // registers bob's device
		t.Fatal(err)
	}
	for i := range backlogCount {
		send(t, alice, "bob", fmt.Sprintf("s%02d", i), backlogBody)
	}
	return g
}

// A client that reads and acks every frame as it arrives, on a link slower
// than the gateway's (8 MB/s here), must not be closed as slow: 4001 is for
// clients that stop reading. With a backlog, the gateway pulls up to
// MaxInflight messages and queues each for writing at once, so Validate
// refuses an outbound queue too small to hold them, and the smallest queue
// it accepts must carry the backlog.
func TestPromptReaderWithBacklogIsNotClosedAsSlow(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.OutboundQueue = 16
	if err := cfg.Validate(); err == nil {
		t.Fatal("Validate accepted an outbound queue smaller than MaxInflight")
	}
	cfg.MaxInflight, cfg.MaxPendingSends = 16, 16
	cfg.OutboundQueue = 16 + 16 + 64
	cfg.MaxFrameBytes = 256 << 10
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g := startWithBacklog(t, cfg)

	throttled := websocket.Dialer{
		Subprotocols:   []string{protocol.Subprotocol},
		NetDialContext: throttledDial(8 << 20),
	}
	r := dialRaw(t, throttled, g.URL, bearer(tk.Token(t, "bob", "phone", time.Hour)))
	for i := 0; i < backlogCount; {
		_ = r.ws.SetReadDeadline(time.Now().Add(wait))
		_, data, err := r.ws.ReadMessage()
		if err != nil {
			t.Fatalf("a client reading every frame at once was dropped after %d of %d messages: %v", i, backlogCount, err)
		}
		f, err := protocol.DecodeServer(data)
		if err != nil || f.Type != protocol.TypeMsg {
			t.Fatalf("frame %.100q (%v), want msg", data, err)
		}
		if want := fmt.Sprintf("s%02d", i); f.ID != want {
			t.Fatalf("message %d is %s, want %s", i, f.ID, want)
		}
		i++
		_ = r.ws.SetWriteDeadline(time.Now().Add(wait))
		if err := r.ws.WriteMessage(websocket.TextMessage, protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq)); err != nil {
			t.Fatalf("a client reading every frame at once was dropped after %d of %d messages (writing its ack: %v)", i, backlogCount, err)
		}
	}
}

func TestPeerThatIgnoresPingsIsClosed(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.PingInterval = 100 * time.Millisecond
	// Long beside the interval: alice and bob answer about 30 pings
	// before the mute peer is closed, and a test goroutine held up on a
	// busy machine does not cost them their connections.
	cfg.PongTimeout = 3 * time.Second
	w := newWorld(t, cfg)

	r := connectRaw(t, w.g, "mallory", "mute")
	var pings atomic.Int32
	r.ws.SetPingHandler(func(string) error { pings.Add(1); return nil }) // never pong
	ended := make(chan error, 1)
	go func() {
		_ = r.ws.SetReadDeadline(time.Now().Add(3 * wait))
		for {
			if _, _, err := r.ws.ReadMessage(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.CloseSlow {
			t.Fatalf("connection ended with %v, want close %d", err, protocol.CloseSlow)
		}
	case <-time.After(2 * wait):
		t.Fatal("a peer that never answers pings is still connected")
	}
	if pings.Load() == 0 {
		t.Fatal("the server never pinged")
	}
	w.waitSessions(t, 2)
	// alice and bob's SDK clients answer pings: they were never dropped
	// although they were pinged all along (healthy checks Connects).
	w.healthy(t)
}

// A handshake that asks for the connection to be closed ("Connection:
// Upgrade, close") must either get a session or be dropped, and either way
// leave nothing behind: a graceful shutdown afterwards completes at once.
func TestUpgradeWithConnectionCloseLeavesNothingBehind(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	tk.Dial(t, g.URL, "alice", "phone")

	c, err := net.DialTimeout("tcp", g.Addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	req := "GET " + gateway.PathWS + " HTTP/1.1\r\n" +
		"Host: " + g.Addr + "\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade, close\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: " + protocol.Subprotocol + "\r\n" +
		"Authorization: Bearer " + tk.Token(t, "mallory", "close", time.Hour) + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the handshake answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Upgraded: the gateway must now either greet this session or
		// drop the socket; wait for whichever it does.
		_, err := br.Peek(1)
		if err != nil && !errors.Is(err, io.EOF) && !isClosedConn(err) {
			t.Fatalf("after 101: %v", err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.Server.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after a handshake with %q (status %d) failed after %s: %v; the connection was never "+
			"handed to the gateway's upgrade handler, so the gateway still waits for it",
			"Connection: Upgrade, close", resp.StatusCode, time.Since(start).Round(time.Millisecond), err)
	}
}

func isClosedConn(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

// A frame within MaxFrameBytes whose body can never be stored (Validate
// accepts MaxFrameBytes up to 16 MiB; NATS payloads and INBOX messages are
// at most 1 MiB) must be refused for good, not answered with an error that
// PROTOCOL.md says to resend unchanged: the Go SDK resends such a send
// forever.
func TestSendTooBigToStoreIsNotRetryable(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.MaxFrameBytes = 2 << 20
	if err := cfg.Validate(); err != nil {
		return // refusing such a frame limit at start is a fix too
	}
	w := newWorld(t, cfg)
	r := connectRaw(t, w.g, "mallory", "huge")
	r.write(string(protocol.AppendSend(nil, "huge", "sink", tk.Body(strings.Repeat("h", 1200<<10)))))
	_ = r.ws.SetReadDeadline(time.Now().Add(wait))
	_, data, err := r.ws.ReadMessage()
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce) && ce.Code == protocol.CloseTooBig:
		// Refused as too big: fine.
	case err != nil:
		t.Fatalf("connection ended with %v", err)
	default:
		f, err := protocol.DecodeServer(data)
		if err != nil || f.Type != protocol.TypeError || f.ID != "huge" {
			t.Fatalf("answer %.200q (%v), want an error for huge", data, err)
		}
		for _, e := range protocol.Errors {
			if e.Code == f.Code && e.Retry {
				t.Fatalf("a 1.2 MB send under a 2 MiB frame limit was answered %s, which says resend unchanged; "+
					"it can never be stored (1 MiB NATS payload / INBOX max_msg_size), so clients resend it forever", f.Code)
			}
		}
	}
	w.healthy(t)
}

// An upgrade refused is answered and its connection closed: the server
// that takes upgrades streams no request body, so a next request on that
// connection, an upload say, must come on a new one. A request on any
// other path keeps its connection.
func TestRefusedUpgradeClosesItsConnection(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	for _, c := range []struct {
		path  string
		close bool
	}{{gateway.PathWS, true}, {gateway.PathHealthz, false}} {
		conn, err := net.DialTimeout("tcp", g.Addr, wait)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(wait))
		// An upgrade without a token: 401.
		if _, err := io.WriteString(conn, "GET "+c.path+" HTTP/1.1\r\nHost: "+g.Addr+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close != c.close {
			t.Fatalf("%s answered %d with Connection: close %v, want %v", c.path, resp.StatusCode, resp.Close, c.close)
		}
		if c.close {
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				t.Fatalf("%s: the connection is still open after the refusal (%v)", c.path, err)
			}
		}
	}
}

// A device that takes over its own connection while it is still open
// (the old one is replaced) gets the old one's buckets, not a fresh
// burst.
func TestTakeoverKeepsTheRateLimits(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.SendRate, cfg.SendBurst = 0.001, 3 // no refill during the test
	w := newWorld(t, cfg)
	a := connectRaw(t, w.g, "mallory", "flood")
	for i := range 3 {
		a.send("sink", fmt.Sprintf("a%d", i))
	}
	a.write(string(protocol.AppendSend(nil, "a3", "sink", tk.Body("x"))))
	a.expectError(protocol.ErrRateLimited, "a3", 0)
	b := connectRaw(t, w.g, "mallory", "flood") // replaces a
	b.write(string(protocol.AppendSend(nil, "b0", "sink", tk.Body("x"))))
	b.expectError(protocol.ErrRateLimited, "b0", 0)
	a.expectClose(protocol.CloseReplaced, "*")
	w.stored += 3
	w.checkStored(t)
}

// A frame header claiming 2^63 bytes or more (the 64-bit length's top bit
// set, which RFC 6455 forbids and the library reads as negative) is
// closed with a close frame, as an oversized frame is, not a bare FIN.
func TestHugeLengthHeaderGetsACloseFrame(t *testing.T) {
	for _, n := range []uint64{1 << 63, ^uint64(0)} {
		w := newWorld(t, tk.TestConfig())
		r := connectRaw(t, w.g, "mallory", "huge-hdr")
		hdr := []byte{0x81, 0x80 | 127}
		hdr = binary.BigEndian.AppendUint64(hdr, n)
		hdr = append(hdr, 1, 2, 3, 4) // the mask
		nc := r.ws.NetConn()
		_ = nc.SetWriteDeadline(time.Now().Add(wait))
		if _, err := nc.Write(hdr); err != nil {
			t.Fatal(err)
		}
		_ = r.ws.SetReadDeadline(time.Now().Add(wait))
		var err error
		for err == nil {
			_, _, err = r.ws.ReadMessage()
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.CloseTooBig {
			t.Fatalf("length %#x: the connection ended with %v, want close 1009", n, err)
		}
	}
}

// A message of empty fragments never grows past the read limit, and pongs
// between them used to keep putting the read deadline back: the flood was
// never closed. A message must now be whole within PongTimeout.
func TestEmptyFragmentFloodIsClosed(t *testing.T) {
	cfg := tk.TestConfig()
	cfg.PingInterval = 200 * time.Millisecond
	cfg.PongTimeout = time.Second
	w := newWorld(t, cfg)
	r := connectRaw(t, w.g, "mallory", "frag")
	nc := r.ws.NetConn()
	masked := func(b0 byte) []byte { return []byte{b0, 0x80, 1, 2, 3, 4} }
	_ = nc.SetWriteDeadline(time.Now().Add(wait))
	if _, err := nc.Write(masked(0x01)); err != nil { // text, not final, empty
		t.Fatal(err)
	}
	closed := make(chan struct{})
	var closedByServer atomic.Bool
	go func() { // what the server writes, to its close (or the test's end)
		defer close(closed)
		_ = nc.SetReadDeadline(time.Now().Add(3 * wait))
		buf := make([]byte, 4096)
		for {
			if _, err := nc.Read(buf); err != nil {
				if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
					closedByServer.Store(true)
				}
				return
			}
		}
	}()
	// The flood, paced as a client would send it: a thousand empty
	// continuations and a pong, again and again, until the server closes
	// it (due after one PongTimeout) or the test gives up, many later.
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		var b []byte
		for range 1000 {
			b = append(b, masked(0x00)...)
		}
		b = append(b, masked(0x8A)...)
		if _, err := nc.Write(b); err != nil {
			<-closed // the server closed it: its close is read, or the socket reset
			return
		}
		select {
		case <-closed:
			if !closedByServer.Load() {
				t.Fatal("the test's own read ended first")
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("a flood of empty fragments with pongs between them still held the connection %v after it began (PongTimeout %v)", wait, cfg.PongTimeout)
}
