package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// permessage-deflate is never negotiated, so no compressed frame can expand
// past the frame limit (no compression bombs).
func TestCompressionIsNeverNegotiated(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, EnableCompression: true}
	h := http.Header{"Authorization": {"Bearer " + tk.Token(t, "alice", "phone", time.Hour)}}
	ws, resp, err := d.Dial(g.URL, h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("server negotiated extensions %q", ext)
	}
	if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != protocol.Subprotocol {
		t.Fatalf("subprotocol %q, want %q", p, protocol.Subprotocol)
	}
}

// No route takes a multipart form, so the gateway never parses one ahead
// of the handler: fasthttp would otherwise read a form of any declared
// length into temporary files, past the body limit, before any handler
// or check runs. Here a request declaring a 50 MB form and sending only
// its start is answered at once.
func TestMultipartBodiesAreNotReadAhead(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	c, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * wait)) // a failure bound only
	part := "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n" + strings.Repeat("a", 16<<10)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: %d\r\n\r\n%s",
		gateway.PathHealthz, g.Addr, 50<<20, part)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the rest of the form: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("answer: %d, want 200", resp.StatusCode)
	}
}
