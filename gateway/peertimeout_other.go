//go:build !linux

package gateway

import (
	"net"
	"time"
)

// setPeerTimeout does nothing where TCP_USER_TIMEOUT is not offered: a
// vanished peer is found when the kernel's retransmissions give up.
func setPeerTimeout(net.Conn, time.Duration) {}
