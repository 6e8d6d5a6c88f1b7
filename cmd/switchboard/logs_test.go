package main_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// eventStream is an event stream of the HTTP fallback, read line by line.
type eventStream struct {
	r       *bufio.Reader
	session string
}

// openEventStream opens a stream (url carries the token) and reads its
// welcome; the stream is closed at the end of the test.
func openEventStream(t *testing.T, url string) *eventStream {
	t.Helper()
	// The bound is a failure bound for the whole stream, never a pause.
	resp, err := (&http.Client{Timeout: 4 * logWait}).Get(url)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("event stream: %v %v", err, resp)
	}
	t.Cleanup(func() { resp.Body.Close() })
	s := &eventStream{r: bufio.NewReader(resp.Body)}
	line := s.await(t, `"type":"welcome"`)
	var w struct{ Session string }
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &w); err != nil || w.Session == "" {
		t.Fatalf("welcome %q: %v", line, err)
	}
	s.session = w.Session
	return s
}

// await reads lines until one holds want, and returns it.
func (s *eventStream) await(t *testing.T, want string) string {
	t.Helper()
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("the event stream ended before %s: %v", want, err)
		}
		if strings.Contains(line, want) {
			return strings.TrimSpace(line)
		}
	}
}

// logWait bounds each step of the no-secrets test; it is a failure bound,
// never a pause.
const logWait = 15 * time.Second

// marker is a string that appears nowhere but where a test put it.
func marker(what string) string {
	return fmt.Sprintf("MARKER-%s-%d", what, time.Now().UnixNano())
}

// wsFrame is what the test reads of a server frame.
type wsFrame struct {
	Type   string          `json:"type"`
	Code   string          `json:"code"`
	ID     string          `json:"id"`
	Seq    uint64          `json:"seq"`
	Status string          `json:"status"`
	User   string          `json:"user"`
	Body   json.RawMessage `json:"body"`
}

// wsPeer is a raw WebSocket client: the test writes frames as text and
// waits for the frame it expects, passing over the others.
type wsPeer struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialWS(t *testing.T, wsURL string, h http.Header) *wsPeer {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: logWait}
	ws, resp, err := d.Dial(wsURL, h)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	p := &wsPeer{t: t, ws: ws}
	p.await("welcome", func(f wsFrame) bool { return f.Type == protocol.TypeWelcome })
	return p
}

func (p *wsPeer) write(frame string) {
	p.t.Helper()
	if err := p.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		p.t.Fatalf("write %s: %v", frame, err)
	}
}

func (p *wsPeer) await(what string, match func(wsFrame) bool) wsFrame {
	p.t.Helper()
	_ = p.ws.SetReadDeadline(time.Now().Add(logWait))
	for {
		_, b, err := p.ws.ReadMessage()
		if err != nil {
			p.t.Fatalf("waiting for %s: %v", what, err)
		}
		var f wsFrame
		if err := json.Unmarshal(b, &f); err != nil {
			p.t.Fatalf("waiting for %s: frame %s: %v", what, b, err)
		}
		if match(f) {
			return f
		}
	}
}

// awaitError writes frame and waits for the error it must get.
func (p *wsPeer) awaitError(frame string, code protocol.ErrorCode) {
	p.t.Helper()
	p.write(frame)
	p.await("error "+string(code), func(f wsFrame) bool { return f.Type == protocol.TypeError && f.Code == string(code) })
}

// awaitClose writes a frame the gateway ends the connection over and
// waits for the close.
func (p *wsPeer) awaitClose(kind int, frame []byte, code int) {
	p.t.Helper()
	if err := p.ws.WriteMessage(kind, frame); err != nil {
		p.t.Fatal(err)
	}
	_ = p.ws.SetReadDeadline(time.Now().Add(logWait))
	for {
		_, _, err := p.ws.ReadMessage()
		if ce, ok := err.(*websocket.CloseError); ok {
			if ce.Code != code {
				p.t.Fatalf("closed with %d, want %d", ce.Code, code)
			}
			return
		}
		if err != nil {
			p.t.Fatalf("waiting for close %d: %v", code, err)
		}
	}
}

// httpDo makes a request and returns the status and body.
func httpDo(t *testing.T, method, u string, h http.Header, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// httpTry is httpDo that returns the request's error.
func httpTry(method, u string, h http.Header, body []byte) (int, error) {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// rawHTTP sends req on its own connection and reads until the gateway
// closes it.
func rawHTTP(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(logWait))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		t.Fatalf("answer to %q: %v", req, err)
	}
	return string(b)
}

// No token, URL signature or message body reaches the log, whatever a
// client does: every kind of frame and frame error, refused handshakes,
// media up and down through signed URLs, development tokens, malformed
// HTTP. The all-in-one logs at debug level, and its log is read to the end
// after it stops.
func TestNoSecretIsLogged(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0", "--log-level", "debug",
		"--typing-rate", "0.001", "--typing-burst", "1")
	u, err := url.Parse(p.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	addr := u.Host

	aliceTok := token(t, data, "alice", "phone")
	bobTok := token(t, data, "bob", "phone")
	carolTok := token(t, data, "carol", "phone")
	// Signed with another secret.
	foreignTok := strings.TrimSpace(tk.Run(t, binary, "token", "--jwt-secret", "another-secret-0123456789abcdef-0123456789", "--user", "alice", "--device", "phone"))
	expiredTok := strings.TrimSpace(tk.Run(t, binary, "token", "--data", data, "--user", "alice", "--device", "tablet", "--ttl", "1s"))
	secrets := map[string]string{}
	for name, tok := range map[string]string{"alice's": aliceTok, "bob's": bobTok, "carol's": carolTok, "the foreign": foreignTok, "the expired": expiredTok} {
		parts := strings.Split(tok, ".")
		secrets[name+" token"] = tok
		secrets[name+" token's claims"] = parts[1]
		secrets[name+" token's signature"] = parts[2]
	}
	body := func(what string) string {
		m := marker(what)
		secrets["the "+what+" body"] = m
		return m
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

	// Refused handshakes: a token signed with another secret, in the
	// header and in the query, then an expired one.
	for _, c := range []struct {
		url string
		h   http.Header
	}{
		{p.WSURL, bearer(foreignTok)},
		{p.WSURL + "?access_token=" + foreignTok, nil},
	} {
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: logWait}
		if _, resp, err := d.Dial(c.url, c.h); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a foreign token: %v %v", err, resp)
		}
	}
	tk.WaitFor(t, logWait, func() error {
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: logWait}
		_, resp, err := d.Dial(p.WSURL+"?access_token="+expiredTok, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("the short-lived token is still accepted: %v", err)
		}
		var e struct{ Code string }
		if b, _ := io.ReadAll(resp.Body); json.Unmarshal(b, &e) != nil || e.Code != "token_expired" {
			return fmt.Errorf("refused with %q, not yet token_expired", e.Code)
		}
		return nil
	})

	// A session with every kind of client frame and every frame error.
	alice := dialWS(t, p.WSURL, bearer(aliceTok))
	bob := dialWS(t, p.WSURL+"?access_token="+bobTok, nil)
	alice.write(`{"type":"settings","read_receipts":true,"last_seen_privacy":"contacts","contacts":["bob"]}`)
	alice.await("settings", func(f wsFrame) bool { return f.Type == protocol.TypeSettings })
	bob.write(`{"type":"settings","read_receipts":true,"contacts":["alice"]}`)
	bob.await("settings", func(f wsFrame) bool { return f.Type == protocol.TypeSettings })
	alice.write(`{"type":"presence_sub","users":["bob"]}`)
	alice.await("bob's presence", func(f wsFrame) bool { return f.Type == protocol.TypePresence && f.User == "bob" })
	alice.write(`{"type":"typing","to":"bob"}`)
	bob.await("typing", func(f wsFrame) bool { return f.Type == protocol.TypeTyping })
	alice.awaitError(`{"type":"typing","to":"bob"}`, protocol.ErrRateLimited)

	text := body("chat")
	alice.write(`{"type":"send","id":"m-1","to":"bob","body":"` + text + `"}`)
	sent := alice.await("sent", func(f wsFrame) bool { return f.Type == protocol.TypeSent && f.ID == "m-1" })
	m := bob.await("msg", func(f wsFrame) bool { return f.Type == protocol.TypeMsg && f.ID == "m-1" })
	bob.write(fmt.Sprintf(`{"type":"ack","seq":%d}`, m.Seq))
	bob.write(fmt.Sprintf(`{"type":"read","seq":%d}`, m.Seq))
	// The two ticks travel apart: either may come first.
	for seen := map[string]bool{}; len(seen) < 2; {
		r := alice.await("receipts", func(f wsFrame) bool { return f.Type == protocol.TypeReceipt && !seen[f.Status] })
		seen[r.Status] = true
		alice.write(fmt.Sprintf(`{"type":"ack","seq":%d}`, r.Seq))
	}
	alice.write(fmt.Sprintf(`{"type":"status","seq":%d}`, sent.Seq))
	alice.await("status", func(f wsFrame) bool { return f.Type == protocol.TypeStatus && f.Seq == sent.Seq })
	alice.write(`{"type":"presence_unsub","users":["bob"]}`)

	alice.awaitError(body("not-json"), protocol.ErrBadJSON)
	alice.awaitError(`{"type":"send","id":"bad id!","to":"bob","body":"`+body("bad-id")+`"}`, protocol.ErrBadID)
	alice.awaitError(`{"type":"send","id":"m-2","to":"bob","body":"`+body("bad-field")+`","seq":"x"}`, protocol.ErrBadField)
	alice.awaitError(`{"type":"`+body("unknown-type")+`","body":"`+body("unknown-type-body")+`"}`, protocol.ErrUnknownType)
	alice.awaitError(`{"type":"ack","seq":999999}`, protocol.ErrUnknownSeq)
	alice.awaitError(`{"type":"send","id":"m-3","to":"bob","body":"`+body("bad-media")+`","media":{"key":"u/carol/`+
		strings.Repeat("0", 32)+`","mime":"image/png","size":1,"sha256":"`+strings.Repeat("0", 64)+`"}}`, protocol.ErrBadMedia)

	// Frames the gateway closes the connection over.
	carol := dialWS(t, p.WSURL, bearer(carolTok))
	carol.awaitClose(websocket.TextMessage, []byte(`{"type":"send","id":"big","to":"bob","body":"`+body("too-big")+strings.Repeat("x", 70<<10)+`"}`), websocket.CloseMessageTooBig)
	carol = dialWS(t, p.WSURL, bearer(carolTok))
	carol.awaitClose(websocket.BinaryMessage, []byte(body("binary")), websocket.CloseUnsupportedData)

	// The HTTP fallback: a stream with its token in the URL (as
	// EventSource sends it) and Last-Event-ID, frames POSTed to it, and
	// POSTs refused.
	stream := openEventStream(t, p.HTTP+"/v1/sse?access_token="+carolTok+"&last_event_id=1")
	postURL := p.HTTP + "/v1/sse/" + stream.session
	if status, b := httpDo(t, "POST", postURL, bearer(carolTok), []byte(`{"type":"send","id":"s-1","to":"bob","body":"`+body("fallback")+`"}`)); status != http.StatusNoContent {
		t.Fatalf("POST to the stream: %d %s", status, b)
	}
	stream.await(t, `"type":"sent"`)
	bob.await("the fallback's msg", func(f wsFrame) bool { return f.Type == protocol.TypeMsg && f.ID == "s-1" })
	if status, b := httpDo(t, "POST", postURL, bearer(carolTok), []byte(body("fallback-not-json"))); status != http.StatusNoContent {
		t.Fatalf("POST of a bad frame: %d %s", status, b)
	}
	stream.await(t, `"code":"bad_json"`)
	if status, _ := httpDo(t, "POST", postURL, bearer(foreignTok), []byte(body("fallback-foreign"))); status != http.StatusUnauthorized {
		t.Fatalf("POST with a foreign token: %d", status)
	}
	if status, _ := httpDo(t, "POST", p.HTTP+"/v1/sse/nosuchsession?access_token="+carolTok, nil, []byte(body("fallback-nowhere"))); status != http.StatusNotFound {
		t.Fatalf("POST to no session: %d", status)
	}
	// The gateway answers 413 and closes without reading the rest, so
	// the client may see its write reset before it reads the answer; the
	// stream's close says the POST was refused either way.
	if status, err := httpTry("POST", postURL, bearer(carolTok), []byte(body("fallback-too-big")+strings.Repeat("x", 70<<10))); err == nil && status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized POST: %d", status)
	} else if err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("oversized POST: %v", err)
	}
	stream.await(t, `"code":1009`)
	if status, _ := httpDo(t, "GET", p.HTTP+"/v1/sse?access_token="+foreignTok, nil, nil); status != http.StatusUnauthorized {
		t.Fatalf("a stream with a foreign token: %d", status)
	}

	// Media up and down through the embedded store's signed URLs.
	photo := []byte(body("photo") + strings.Repeat("\x89PNG", 5000))
	sum := sha256.Sum256(photo)
	status, b := httpDo(t, "POST", p.HTTP+"/v1/media/uploads", bearer(aliceTok), fmt.Appendf(nil, `{"mime":"image/png","size":%d}`, len(photo)))
	var ticket struct{ Key, URL string }
	if status != http.StatusCreated || json.Unmarshal(b, &ticket) != nil {
		t.Fatalf("upload ticket: %d %s", status, b)
	}
	uploadURL, _ := url.Parse(ticket.URL)
	secrets["the upload URL's signature"] = uploadURL.Query().Get("sig")
	if status, b := httpDo(t, "PUT", ticket.URL, http.Header{"Content-Type": {"image/png"}}, photo); status != http.StatusCreated {
		t.Fatalf("upload: %d %s", status, b)
	}
	if status, b := httpDo(t, "PUT", ticket.URL, http.Header{"Content-Type": {"image/png"}}, photo); status != http.StatusConflict {
		t.Fatalf("second upload: %d %s", status, b)
	}
	ref := fmt.Sprintf(`{"key":%q,"mime":"image/png","size":%d,"sha256":%q}`, ticket.Key, len(photo), hex.EncodeToString(sum[:]))
	wrongRef := strings.Replace(ref, hex.EncodeToString(sum[:]), strings.Repeat("0", 64), 1)
	alice.awaitError(`{"type":"send","id":"p-0","to":"bob","media":`+wrongRef+`,"body":"`+body("wrong-digest")+`"}`, protocol.ErrBadMedia)
	alice.write(`{"type":"send","id":"p-1","to":"bob","media":` + ref + `,"body":"` + body("caption") + `"}`)
	alice.await("sent", func(f wsFrame) bool { return f.Type == protocol.TypeSent && f.ID == "p-1" })
	m = bob.await("media msg", func(f wsFrame) bool { return f.Type == protocol.TypeMsg && f.ID == "p-1" })
	bob.write(fmt.Sprintf(`{"type":"ack","seq":%d}`, m.Seq))
	status, b = httpDo(t, "GET", p.HTTP+"/v1/media/download?key="+ticket.Key+"&access_token="+bobTok, nil, nil)
	var link struct{ URL string }
	if status != http.StatusOK || json.Unmarshal(b, &link) != nil {
		t.Fatalf("download link: %d %s", status, b)
	}
	downloadURL, _ := url.Parse(link.URL)
	secrets["the download URL's signature"] = downloadURL.Query().Get("sig")
	if status, b := httpDo(t, "GET", link.URL, nil, nil); status != http.StatusOK || !bytes.Equal(b, photo) {
		t.Fatalf("download: %d, %d bytes", status, len(b))
	}
	tampered := strings.Replace(link.URL, "sig=", "sig=A", 1)
	if status, b := httpDo(t, "GET", tampered, nil, nil); status != http.StatusForbidden {
		t.Fatalf("tampered download: %d %s", status, b)
	}
	if status, _ := httpDo(t, "GET", p.HTTP+"/v1/media/download?key="+ticket.Key, bearer(foreignTok), nil); status != http.StatusUnauthorized {
		t.Fatalf("download link with a foreign token: %d", status)
	}

	// A development token handed to the page, used, and one refused.
	status, b = httpDo(t, "POST", p.HTTP+"/v1/dev/token", http.Header{"Content-Type": {"application/json"}}, []byte(`{"user":"dave","device":"browser"}`))
	var dev struct{ Token string }
	if status != http.StatusOK || json.Unmarshal(b, &dev) != nil {
		t.Fatalf("development token: %d %s", status, b)
	}
	parts := strings.Split(dev.Token, ".")
	secrets["the development token"], secrets["the development token's signature"] = dev.Token, parts[2]
	dialWS(t, p.WSURL+"?access_token="+dev.Token, nil)
	if status, b := httpDo(t, "POST", p.HTTP+"/v1/dev/token", http.Header{"Content-Type": {"application/json"}, "Origin": {"http://elsewhere.example"}},
		[]byte(`{"user":"dave","device":"browser"}`)); status != http.StatusForbidden {
		t.Fatalf("development token for another origin: %d %s", status, b)
	}

	// Malformed HTTP carrying a token or a signed URL.
	for _, req := range []string{
		"GET /v1/sse?access_token=" + carolTok + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
		"GET /v1/ws?access_token=" + aliceTok + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
		"GET /v1/ws HTTP/1.1\r\nAuthorization: Bearer " + bobTok + "\r\n\r\n",
		"PUT " + uploadURL.RequestURI() + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: image/png\r\nContent-Length: ten\r\n\r\n",
	} {
		if got := rawHTTP(t, addr, req); !strings.HasPrefix(got, "HTTP/1.1 400") {
			t.Fatalf("answer to a malformed request: %q", got)
		}
	}

	// Stop, and read the log to its end.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.logsDone:
	case <-time.After(2 * logWait):
		t.Fatal("the log did not end within its bound after SIGTERM")
	}
	logs := p.Logs()
	for what, secret := range secrets {
		if secret == "" {
			t.Fatalf("%s is empty: the test lost track of it", what)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("%s is in the log", what)
		}
	}
	if strings.Contains(logs, "MARKER-") {
		t.Errorf("a message body, or part of one, is in the log")
	}
	// The log did cover what happened: debug lines of sessions, and the
	// malformed requests.
	for _, want := range []string{`"msg":"connected"`, `"msg":"disconnected"`, "duplicate content-length", "missing required host header", `"msg":"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("the log:\n%s", logs)
	}
}
