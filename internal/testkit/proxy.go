package testkit

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Proxy forwards TCP connections to a target and can cut them all at once,
// as a network failure would, without either end closing cleanly.
type Proxy struct {
	Addr   string
	target string
	ln     net.Listener

	mu    sync.Mutex // guards conns, gen and target
	conns map[net.Conn]struct{}
	// gen counts the cuts and changes of target: a connection dialed
	// across one is closed, not let through to the old target.
	gen uint64
}

// StartProxy listens on a random loopback port and forwards to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.DropAll() })
	return p
}

// SetTarget changes where new connections go.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.gen++
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target, gen := p.target, p.gen
		p.mu.Unlock()
		u, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(gen, c, u) {
			c.Close()
			u.Close()
			continue
		}
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

// track records a forwarded connection's two ends, unless the proxy was
// cut or retargeted since generation gen, while it was being dialed.
func (p *Proxy) track(gen uint64, cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen != gen {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// DropAll closes every forwarded connection.
func (p *Proxy) DropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// CutNATS cuts every connection through p and sends new ones nowhere
// (they fail), until restore is called; it returns once nc, a NATS
// connection through p, has seen its connection drop. restore sends new
// connections to p's target again.
func (p *Proxy) CutNATS(nc *nats.Conn) (restore func()) {
	p.mu.Lock()
	target := p.target
	p.target = "127.0.0.1:1" // nothing listens there
	p.mu.Unlock()
	p.DropAll()
	tick := time.NewTicker(time.Millisecond) // nothing signals the drop to wait on
	defer tick.Stop()
	for nc.Status() == nats.CONNECTED {
		<-tick.C
	}
	return func() { p.SetTarget(target) }
}
