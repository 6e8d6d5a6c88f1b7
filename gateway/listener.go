package gateway

import (
	"errors"
	"log/slog"
	"net"
	"sync"
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
type patientListener struct {
	net.Listener
	log    *slog.Logger
	onFull func() // counts each time the limit was hit
	sleep  func(time.Duration)
}

func (l patientListener) Accept() (net.Conn, error) {
	var wait time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || !outOfDescriptors(err) {
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

// sortConns accepts from ln until it fails and hands each connection, once
// its first bytes say which, to ws or other.
func (s *Server) sortConns(ln net.Listener, ws, other *connQueue) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go s.sortConn(c, ws, other)
	}
}

// wsRequestLine is how a WebSocket upgrade's request line starts; a space
// or a query follows it.
const wsRequestLine = "GET " + PathWS

// sortConn reads c's first bytes, within the handshake timeout, until
// they show whether it is an upgrade.
func (s *Server) sortConn(c net.Conn, ws, other *connQueue) {
	_ = c.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
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
			_ = c.Close()
			return
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixedConn{Conn: c, prefix: buf}
	if upgrade {
		ws.push(pc)
	} else {
		other.push(pc)
	}
}

// isWSPrefix reports whether b is the start of an upgrade's request line.
func isWSPrefix(b []byte) bool {
	n := min(len(b), len(wsRequestLine))
	return string(b[:n]) == wsRequestLine[:n]
}

// prefixedConn is a connection whose first bytes were already read.
type prefixedConn struct {
	net.Conn
	prefix []byte
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
