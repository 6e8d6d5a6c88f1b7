package gateway

import (
	"sync"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

// The transport seam: what a session needs from its connection. The
// WebSocket code (transport_ws.go) stays behind it, so the session's logic
// can be driven by a fake in tests and knows nothing of fasthttp.
//
// A transport writes on its own: Send only queues, so a session never
// waits for a socket, and a client that does not read is closed as slow
// (4001) while its messages stay pending in JetStream.

// transport is what a session needs from a connection.
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

// conn is a transport together with the loop its session runs on. The
// server runs a session on any conn the same way (Server.runSession):
// the WebSocket (transport_ws.go) and the HTTP fallback's event stream
// with its POSTs (transport_sse.go).
type conn interface {
	transport
	// readLoop hands the client's frames to handle, one at a time and
	// never two at once, until the connection ends; it returns why it
	// ended. No frame is handed on after it returns.
	readLoop(handle func([]byte)) error
	// finished is closed once the connection's last write is done and its
	// socket is closed.
	finished() <-chan struct{}
	// closedWith is the close code and reason; valid once Done is closed.
	closedWith() (code int, reason string)
	// drop closes the socket at once, writing nothing more, as a crash
	// would (Server.Abort).
	drop()
}

// outQueue is the queue both transports write from: Send and Close only
// queue and start the transport's writer when none runs, so no caller
// waits for a socket. The writer takes batches with take and, once
// closing, asks drained whether it is done.
type outQueue struct {
	cfg    *Config
	writer func() // the transport's writer, run on a runner (workers.go)

	mu      sync.Mutex // guards queue, writing, closing, pingDue and ping
	queue   [][]byte
	writing bool // a writer goroutine is running
	closing bool // Close was called; the writer writes the close
	pingDue bool // the heartbeat is due (the event stream's)
	ping    *time.Timer

	closeOnce sync.Once
	done      chan struct{} // closed by Close
	// closeCode and closeReason are written once, before done is closed.
	closeCode   int
	closeReason string

	writerDone chan struct{} // closed once the close is written and the socket closed
}

func newOutQueue(cfg *Config, writer func()) outQueue {
	return outQueue{cfg: cfg, writer: writer, done: make(chan struct{}), writerDone: make(chan struct{})}
}

func (q *outQueue) Send(frame []byte) bool {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return false
	}
	if len(q.queue) >= q.cfg.OutboundQueue {
		q.mu.Unlock()
		q.Close(protocol.CloseSlow, "outbound queue full")
		return false
	}
	q.queue = append(q.queue, frame)
	q.startLocked()
	return true
}

func (q *outQueue) Close(code int, reason string) {
	q.closeOnce.Do(func() {
		q.closeCode, q.closeReason = code, reason
		close(q.done)
		q.mu.Lock()
		q.ping.Stop()
		q.closing = true
		q.startLocked()
	})
}

// startLocked starts the writer unless one runs, and unlocks.
func (q *outQueue) startLocked() {
	start := !q.writing
	q.writing = true
	q.mu.Unlock()
	if start {
		runners.Go(q.writer)
	}
}

func (q *outQueue) Done() <-chan struct{} { return q.done }

func (q *outQueue) finished() <-chan struct{} { return q.writerDone }

func (q *outQueue) closedWith() (int, string) { return q.closeCode, q.closeReason }

// keptBatch is the most frames an idle connection's emptied batch holds
// room for, kept for its next frames (its writer drops larger ones).
const keptBatch = 4

// take hands the writer everything queued, swapping in batch (emptied)
// for the next frames, and says whether Close was called and a
// heartbeat is due. stop is true when there is nothing to write: the
// writer ends, and the next Send starts another.
func (q *outQueue) take(batch [][]byte) (next [][]byte, closing, ping, stop bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	closing, ping = q.closing, q.pingDue
	q.pingDue = false
	if len(q.queue) == 0 && !closing && !ping {
		q.writing = false
		if cap(q.queue) == 0 && cap(batch) <= keptBatch {
			// The next Send appends here rather than to a new array.
			q.queue = batch[:0]
		}
		return batch, false, false, true
	}
	next, q.queue = q.queue, batch[:0]
	return next, closing, ping, false
}

// flushOnClose reports whether what is queued is still written after
// Close: not for a slow or replaced client.
func (q *outQueue) flushOnClose() bool {
	return q.closeCode != protocol.CloseSlow && q.closeCode != protocol.CloseReplaced
}

// drained, once closing, drops whatever was queued meanwhile and reports
// whether there was none.
func (q *outQueue) drained() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	empty := len(q.queue) == 0
	q.queue = nil
	return empty
}
