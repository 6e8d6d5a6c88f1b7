package gateway

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
