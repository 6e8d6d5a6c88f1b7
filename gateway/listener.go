package gateway

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// patientListener rides out running out of file descriptors. fasthttp
// treats any accept error other than a timeout as fatal and stops serving,
// so one burst of connections past the process's open-file limit would
// end the gateway and every session on it. Instead Accept waits, backing
// off from 5 ms to 1 s as net/http does, until a descriptor is free; the
// connections waiting meanwhile sit in the kernel's backlog or are refused
// there, and the sessions already open carry on.
//
// It also bounds how long data the gateway sent may go unacknowledged on
// each connection it accepts (peerTimeout; see setPeerTimeout).
type patientListener struct {
	net.Listener
	log         *slog.Logger
	onFull      func() // counts each time the limit was hit
	sleep       func(time.Duration)
	peerTimeout time.Duration // zero: the kernel's own (about 15 minutes)
}

func (l patientListener) Accept() (net.Conn, error) {
	var wait time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if l.peerTimeout > 0 {
				setPeerTimeout(c, l.peerTimeout)
			}
			return c, nil
		}
		if !outOfDescriptors(err) {
			return c, err
		}
		if wait == 0 {
			wait = 5 * time.Millisecond
			l.log.Warn("out of file descriptors; waiting to accept", "err", err)
			if l.onFull != nil {
				l.onFull()
			}
		} else {
			wait = min(2*wait, time.Second)
		}
		l.sleep(wait)
	}
}

func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// Connections are sorted between two fasthttp servers by their first
// request line. A WebSocket upgrade is the only request its connection
// carries, and its server (Server.wsHTTP) streams no request body, so
// fasthttp lets the connection's 4 KiB read buffer go before the upgrade
// and the hijacked connection keeps none. Every other request goes to the
// server that streams large bodies (media uploads to the embedded store),
// which must keep its buffer. A connection whose first request is an
// upgrade that fails is closed after the answer (Server.routeUpgrade), so
// its next request cannot reach the server that does not stream.
// Shutdown and Abort close the connections still being sorted.

// sorter accepts connections on one listener and hands each to the
// upgrades' queue or the other. It owns the connections it is still
// reading the first bytes of, so closing it closes those too.
type sorter struct {
	ln        net.Listener
	ws, other *connQueue
	timeout   time.Duration // for the first request line, and the rest of its request

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // being sorted
	closed bool
}

func newSorter(ln net.Listener, timeout time.Duration) *sorter {
	return &sorter{ln: ln, ws: newConnQueue(ln.Addr()), other: newConnQueue(ln.Addr()),
		timeout: timeout, conns: map[net.Conn]struct{}{}}
}

// run accepts until the listener fails or the sorter is closed.
func (st *sorter) run() error {
	for {
		c, err := st.ln.Accept()
		if err != nil {
			return err
		}
		if !st.track(c) {
			_ = c.Close()
			return net.ErrClosed
		}
		go st.sort(c)
	}
}

// close stops accepting, closes the connections not sorted yet, and ends
// the queues.
func (st *sorter) close() {
	st.mu.Lock()
	st.closed = true
	conns := st.conns
	st.conns = map[net.Conn]struct{}{}
	st.mu.Unlock()
	_ = st.ln.Close()
	for c := range conns {
		_ = c.Close()
	}
	_ = st.ws.Close()
	_ = st.other.Close()
}

func (st *sorter) track(c net.Conn) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	st.conns[c] = struct{}{}
	return true
}

// untrack reports whether c was still the sorter's (not closed by close).
func (st *sorter) untrack(c net.Conn) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.conns[c]
	delete(st.conns, c)
	return ok
}

// wsRequestLine is how a WebSocket upgrade's request line starts; a space
// or a query follows it.
const wsRequestLine = "GET " + PathWS

// sort reads c's first bytes until they show whether it is an upgrade,
// then hands it on. The time it took comes off its request's: the
// handshake timeout counts from the accept, as fasthttp counted it.
func (st *sorter) sort(c net.Conn) {
	limit := time.Now().Add(st.timeout)
	_ = c.SetReadDeadline(limit)
	buf := make([]byte, 0, len(wsRequestLine)+1)
	upgrade := false
	for {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if isWSPrefix(buf) {
			if len(buf) == cap(buf) {
				last := buf[len(buf)-1]
				upgrade = last == ' ' || last == '?'
				break
			}
		} else {
			break
		}
		if err != nil {
			// Gone, or silent past the handshake timeout, before saying
			// whether it is an upgrade: as fasthttp would, close it.
			st.untrack(c)
			_ = c.Close()
			return
		}
	}
	if !st.untrack(c) {
		return // closed meanwhile
	}
	pc := &prefixedConn{Conn: c, prefix: buf, limit: limit}
	pc.limited.Store(true)
	if upgrade {
		st.ws.push(pc)
	} else {
		st.other.push(pc)
	}
}

// isWSPrefix reports whether b is the start of an upgrade's request line.
func isWSPrefix(b []byte) bool {
	n := min(len(b), len(wsRequestLine))
	return string(b[:n]) == wsRequestLine[:n]
}

// prefixedConn is a connection whose first bytes were already read. Until
// its first request reaches a handler (Server.route calls requestRead),
// no read deadline set on it goes past limit, the end of the handshake
// timeout counted from the accept: a client that sends its request a
// byte at a time gets the timeout once, not once for the sorter and once
// more for fasthttp.
type prefixedConn struct {
	net.Conn
	prefix  []byte
	limit   time.Time
	limited atomic.Bool
}

func (c *prefixedConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *prefixedConn) SetReadDeadline(t time.Time) error {
	if c.limited.Load() && (t.IsZero() || t.After(c.limit)) {
		t = c.limit
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *prefixedConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// requestRead lifts the limit once a request has been read whole.
func (c *prefixedConn) requestRead() { c.limited.Store(false) }

// CloseWrite half-closes the connection, which wsConn.halfClose needs so
// a close frame is not lost to a reset.
func (c *prefixedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// connQueue is a listener that accepts the connections pushed to it.
type connQueue struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the queue's server, or closes it once the queue is
// closed.
func (q *connQueue) push(c net.Conn) {
	select {
	case q.conns <- c:
	case <-q.closed:
		_ = c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
