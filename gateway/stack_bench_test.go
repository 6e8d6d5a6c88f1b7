package gateway_test

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// BenchmarkIdleSessionStack reports the goroutine stack an idle device
// holds in the gateway (and the embedded server, which adds nothing per
// device): after connecting only, after a send in the SDK's form (the
// fast path), and after frames decoded by encoding/json (a send with its
// fields in another order, a typing frame). Run it without -race, which
// changes stack sizes.
func BenchmarkIdleSessionStack(b *testing.B) {
	for _, c := range []struct {
		name   string
		frames []string
	}{
		{"connected", nil},
		{"sent", []string{`{"type":"send","id":"m1","to":"zz","body":"hi"}`}},
		{"json", []string{`{"type":"send","to":"zz","id":"m1","body":"hi"}`, `{"type":"typing","to":"zz"}`}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				b.ReportMetric(idleStack(b, 1000, c.frames), "stack-B/device")
			}
		})
	}
}

// idleStack connects n devices, has each write frames and read up to its
// sent, and returns the stack in use per device once they are idle.
func idleStack(b *testing.B, n int, frames []string) float64 {
	nats := tk.StartNATS(b)
	g := tk.StartGateway(b, nats, tk.TestConfig())
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.StackInuse
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	for i := range n {
		tok := tk.Token(b, fmt.Sprintf("u%04d", i), "phone", time.Hour)
		ws, _, err := d.Dial(g.URL, http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ws.Close() })
		sent := 0
		for _, f := range frames {
			if err := ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
				b.Fatal(err)
			}
			if f, err := protocol.DecodeClient([]byte(f)); err == nil && f.Type == protocol.TypeSend {
				sent++
			}
		}
		for got := -1; got < sent; { // the welcome, then each send's answer
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := ws.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			if f, err := protocol.DecodeServer(data); err == nil && (f.Type == protocol.TypeWelcome || f.Type == protocol.TypeSent) {
				got++
			}
		}
	}
	// The runtime halves a parked goroutine's stack at a collection while
	// a quarter of it is in use: let two pass.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return float64(ms.StackInuse-before) / float64(n)
}
