package gateway

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/protocol"
)

// wsConn is one WebSocket connection. The read loop runs in the goroutine
// that called serve. Writes need no goroutine of their own while there is
// nothing to write: Send queues a frame and, if no writer is running,
// starts one (on one of the gateway's runners: workers.go), which writes
// until the queue is empty and ends. Pings are a timer. So an idle
// connection holds one goroutine (its read loop), an empty queue and no
// write buffer. Close and ping go through WriteControl, which
// gorilla-style connections allow concurrently with a writer.
type wsConn struct {
	ws *websocket.Conn
	outQueue
	// lingering: the writer half-closed the socket after the close
	// frame; linger closes it.
	lingering atomic.Bool
	// closeSent: the library refused an oversized frame, and may have
	// sent close 1009 itself (not for a length past 2^63, which it takes
	// for negative): no data frame may follow, and the writer's own close
	// goes out only if the library's did not. peerClosed: the client sent
	// its close, which the writer answers with its code.
	closeSent, peerClosed atomic.Bool
	// inMessage: the frames of a message are being read. Pongs then do
	// not put the read deadline back: a message must be whole within
	// PongTimeout, or a flood of empty fragments with pongs between them
	// would hold the connection for good, below every limit.
	inMessage atomic.Bool
	// writeBy is the write deadline last set by a writer (one runs at a
	// time; see pushDeadline).
	writeBy time.Time
}

// pushDeadline reports the deadline d from now, and whether it is to be
// set: not while the one set last (by) is within d/8 of it. Each frame
// moved the deadline before, a timer update in the runtime per read and
// per write, 2% of the all-in-one's CPU in P1; so a deadline now bounds
// a read or a write at between 7/8 of its timeout and all of it.
func pushDeadline(by time.Time, d time.Duration) (time.Time, bool) {
	t := time.Now().Add(d)
	return t, t.Sub(by) >= d/8
}

func newWSConn(ws *websocket.Conn, cfg *Config) *wsConn {
	c := &wsConn{ws: ws}
	c.outQueue = newOutQueue(cfg, c.writer)
	// Set under the lock sendPing reads it under: the timer may fire
	// before this goroutine's write would otherwise be seen.
	c.mu.Lock()
	c.ping = time.AfterFunc(cfg.PingInterval, c.sendPing)
	c.mu.Unlock()
	return c
}

// writer writes queued frames until the queue is empty, then ends; after
// Close it writes what is queued (bounded by WriteTimeout, and not for a
// slow or replaced client), sends the close frame and closes the socket,
// which ends the read loop.
func (c *wsConn) writer() {
	var batch [][]byte
	var w frameWriter
	defer w.release()
	failed := false
	for {
		var closing, stop bool
		batch, closing, _, stop = c.take(batch)
		if stop {
			return
		}
		// Once the client closed nothing it is sent is read; after the
		// library refused an oversized frame with 1009 no data frame
		// may follow.
		flush := !closing || (c.flushOnClose() && !c.peerClosed.Load() && !c.closeSent.Load())
		if closing {
			// The library may have written a close of its own, with its
			// own deadline: the last writes take a full one again.
			c.writeBy = time.Time{}
		}
		if flush && !failed && w.write(c, batch) != nil {
			failed = true
			c.Close(protocol.CloseSlow, "write failed")
		}
		clear(batch)
		if closing && (c.drained() || failed || !flush) {
			break
		}
		if cap(batch) > 64 {
			batch = nil // keep no large buffer
		}
	}
	switch {
	case failed:
		// A write broke off mid-frame: nothing more can be framed.
		_ = c.ws.Close()
	default:
		// After the library's own close it refuses a second one.
		msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		c.halfClose()
	}
	close(c.writerDone)
}

// closeLinger bounds how long a closed connection's socket is still read
// (and what comes dropped) for the client to close its side.
const closeLinger = time.Second

// halfClose ends the socket's sending side after the close frame, and
// wakes the read loop, without closing the socket: a socket closed with
// unread input (frames the client sent before it read the close) is
// reset, and a reset can destroy the close frame before the client reads
// it, so a client told 4002 (replaced) or 1012 (restart) would see a
// drop and act on the wrong code. The socket is closed by linger, once
// the session has ended. Where the socket cannot half-close, it is
// closed here.
func (c *wsConn) halfClose() {
	nc := c.ws.NetConn()
	if u, ok := nc.(interface{ UnsafeConn() net.Conn }); ok {
		nc = u.UnsafeConn() // fasthttp's hijacked wrapper hides CloseWrite
	}
	hc, ok := nc.(interface{ CloseWrite() error })
	if !ok || hc.CloseWrite() != nil || nc.SetReadDeadline(time.Now()) != nil {
		_ = c.ws.Close()
		return
	}
	c.lingering.Store(true)
}

// linger, once the read loop has ended, reads and drops what the client
// still sends until it closes (its close frame answers ours) or
// closeLinger passes, then closes the socket. It does not block.
func (c *wsConn) linger() {
	if !c.lingering.Load() {
		return
	}
	go func() {
		nc := c.ws.NetConn()
		if nc.SetReadDeadline(time.Now().Add(closeLinger)) == nil {
			_, _ = io.Copy(io.Discard, nc)
		}
		_ = c.ws.Close()
	}()
}

// maxWrite bounds one write to the socket: frames are gathered up to it.
const maxWrite = 64 << 10

// writeBufs holds the writers' buffers between runs, so an idle
// connection holds none.
var writeBufs = sync.Pool{New: func() any { return new([]byte) }}

// frameWriter writes a batch of text frames with one write to the socket
// for as many frames as fit in maxWrite, not one per frame: at a
// receiving device's rate of messages, ticks and "sent" answers, the
// per-frame system call was the gateway's largest single cost.
//
// It frames the messages itself and writes to the socket under the
// library's Conn. That is safe because every data frame of a connection
// is written here, by its one writer goroutine, and the library writes
// only control frames (ping, pong, close), each with one Write, which
// the socket's own write lock keeps whole. Server frames are never
// masked and compression is off (server.go), so a frame is its header
// and the bytes as they are (RFC 6455 §5.2).
type frameWriter struct {
	buf *[]byte
}

func (w *frameWriter) write(c *wsConn, frames [][]byte) error {
	if w.buf == nil {
		w.buf = writeBufs.Get().(*[]byte)
	}
	conn := c.ws.NetConn()
	// WriteTimeout bounds each write, as it bounded each frame's (less
	// up to an eighth: pushDeadline). Pings and pongs, the gateway's and
	// its answers to the client's, move the deadline only later, by the
	// same timeout; the last writes before a close set their own.
	flush := func(b []byte) error {
		if t, push := pushDeadline(c.writeBy, c.cfg.WriteTimeout); push {
			if err := conn.SetWriteDeadline(t); err != nil {
				return err
			}
			c.writeBy = t
		}
		_, err := conn.Write(b)
		return err
	}
	b := (*w.buf)[:0]
	for _, f := range frames {
		if len(b) > 0 && len(b)+len(f)+maxFrameHeader > maxWrite {
			if err := flush(b); err != nil {
				return err
			}
			b = b[:0]
		}
		b = appendTextFrame(b, f)
	}
	err := flush(b)
	if cap(b) <= maxWrite {
		*w.buf = b[:0]
	}
	return err
}

// release gives the buffer back for another connection's writer.
func (w *frameWriter) release() {
	if w.buf != nil {
		writeBufs.Put(w.buf)
		w.buf = nil
	}
}

// maxFrameHeader is the longest header of an unmasked frame.
const maxFrameHeader = 10

// appendTextFrame appends p as one final, unmasked text frame.
func appendTextFrame(b, p []byte) []byte {
	const finText = 0x80 | websocket.TextMessage
	switch n := len(p); {
	case n < 126:
		b = append(b, finText, byte(n))
	case n <= 0xffff:
		b = append(b, finText, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, finText, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// sendPing runs on the ping timer and sets it again.
func (c *wsConn) sendPing() {
	select {
	case <-c.done:
		return
	default:
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.cfg.WriteTimeout)); err != nil {
		c.Close(protocol.CloseSlow, "ping failed")
		return
	}
	c.mu.Lock()
	ping := c.ping
	c.mu.Unlock()
	ping.Reset(c.cfg.PingInterval)
}

// readLoop reads frames until the socket fails or closes, passing each text
// frame to handle; a binary frame or one that is not UTF-8 ends it. It
// returns the reason it stopped.
func (c *wsConn) readLoop(handle func([]byte)) error {
	c.ws.SetReadLimit(int64(c.cfg.MaxFrameBytes))
	var readBy time.Time // the read deadline last set here
	alive := func() {
		select {
		case <-c.done:
			// Closing: the writer wakes the read loop with a deadline
			// that must not be pushed back.
		default:
			if t, push := pushDeadline(readBy, c.cfg.PongTimeout); push {
				readBy = t
				_ = c.ws.SetReadDeadline(t)
			}
		}
	}
	alive()
	c.ws.SetPongHandler(func(string) error {
		if !c.inMessage.Load() {
			alive()
		}
		return nil
	})
	// The client's close is answered by the writer, after the frames it
	// is writing and with nothing after it (the library's own answer
	// would race them on the socket).
	c.ws.SetCloseHandler(func(int, string) error { c.peerClosed.Store(true); return nil })
	// A client's ping is answered with the write timeout, as the gateway's
	// own pings are: the library's own answer gives its write a second,
	// and leaves the socket's write deadline that near for the writer,
	// which takes the one it set last for still in force (pushDeadline).
	c.ws.SetPingHandler(func(data string) error {
		err := c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.cfg.WriteTimeout))
		if err == nil || errors.Is(err, websocket.ErrCloseSent) || isTimeout(err) {
			return nil // as the library's: a pong that could not go is no reason to stop reading
		}
		return err
	})
	for {
		mt, data, err := c.readFrame()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				// The library may have sent close 1009 already.
				c.closeSent.Store(true)
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
		if !utf8.Valid(*data) {
			// RFC 6455 §8.1: a text frame that is not UTF-8 fails the
			// connection. Acted on, its bytes could be stored and passed
			// on to a browser, which would fail its own connection.
			c.Close(protocol.CloseInvalidData, "text frame is not valid UTF-8")
			return errors.New("gateway: text frame is not valid UTF-8")
		}
		handle(*data)
		putReadBuf(data)
		select {
		case <-c.done:
			return nil
		default:
		}
	}
}

// readBufs hold frames while they are handled: handle keeps nothing of
// the bytes it is given (what it keeps it decodes into copies), so a
// buffer goes back once it returns. An idle connection holds none.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// readBufMax is the largest buffer kept for reuse: one grown by a large
// frame is left to the collector.
const readBufMax = 64 << 10

func putReadBuf(b *[]byte) {
	if cap(*b) <= readBufMax {
		*b = (*b)[:0]
		readBufs.Put(b)
	}
}

// readFrame waits for the next data frame and reads it into a pooled
// buffer (give it back with putReadBuf); the library's ReadMessage would
// allocate one per frame. The read limit holds as for ReadMessage.
func (c *wsConn) readFrame() (int, *[]byte, error) {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return mt, nil, err
	}
	c.inMessage.Store(true)
	defer c.inMessage.Store(false)
	b := readBufs.Get().(*[]byte)
	buf := (*b)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			*b = buf
			return mt, b, nil
		}
		if err != nil {
			*b = buf
			putReadBuf(b)
			return mt, nil, err
		}
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func (c *wsConn) drop() { _ = c.ws.NetConn().Close() }
