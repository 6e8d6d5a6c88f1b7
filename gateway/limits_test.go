package gateway_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/gateway/protocol"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
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
