package gateway

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Each connection the gateway accepts is dropped by the kernel once what
// the gateway sent goes unacknowledged for the peer timeout, so an event
// stream whose client vanished ends then, not when retransmissions give
// up a quarter of an hour later.
func TestAcceptedConnectionsCarryThePeerTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pl := patientListener{Listener: ln, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		sleep: time.Sleep, peerTimeout: 42 * time.Second}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ms int
	var opErr error
	if err := raw.Control(func(fd uintptr) {
		ms, opErr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		t.Fatal(err)
	}
	if opErr != nil {
		t.Fatal(opErr)
	}
	if ms != 42000 {
		t.Fatalf("TCP_USER_TIMEOUT of an accepted connection is %d ms; want 42000", ms)
	}
}
