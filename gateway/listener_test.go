package gateway

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// failingListener fails its first Accept calls as the kernel does when the
// process is out of descriptors, then accepts for real.
type failingListener struct {
	net.Listener
	fails int
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Running out of file descriptors holds accepting back, with a growing
// pause, instead of ending the server; other errors still end it.
func TestAcceptWaitsOutDescriptorExhaustion(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var waits []time.Duration
	full := 0
	pl := patientListener{Listener: &failingListener{Listener: ln, fails: 9},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), onFull: func() { full++ },
		sleep: func(d time.Duration) { waits = append(waits, d) }}
	dialed := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	c, err := pl.Accept()
	if err != nil {
		t.Fatalf("accept after running out of descriptors: %v", err)
	}
	c.Close()
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000}
	if len(waits) != len(want) || full != 1 {
		t.Fatalf("waited %v, limit reported %d times; want %d waits and 1 report", waits, full, len(want))
	}
	for i, w := range want {
		if waits[i] != w*time.Millisecond {
			t.Fatalf("wait %d was %s, want %s", i, waits[i], w*time.Millisecond)
		}
	}

	ln.Close()
	if _, err := pl.Accept(); err == nil || outOfDescriptors(err) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept on a closed listener: %v, want net.ErrClosed", err)
	}
}

// Connections go to the upgrades' server only when their request line is
// a GET of the WebSocket path; everything else, whole, to the other; a
// connection that says nothing within the handshake timeout is closed.
func TestConnectionsAreSortedByTheirFirstRequestLine(t *testing.T) {
	const long = 10 * time.Second
	// sorter starts a sorter with the handshake timeout given. The
	// connections sorted get a long one: a test goroutine held up by a
	// busy machine must not run into it.
	sorter := func(timeout time.Duration) (*sorter, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		st := newSorter(ln, timeout)
		go func() { _ = st.run() }()
		t.Cleanup(st.close)
		return st, ln.Addr().String()
	}
	st, addr := sorter(long)
	ws, other := st.ws, st.other
	for _, c := range []struct {
		first   string
		upgrade bool
	}{
		{"GET /v1/ws HTTP/1.1\r\n", true},
		{"GET /v1/ws?access_token=x HTTP/1.1\r\n", true},
		{"GET /v1/wsx HTTP/1.1\r\n", false},
		{"GET /v1/events HTTP/1.1\r\n", false},
		{"POST /v1/ws HTTP/1.1\r\n", false},
	} {
		cl, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := io.WriteString(cl, c.first); err != nil {
			t.Fatal(err)
		}
		want, q := "other", other
		if c.upgrade {
			want, q = "upgrades", ws
		}
		accepted := make(chan net.Conn, 1)
		go func() {
			if got, err := q.Accept(); err == nil {
				accepted <- got
			}
		}()
		var got net.Conn
		select {
		case got = <-accepted:
		case <-time.After(long):
			t.Fatalf("%q never reached the %s server", c.first, want)
		}
		b := make([]byte, len(c.first))
		_ = got.SetReadDeadline(time.Now().Add(long))
		if _, err := io.ReadFull(got, b); err != nil || string(b) != c.first {
			t.Fatalf("%q on the %s server reads %q, %v; want it whole", c.first, want, b, err)
		}
		got.Close()
	}
	ws.Close()
	if _, err := ws.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}

	// A start of an upgrade, then silence past the timeout: closed.
	_, addr = sorter(200 * time.Millisecond)
	cl, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := io.WriteString(cl, "G"); err != nil {
		t.Fatal(err)
	}
	_ = cl.SetReadDeadline(time.Now().Add(long))
	if _, err := cl.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("a silent connection: read %v, want it closed", err)
	}
}

// A sorted connection keeps what the sorter needs of the socket: reads
// replay the bytes already read, a read deadline cannot reach past the
// handshake's until a request has been read, and it can still half-close
// (wsConn.halfClose).
func TestPrefixedConnKeepsTheSocketsAbilities(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := &prefixedConn{Conn: raw, prefix: []byte("GET"), limit: time.Now().Add(100 * time.Millisecond)}
	c.limited.Store(true)

	b := make([]byte, 8)
	if n, err := c.Read(b); err != nil || string(b[:n]) != "GET" {
		t.Fatalf("first read %q, %v; want the bytes already read", b[:n], err)
	}
	// Asked for an hour, the deadline is the handshake's: the read ends.
	_ = c.SetReadDeadline(time.Now().Add(time.Hour))
	var ne net.Error
	if _, err := c.Read(b); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the handshake's deadline: %v, want a timeout", err)
	}
	c.requestRead()
	_ = c.SetReadDeadline(time.Time{})
	if _, err := io.WriteString(peer, "more"); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(b); err != nil || string(b[:n]) != "more" {
		t.Fatalf("read after the request: %q, %v", b[:n], err)
	}

	hc, ok := net.Conn(c).(interface{ CloseWrite() error })
	if !ok || hc.CloseWrite() != nil {
		t.Fatal("a sorted connection cannot half-close")
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := peer.Read(b); !errors.Is(err, io.EOF) {
		t.Fatalf("the peer reads %v after the half-close, want EOF", err)
	}
	if _, err := io.WriteString(peer, "bye"); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(b); err != nil || string(b[:n]) != "bye" {
		t.Fatalf("read after the half-close: %q, %v; the read side must stay open", b[:n], err)
	}
}
