package gateway_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

// rawExchange sends req on a new connection and reads until the gateway
// closes it. The gateway logs a refused request before closing its
// connection, so once this returns the log holds the line.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait)) // a failure bound only
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	return string(b)
}

// Malformed requests are logged through the gateway's logger with the
// reason and the peer, and never with the request's credentials: a token
// in the query or the Authorization header, or a media URL's signature.
func TestMalformedRequestsLogNoCredentials(t *testing.T) {
	n := tk.StartNATS(t)
	logs := &tk.LogBuffer{}
	g := tk.StartGatewayLog(t, n, tk.TestConfig(), logs.Logger())
	tk.StartMedia(t, n, g, media.DefaultConfig())

	tok := tk.Token(t, "alice", "phone", time.Hour)
	var ticket media.Ticket
	if code := mediaHTTP(t, g, "alice", "POST", media.PathUploads, map[string]any{"mime": "image/png", "size": 100}, &ticket); code != http.StatusCreated {
		t.Fatalf("upload ticket: %d", code)
	}
	u, err := url.Parse(ticket.URL)
	if err != nil {
		t.Fatal(err)
	}
	sig := u.Query().Get("sig")

	for _, c := range []struct{ req, reason string }{
		// Two Content-Lengths on an upgrade carrying its token in the query.
		{"GET " + "/v1/ws?access_token=" + tok + " HTTP/1.1\r\nHost: " + g.Addr +
			"\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", "duplicate content-length"},
		// No Host, with the token in the Authorization header.
		{"GET /v1/ws HTTP/1.1\r\nAuthorization: Bearer " + tok + "\r\n\r\n", "missing required host header"},
		// An upload to a signed URL with a Content-Length that is no number.
		{"PUT " + u.RequestURI() + " HTTP/1.1\r\nHost: " + g.Addr + "\r\nContent-Type: image/png\r\nContent-Length: ten\r\n\r\n", "content-length"},
	} {
		if got := rawExchange(t, g.Addr, c.req); !strings.HasPrefix(got, "HTTP/1.1 400") {
			t.Fatalf("answer to a malformed request: %q", got)
		}
		log := logs.String()
		if !strings.Contains(log, c.reason) {
			t.Fatalf("the gateway's log does not give the reason %q:\n%s", c.reason, log)
		}
	}
	log := logs.String()
	for what, secret := range map[string]string{
		"the token":                tok,
		"the token's signature":    tok[strings.LastIndexByte(tok, '.')+1:],
		"the token's claims":       strings.Split(tok, ".")[1],
		"the URL's signature":      sig,
		"the access_token query":   "access_token=",
		"the Authorization header": "Bearer",
	} {
		if strings.Contains(log, secret) {
			t.Errorf("%s is in the log:\n%s", what, log)
		}
	}
	if !strings.Contains(log, "remote=127.0.0.1:") {
		t.Errorf("the log does not name the peer:\n%s", log)
	}
}
