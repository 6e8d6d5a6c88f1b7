package gateway

import (
	"bytes"
	"net"
	"testing"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// TestFrameWriterFramesAreReadBack writes frames of every header length,
// batched into shared writes and split where a batch passes maxWrite, and
// reads them back with the WebSocket library's own client over TCP.
func TestFrameWriterFramesAreReadBack(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 127, 0xffff, 0x10000, maxWrite - 2, maxWrite, 3 * maxWrite}
	var frames [][]byte
	for i, n := range sizes {
		frames = append(frames, bytes.Repeat([]byte{'a' + byte(i)}, n))
	}
	cfg := DefaultConfig()
	errc := make(chan error, 1)
	up := websocket.FastHTTPUpgrader{}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		err := up.Upgrade(ctx, func(ws *websocket.Conn) {
			c := &wsConn{ws: ws, outQueue: newOutQueue(&cfg, nil)}
			var w frameWriter
			defer w.release()
			// Twice, so the second batch reuses the first one's buffer.
			err := w.write(c, frames[:4])
			if err == nil {
				err = w.write(c, frames[4:])
			}
			errc <- err
			_, _, _ = ws.ReadMessage() // until the client closes
		})
		if err != nil {
			errc <- err
		}
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadLimit(4 * maxWrite)
	for i, want := range frames {
		mt, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d (%d bytes): %v", i, len(want), err)
		}
		if mt != websocket.TextMessage || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: type %d, %d bytes, want a text frame of %d bytes", i, mt, len(got), len(want))
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
