package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/protocol"
)

// pipeConn is a wsConn over net.Pipe, with the client's end, and the
// frames its read loop handed on.
func pipeConn(t *testing.T, cfg Config) (*wsConn, *websocket.Conn, <-chan []byte) {
	t.Helper()
	serverEnd, clientEnd := net.Pipe()
	conns := make(chan *wsConn, 1)
	handled := make(chan []byte, 16)
	up := websocket.FastHTTPUpgrader{Subprotocols: []string{protocol.Subprotocol}}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		_ = up.Upgrade(ctx, func(ws *websocket.Conn) {
			c := newWSConn(ws, &cfg)
			conns <- c
			_ = c.readLoop(func(b []byte) { handled <- b })
			<-c.writerDone
		})
	}}
	go func() { _ = srv.ServeConn(serverEnd) }()
	d := websocket.Dialer{
		Subprotocols:     []string{protocol.Subprotocol},
		HandshakeTimeout: 5 * time.Second,
		NetDialContext:   func(context.Context, string, string) (net.Conn, error) { return clientEnd, nil },
	}
	client, _, err := d.Dial("ws://pipe"+PathWS, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return <-conns, client, handled
}

// The transport writes frames in the order queued, from a writer that
// ends when the queue is empty; Close writes what is queued, then the
// close frame, and later frames are refused.
func TestWSConnWritesInOrderThenCloses(t *testing.T) {
	c, client, _ := pipeConn(t, DefaultConfig())
	for i := range 5 {
		if !c.Send([]byte(fmt.Sprintf(`{"n":%d}`, i))) {
			t.Fatalf("frame %d refused", i)
		}
	}
	for i := range 5 {
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := client.ReadMessage()
		if err != nil || string(data) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("frame %d: %q, %v", i, data, err)
		}
	}
	waitFor(t, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.writing {
			return errors.New("the writer still runs with nothing to write")
		}
		return nil
	})
	c.Send([]byte(`{"last":true}`))
	c.Close(protocol.CloseServiceRestart, "restarting")
	if c.Send([]byte(`{"after":true}`)) {
		t.Fatal("a frame was taken after Close")
	}
	_, data, err := client.ReadMessage()
	if err != nil || string(data) != `{"last":true}` {
		t.Fatalf("got %q, %v; want the frame queued before Close", data, err)
	}
	_, _, err = client.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.CloseServiceRestart || ce.Text != "restarting" {
		t.Fatalf("connection ended with %v, want close 1012 restarting", err)
	}
}

// The read loop hands on text frames and closes a connection that sends a
// binary one with 1003.
func TestWSConnReadLoopRefusesBinaryFrames(t *testing.T) {
	c, client, handled := pipeConn(t, DefaultConfig())
	if err := client.WriteMessage(websocket.TextMessage, []byte(`{"type":"ack","seq":1}`)); err != nil {
		t.Fatal(err)
	}
	if got := <-handled; string(got) != `{"type":"ack","seq":1}` {
		t.Fatalf("handled %q", got)
	}
	if err := client.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if c.closeCode != protocol.CloseUnsupported {
		t.Fatalf("closed with %d, want %d", c.closeCode, protocol.CloseUnsupported)
	}
}

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

// A deadline moves only once the one set last has run down an eighth of
// its timeout: a read or write is bounded by 7/8 of it at least.
func TestPushDeadlineMovesOnlyOnceAnEighthHasRunDown(t *testing.T) {
	const d = time.Hour
	set, push := pushDeadline(time.Time{}, d)
	if !push {
		t.Fatal("no deadline set yet: not pushed")
	}
	if _, push := pushDeadline(set, d); push {
		t.Fatal("pushed again at once")
	}
	if next, push := pushDeadline(set.Add(-d/8), d); !push || next.Before(set) {
		t.Fatalf("an eighth run down: pushed %v, to %v (was %v)", push, next, set)
	}
}

// A client's ping is answered without cutting the writer's deadline
// short: the library's own answer set the socket's write deadline a
// second ahead, which the writer, moving its deadline only once an
// eighth of WriteTimeout has run down, took for its own, so a frame
// written more than a second after the ping failed and the connection
// was closed with 4001. The sleep is the behaviour under test: time
// passing beyond that second, within the eighth (60 s / 8).
func TestClientPingLeavesTheWriteDeadline(t *testing.T) {
	cfg := testConfig()
	cfg.WriteTimeout = time.Minute
	c, client, _ := pipeConn(t, cfg)
	ponged := make(chan struct{}, 1)
	client.SetPongHandler(func(string) error { ponged <- struct{}{}; return nil })
	got := make(chan string, 4)
	go func() {
		for {
			_, data, err := client.ReadMessage()
			if err != nil {
				got <- "read failed: " + err.Error()
				return
			}
			got <- string(data)
		}
	}()
	expect := func(want string) {
		t.Helper()
		if s := <-got; s != want {
			code, reason := c.closedWith()
			t.Fatalf("got %s, want %s (closed with %d %q)", s, want, code, reason)
		}
	}
	c.Send([]byte(`{"n":1}`))
	expect(`{"n":1}`)
	if err := client.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	<-ponged
	time.Sleep(1100 * time.Millisecond) // past the library's one second: the behaviour under test
	c.Send([]byte(`{"n":2}`))
	expect(`{"n":2}`)
}
