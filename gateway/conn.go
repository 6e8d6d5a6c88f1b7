package gateway

import (
	"errors"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/gateway/protocol"
)

// transport is what a session needs from a connection. The WebSocket code
// stays here; session logic depends only on this seam.
type transport interface {
	// Send queues one text frame without blocking. It returns false when
	// the connection is closing; when the queue is full it closes the
	// connection with CloseSlow and returns false.
	Send(frame []byte) bool
	// Close sends a close frame with code and reason, then closes the
	// socket. Safe to call many times and from any goroutine; the first
	// call wins.
	Close(code int, reason string)
	// Done is closed once Close has been called.
	Done() <-chan struct{}
}

// wsConn is one WebSocket connection: the read loop runs in the goroutine
// that called serve, the write loop in its own goroutine. Only the write
// loop writes data frames; close and ping go through WriteControl, which
// gorilla-style connections allow concurrently.
type wsConn struct {
	ws  *websocket.Conn
	cfg *Config
	out chan []byte

	closeOnce sync.Once
	done      chan struct{} // closed by Close
	// closeCode and closeReason are written once, before done is closed.
	closeCode   int
	closeReason string

	writerDone chan struct{}
}

func newWSConn(ws *websocket.Conn, cfg *Config) *wsConn {
	return &wsConn{
		ws:         ws,
		cfg:        cfg,
		out:        make(chan []byte, cfg.OutboundQueue),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

func (c *wsConn) Send(frame []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.out <- frame:
		return true
	default:
		c.Close(protocol.CloseSlow, "outbound queue full")
		return false
	}
}

func (c *wsConn) Close(code int, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.done)
	})
}

func (c *wsConn) Done() <-chan struct{} { return c.done }

// writeLoop drains the outbound queue, pings, and on Close flushes what is
// queued (bounded by WriteTimeout), sends the close frame and closes the
// socket, which ends the read loop.
func (c *wsConn) writeLoop() {
	defer close(c.writerDone)
	ping := time.NewTicker(c.cfg.PingInterval)
	defer ping.Stop()
	defer c.ws.Close()
	for {
		select {
		case b := <-c.out:
			if err := c.write(b); err != nil {
				c.Close(protocol.CloseSlow, "write failed")
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.cfg.WriteTimeout)); err != nil {
				c.Close(protocol.CloseSlow, "ping failed")
				return
			}
		case <-c.done:
			c.flushAndClose()
			return
		}
	}
}

func (c *wsConn) write(b []byte) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout)); err != nil {
		return err
	}
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// flushAndClose writes frames already queued (so a client sees "sent" for
// sends that were stored before a graceful close), then the close frame.
func (c *wsConn) flushAndClose() {
	// A slow client cannot take more, and a replaced one is gone to its
	// newer session: only the others get what is queued.
	if c.closeCode != protocol.CloseSlow && c.closeCode != protocol.CloseReplaced {
	flush:
		for {
			select {
			case b := <-c.out:
				if c.write(b) != nil {
					break flush
				}
			default:
				break flush
			}
		}
	}
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

// readLoop reads frames until the socket fails or closes, passing each text
// frame to handle. It returns the reason it stopped.
func (c *wsConn) readLoop(handle func([]byte)) error {
	c.ws.SetReadLimit(int64(c.cfg.MaxFrameBytes))
	alive := func() { _ = c.ws.SetReadDeadline(time.Now().Add(c.cfg.PongTimeout)) }
	alive()
	c.ws.SetPongHandler(func(string) error { alive(); return nil })
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				// The library already sent close 1009.
				c.Close(protocol.CloseTooBig, "frame too big")
			case isTimeout(err):
				c.Close(protocol.CloseSlow, "no pong")
			case errors.As(err, new(*websocket.CloseError)):
				// The client closed: count its own code (1000, 1001, ...).
				var ce *websocket.CloseError
				errors.As(err, &ce)
				c.Close(ce.Code, "")
			default:
				c.Close(protocol.CloseGoingAway, "")
			}
			return err
		}
		alive()
		if mt != websocket.TextMessage {
			c.Close(protocol.CloseUnsupported, "binary frames are not part of "+protocol.Subprotocol)
			return errors.New("gateway: binary frame")
		}
		handle(data)
		select {
		case <-c.done:
			return nil
		default:
		}
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
