package gateway

import (
	"errors"
	"log/slog"
	"net"
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
