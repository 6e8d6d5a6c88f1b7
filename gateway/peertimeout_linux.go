package gateway

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setPeerTimeout has the kernel drop c once data sent on it has gone
// unacknowledged for d (TCP_USER_TIMEOUT). A peer that vanished without a
// close (a phone that lost its network, a laptop put to sleep) is
// otherwise found only when the kernel's retransmissions give up, about
// 15 minutes on. A WebSocket's pings find it within PongTimeout anyway;
// the HTTP fallback's event stream carries nothing from the client, so
// without this its session, and the user's presence, would outlive the
// client by those 15 minutes. It reaches the client only when the client
// is the peer: a proxy in front (one terminating TLS) acknowledges for
// it, and needs the same timeout of its own. Best effort: a socket that
// refuses the option keeps the kernel's default.
func setPeerTimeout(c net.Conn, d time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}
