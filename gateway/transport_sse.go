package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/protocol"
)

// The HTTP fallback, for networks that let plain HTTP through but not a
// WebSocket: the server's frames come as Server-Sent Events on one
// long GET, and the client's frames go as POSTs naming the session. It is
// a second transport behind the seam (transport.go): the session, its
// limits and its close codes are the WebSocket's, only the framing
// differs. PROTOCOL.md's "HTTP fallback" section is the contract.
//
// The stream is a hijacked connection, written as the WebSocket is: Send
// queues, a writer runs while there is something to write, a timer adds
// a heartbeat comment, and Close writes a final close event. Its read
// loop only watches the socket, so the session ends when the client goes.
// POSTs take the read loop's turn (sseConn.in) to run their frames through
// session.handle, one POST at a time: a session's frames are handled one
// after another, as a WebSocket's read loop hands them on.

// PathSSE is the event stream (GET); its frames are POSTed to
// PathSSE/<session id>.
const PathSSE = "/v1/sse"

// sseConn is one event stream and the POSTs that carry its client's
// frames.
type sseConn struct {
	nc net.Conn
	id Identity // whose stream it is; a POST must carry a token of the same device
	// chunked: the request was HTTP/1.1, so the stream is sent in chunks.
	// An HTTP/1.0 client (or a proxy speaking 1.0 to the gateway) cannot
	// read chunks and must not be sent them (RFC 9112, 6.1): its stream
	// is the bytes as they are, ended by the connection's close.
	chunked bool

	// in is the read loop's turn: a POST holds it while its frames run
	// through handle, so frames are handled one at a time and none after
	// readLoop has returned.
	in     sync.Mutex
	handle func([]byte)  // set by readLoop
	ended  bool          // readLoop returned
	ready  chan struct{} // closed once handle is set

	outQueue
}

func newSSEConn(nc net.Conn, cfg *Config, id Identity, chunked bool) *sseConn {
	c := &sseConn{nc: nc, id: id, chunked: chunked, ready: make(chan struct{})}
	c.outQueue = newOutQueue(cfg, c.writer)
	// Set under the lock heartbeat reads it under: the timer may fire
	// before this goroutine's write would otherwise be seen.
	c.mu.Lock()
	c.ping = time.AfterFunc(cfg.PingInterval, c.heartbeat)
	c.mu.Unlock()
	return c
}

// writeHeader writes the response's status and headers, before anything
// else is written. allowOrigin, when set, is the origin let read the
// stream across origins.
func (c *sseConn) writeHeader(allowOrigin string) error {
	h := "HTTP/1.1 200 OK\r\n" +
		"Content-Type: text/event-stream; charset=utf-8\r\n" +
		"Cache-Control: no-cache\r\n" +
		"X-Accel-Buffering: no\r\n" +
		"X-Content-Type-Options: nosniff\r\n" +
		"Connection: close\r\n"
	if c.chunked {
		h += "Transfer-Encoding: chunked\r\n"
	}
	if allowOrigin != "" {
		h += "Access-Control-Allow-Origin: " + allowOrigin + "\r\nVary: Origin\r\n"
	}
	h += "\r\n"
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout)); err != nil {
		return err
	}
	_, err := io.WriteString(c.nc, h)
	return err
}

func (c *sseConn) drop() { _ = c.nc.Close() }

// heartbeat runs on the ping timer: it has the writer write a comment,
// which keeps proxies from timing the stream out and finds a client that
// is gone, and sets the timer again.
func (c *sseConn) heartbeat() {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.pingDue = true
	c.startLocked()
	c.ping.Reset(c.cfg.PingInterval)
}

// writer writes the queued frames as events until there is nothing to
// write, then ends. Events are gathered into chunks of up to maxWrite (a
// larger event is a chunk of its own), each written under its own
// WriteTimeout, as the WebSocket's frames are: a batch can be a whole
// backlog, and one deadline for all of it would close a client that reads
// steadily but cannot take that much within WriteTimeout. After Close it
// writes what is queued (bounded by WriteTimeout, and not for a slow or
// replaced client), then the close event and the end of the response, and
// closes the socket, which ends the read loop.
func (c *sseConn) writer() {
	var batch [][]byte
	var buf []byte
	failed := false
	for {
		var closing, ping, stop bool
		batch, closing, ping, stop = c.take(batch)
		if stop {
			return
		}
		flush := !closing || c.flushOnClose()
		buf = buf[:0]
		for i, b := range batch {
			if flush && !failed {
				if len(buf) > 0 && len(buf)+len(b) > maxWrite {
					failed = !c.writeOrClose(buf)
					buf = buf[:0]
				}
				buf = appendEvent(buf, b)
			}
			batch[i] = nil
		}
		if ping && !closing {
			buf = append(buf, ": ping\n\n"...)
		}
		if len(buf) > 0 && !failed {
			failed = !c.writeOrClose(buf)
		}
		if closing && (c.drained() || failed || !flush) {
			break
		}
		if cap(batch) > 64 {
			batch = nil // keep no large buffer
		}
		if cap(buf) > 64<<10 {
			buf = nil
		}
	}
	if !failed {
		_ = c.writeChunk(appendCloseEvent(buf[:0], c.closeCode, c.closeReason), time.Second)
		if c.chunked {
			_, _ = io.WriteString(c.nc, "0\r\n\r\n") // the last chunk: the response is complete
		}
	}
	_ = c.nc.Close()
	close(c.writerDone)
}

// writeOrClose writes b as one chunk under WriteTimeout and reports
// whether it was written; when it was not, the client is closed as slow.
func (c *sseConn) writeOrClose(b []byte) bool {
	if err := c.writeChunk(b, c.cfg.WriteTimeout); err != nil {
		c.Close(protocol.CloseSlow, "write failed")
		return false
	}
	return true
}

// writeChunk writes b as one chunk of the response (as it is, to an
// HTTP/1.0 client).
func (c *sseConn) writeChunk(b []byte, timeout time.Duration) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if !c.chunked {
		_, err := c.nc.Write(b)
		return err
	}
	chunk := make([]byte, 0, len(b)+12)
	chunk = strconv.AppendInt(chunk, int64(len(b)), 16)
	chunk = append(chunk, "\r\n"...)
	chunk = append(chunk, b...)
	chunk = append(chunk, "\r\n"...)
	_, err := c.nc.Write(chunk)
	return err
}

// readLoop watches the socket until it fails or closes: nothing is read
// from it (a well-behaved client sends nothing more on a stream), so this
// is how the session learns that the client went away. Meanwhile POSTs
// hand their frames to handle (frames). It returns once no POST is running
// and none can start.
func (c *sseConn) readLoop(handle func([]byte)) error {
	c.in.Lock()
	c.handle = handle
	c.in.Unlock()
	close(c.ready)
	var buf [64]byte
	var err error
	for err == nil {
		_, err = c.nc.Read(buf[:]) // anything sent is dropped
	}
	c.Close(protocol.CloseGoingAway, "") // a no-op if the server closed first
	c.in.Lock()
	c.ended = true
	c.in.Unlock()
	return err
}

// postResult says what became of a POST's frames.
type postResult int

const (
	postHandled   postResult = iota // every frame was handed to the session
	postNoSession                   // the session had ended: nothing was acted on
	postEnded                       // the session ended partway: the frames after that were not acted on
)

// frames hands the frames of a POST body (one per line) to the session,
// in order, as the read loop would. It waits for the session to have
// started.
func (c *sseConn) frames(body []byte) postResult {
	select {
	case <-c.ready:
	case <-c.done:
		return postNoSession
	}
	c.in.Lock()
	defer c.in.Unlock()
	if c.ended || c.isDone() {
		return postNoSession
	}
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		c.handle(line)
		if c.isDone() {
			return postEnded
		}
	}
	return postHandled
}

func (c *sseConn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// appendEvent appends frame as one event: msg and receipt frames carry
// their stream sequence as the event id; the frame's lines (a body may
// hold JSON whitespace that breaks lines) each become a data line, which
// the client joins with "\n" again.
func appendEvent(b, frame []byte) []byte {
	if seq, ok := eventID(frame); ok {
		b = append(b, "id: "...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, '\n')
	}
	for {
		b = append(b, "data: "...)
		i := bytes.IndexAny(frame, "\r\n")
		if i < 0 {
			b = append(b, frame...)
			b = append(b, '\n')
			break
		}
		b = append(b, frame[:i]...)
		b = append(b, '\n')
		if frame[i] == '\r' && i+1 < len(frame) && frame[i+1] == '\n' {
			i++
		}
		frame = frame[i+1:]
	}
	return append(b, '\n')
}

// eventID returns the stream sequence of a msg or receipt frame. The
// gateway writes those frames itself (protocol.AppendMsg, AppendReceipt)
// with "seq" before the body, and every field before it is an id or a
// number, so the first `,"seq":` is the frame's own.
func eventID(frame []byte) (uint64, bool) {
	if !bytes.HasPrefix(frame, []byte(`{"type":"msg",`)) && !bytes.HasPrefix(frame, []byte(`{"type":"receipt",`)) {
		return 0, false
	}
	i := bytes.Index(frame, []byte(`,"seq":`))
	if i < 0 {
		return 0, false
	}
	rest := frame[i+len(`,"seq":`):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	return seq, err == nil
}

// appendCloseEvent appends the final event: the close code and reason a
// WebSocket would have had in its close frame.
func appendCloseEvent(b []byte, code int, reason string) []byte {
	r, _ := json.Marshal(reason)
	b = append(b, "event: close\ndata: {\"type\":\"close\",\"code\":"...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"reason":`...)
	b = append(b, r...)
	return append(b, "}\n\n"...)
}

// sseSessions finds this gateway's event streams by session id, for the
// POSTs that carry their clients' frames.
type sseSessions struct {
	mu sync.Mutex // guards m
	m  map[string]*sseConn
}

func (r *sseSessions) add(sid string, c *sseConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]*sseConn{}
	}
	r.m[sid] = c
}

func (r *sseSessions) remove(sid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, sid)
}

func (r *sseSessions) get(sid string) *sseConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[sid]
}

// serveSSE opens an event stream: the same checks as a WebSocket
// upgrade (draining, origin, token), then the connection is the stream's.
// Last-Event-ID (the header, or last_event_id in the query) is read but
// does not move delivery: the stream starts, as a WebSocket does, after
// the device's cursor, so what the client received but did not ack comes
// again (PROTOCOL.md says why).
func (s *Server) serveSSE(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() {
		httpError(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		ctx.Response.Header.Set("Allow", "GET")
		return
	}
	if s.closing.Load() {
		s.refuse(ctx, fasthttp.StatusServiceUnavailable, "shutting_down", "gateway is shutting down")
		return
	}
	if !s.checkOrigin(ctx) {
		s.refuse(ctx, fasthttp.StatusForbidden, "bad_origin", "origin not allowed")
		return
	}
	id, err := s.verifyToken(bearerToken(ctx))
	if err != nil {
		s.refuseToken(ctx, err)
		return
	}
	if !s.regions.admit(s, ctx, id) { // served only in its home region (regions.go)
		return
	}
	last := string(ctx.Request.Header.Peek("Last-Event-ID"))
	if last == "" {
		last = string(ctx.QueryArgs().Peek("last_event_id"))
	}
	origin := string(ctx.Request.Header.Peek("Origin"))
	chunked := ctx.Request.Header.IsHTTP11()
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(nc net.Conn) { s.runSSE(nc, id, origin, last, chunked) })
}

// runSSE runs a session on a hijacked connection, as runConn does on a
// WebSocket. The session is findable by its id before its welcome goes
// out, so the client's first POST finds it.
func (s *Server) runSSE(nc net.Conn, id Identity, origin, lastEventID string, chunked bool) {
	c := newSSEConn(nc, &s.cfg, id, chunked)
	if err := c.writeHeader(origin); err != nil {
		c.ping.Stop()
		_ = nc.Close()
		return
	}
	sess := newSession(s, id, c)
	if lastEventID != "" {
		// For the operator only: where the client says it was. Delivery
		// resumes from the cursor whatever it says.
		if n, err := strconv.ParseUint(lastEventID, 10, 64); err == nil {
			sess.log.Debug("event stream resumed", "last_event_id", n)
		}
	}
	s.sse.add(sess.sid, c)
	defer s.sse.remove(sess.sid)
	s.runSession(sess, c)
}

// serveSSEPost hands the frames of a POST to the live event stream it
// names, through the session's own frame handling: the same rate limits,
// answers and errors as over a WebSocket, which arrive on the stream. The
// POST's status says only whether the frames reached the session.
func (s *Server) serveSSEPost(ctx *fasthttp.RequestCtx) {
	if ctx.IsOptions() {
		s.sseClearance(ctx)
		return
	}
	if !ctx.IsPost() {
		httpError(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		ctx.Response.Header.Set("Allow", "POST, OPTIONS")
		return
	}
	if !s.checkOrigin(ctx) {
		httpError(ctx, fasthttp.StatusForbidden, "bad_origin", "origin not allowed")
		return
	}
	allowCrossOrigin(ctx)
	id, err := s.verifyToken(bearerToken(ctx))
	if err != nil {
		// Not a handshake: answered as one, not counted as one.
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="switchboard"`)
		httpError(ctx, fasthttp.StatusUnauthorized, tokenRefusal(err), "missing, invalid or expired token")
		return
	}
	sid := string(ctx.Path()[len(PathSSE)+1:])
	c := s.sse.get(sid)
	if c == nil || c.id.User != id.User || c.id.Device != id.Device {
		// The same answer whether the id is unknown or another device's.
		httpError(ctx, fasthttp.StatusNotFound, "no_session", "no event stream of this device with this session id on this gateway; open a new one and resend")
		return
	}
	body, tooBig, err := readBody(ctx, s.cfg.MaxFrameBytes)
	switch {
	case err != nil:
		ctx.SetConnectionClose()
		httpError(ctx, fasthttp.StatusBadRequest, "bad_request", "could not read the request body")
		return
	case tooBig:
		// As a WebSocket frame over the limit: nothing in it is acted on,
		// and the session closes with 1009.
		ctx.SetConnectionClose()
		c.Close(protocol.CloseTooBig, "frame too big")
		httpError(ctx, fasthttp.StatusRequestEntityTooLarge, "too_large", "the body is over max_frame bytes; the session is closed with 1009")
		return
	case !utf8.Valid(body):
		// As a WebSocket text frame that is not UTF-8 (RFC 6455 §8.1).
		c.Close(protocol.CloseInvalidData, "text frame is not valid UTF-8")
		httpError(ctx, fasthttp.StatusBadRequest, "invalid_utf8", "the body is not valid UTF-8; the session is closed with 1007")
		return
	}
	switch c.frames(body) {
	case postHandled:
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	case postNoSession:
		httpError(ctx, fasthttp.StatusNotFound, "no_session", "the session has ended; open a new event stream and resend")
	case postEnded:
		httpError(ctx, fasthttp.StatusGone, "session_ended", "the session ended while this body was handled; the frames after that were not acted on")
	}
}

// sseClearance answers a browser's CORS preflight for a POST from
// another origin on the allow-list.
func (s *Server) sseClearance(ctx *fasthttp.RequestCtx) {
	if !s.checkOrigin(ctx) {
		httpError(ctx, fasthttp.StatusForbidden, "bad_origin", "origin not allowed")
		return
	}
	allowCrossOrigin(ctx)
	h := &ctx.Response.Header
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// allowCrossOrigin lets the page that sent a request read its answer; the
// request's Origin has passed checkOrigin.
func allowCrossOrigin(ctx *fasthttp.RequestCtx) {
	if o := ctx.Request.Header.Peek("Origin"); len(o) > 0 {
		ctx.Response.Header.SetBytesV("Access-Control-Allow-Origin", o)
		ctx.Response.Header.Set("Vary", "Origin")
	}
}

// readBody reads a request body of at most max bytes into a slice of its
// own. It reads the body's stream when the server streams bodies, so one
// over the bound is cut off there rather than buffered.
func readBody(ctx *fasthttp.RequestCtx, max int) (body []byte, tooBig bool, err error) {
	if stream := ctx.RequestBodyStream(); stream != nil {
		body, err = io.ReadAll(io.LimitReader(stream, int64(max)+1))
		if err != nil {
			return nil, false, err
		}
	} else {
		// A copy: fasthttp reuses the request's buffer once the handler
		// returns, and a send's body is published after that.
		body = append([]byte(nil), ctx.PostBody()...)
	}
	if len(body) > max {
		return nil, true, nil
	}
	return body, false, nil
}
