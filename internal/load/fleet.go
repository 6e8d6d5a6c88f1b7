package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/protocol"
)

// errorCounts counts failures by kind: "dial:http_401", "close:4001",
// "send:bad_id", "error_frame:unknown_seq", ... The first message of each
// kind is kept so a report says what actually went wrong.
type errorCounts struct {
	mu       sync.Mutex // guards both maps
	n        map[string]int64
	examples map[string]string
}

func newErrorCounts() *errorCounts {
	return &errorCounts{n: map[string]int64{}, examples: map[string]string{}}
}

func (e *errorCounts) add(kind string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n[kind]++
	if _, ok := e.examples[kind]; !ok && err != nil {
		e.examples[kind] = err.Error()
	}
}

// addN counts n errors of kind (another process's), with example.
func (e *errorCounts) addN(kind string, n int64, example string) {
	if n <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n[kind] += n
	if _, ok := e.examples[kind]; !ok && example != "" {
		e.examples[kind] = example
	}
}

func (e *errorCounts) snapshot() (map[string]int64, map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := make(map[string]int64, len(e.n))
	for k, v := range e.n {
		n[k] = v
	}
	ex := make(map[string]string, len(e.examples))
	for k, v := range e.examples {
		ex[k] = v
	}
	return n, ex
}

// dialKind names a failed first connection.
func dialKind(err error) string {
	var he *client.HandshakeError
	switch {
	case errors.As(err, &he):
		return fmt.Sprintf("dial:http_%d", he.Status)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "dial:timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "dial:refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "dial:reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "dial:no_source_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "dial:too_many_open_files"
	case errors.Is(err, context.Canceled):
		return "dial:canceled"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "dial:timeout"
	}
	return "dial:other"
}

// disconnectKind names a lost connection the load tool did not end.
func disconnectKind(err error) string {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return fmt.Sprintf("close:%d", ce.Code)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "disconnect:reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "disconnect:timeout"
	}
	return "disconnect:other"
}

// sendKind names a failed Send.
func sendKind(err error) string {
	var se *client.ServerError
	switch {
	case errors.As(err, &se):
		return "send:" + string(se.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "send:timeout"
	case errors.Is(err, client.ErrClosed):
		return "send:closed"
	case errors.Is(err, client.ErrReplaced):
		return "send:replaced"
	}
	return "send:other"
}

// fleet makes devices: names, URLs, source addresses, and the counters
// every device feeds.
type fleet struct {
	target    Target
	run       string // prefix of every user id, unique per run
	perSource int    // connections per local source address; 0: no binding
	errs      *errorCounts
	next      atomic.Int64 // device index: picks the URL and source address

	mu      sync.Mutex // guards devices and placed
	devices []*device
	placed  map[string][]string // user -> its home region's gateways (Placement)
}

func newFleet(t Target, cfg Config, run string, errs *errorCounts) *fleet {
	f := &fleet{target: t, run: run, errs: errs}
	if cfg.PerSource > 0 && t.loopback() {
		f.perSource = cfg.PerSource
	}
	f.next.Store(int64(cfg.FirstDevice))
	return f
}

// user is the user id of the i-th user of a kind ("s" sender, "r"
// recipient, ...) in this run.
func (f *fleet) user(kind string, i int) string { return fmt.Sprintf("%s%s%d", f.run, kind, i) }

// cast names nf sender users (with each one's index, for the ledger) and n
// receiving users of the given kind.
func (f *fleet) cast(nf int, kind string, n int) (feeders []string, index map[string]int, users []string) {
	feeders, users = make([]string, nf), make([]string, n)
	index = make(map[string]int, nf)
	for i := range feeders {
		feeders[i] = f.user("f", i)
		index[feeders[i]] = i
	}
	for j := range users {
		users[j] = f.user(kind, j)
	}
	return feeders, index, users
}

// device is one simulated device: a client and the goroutine that drains
// its channels.
type device struct {
	user    string
	c       *client.Client
	closing atomic.Bool // set before Close, so its disconnect is not an error
	drained chan struct{}
}

// handlers are what a device does with what it receives. Either may be
// nil: messages are then acked unseen and receipts dropped.
type handlers struct {
	msg     func(d *device, m client.Message)
	receipt func(d *device, r client.Receipt)
}

// dial connects one device; buffer is the SDK's channel capacity (small
// for idle devices, which hold thousands of clients in one process).
func (f *fleet) dial(ctx context.Context, user string, buffer int, h handlers) (*device, error) {
	idx := int(f.next.Add(1) - 1)
	d := &device{user: user, drained: make(chan struct{})}
	urls := f.target.URLs
	f.mu.Lock()
	if u, ok := f.placed[user]; ok {
		urls = u
	}
	f.mu.Unlock()
	opts := client.Options{
		URL: urls[idx%len(urls)],
		Token: func(context.Context) (string, error) {
			return f.target.Token(user, "d")
		},
		Buffer: buffer,
		OnDisconnect: func(err error) {
			if !d.closing.Load() {
				f.errs.add(disconnectKind(err), err)
			}
		},
		OnError: func(code protocol.ErrorCode, msg string, _ uint64) {
			f.errs.add("error_frame:"+string(code), errors.New(msg))
		},
	}
	if f.perSource > 0 {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+(idx/f.perSource)%254))}
		nd := &net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
		opts.NetDialContext = nd.DialContext
	}
	c, err := client.Dial(ctx, opts)
	if err != nil {
		return nil, err
	}
	d.c = c
	go d.drain(h)
	f.mu.Lock()
	f.devices = append(f.devices, d)
	f.mu.Unlock()
	return d, nil
}

// ack acks m: by its seq, or for a group read from its log by its place
// there.
func (d *device) ack(m client.Message) {
	if m.GSeq != 0 {
		d.c.AckGroup(m.Group, m.GSeq)
		return
	}
	d.c.Ack(m.Seq)
}

func (d *device) drain(h handlers) {
	defer close(d.drained)
	for {
		select {
		case m := <-d.c.Messages():
			if h.msg != nil {
				h.msg(d, m)
			} else {
				d.ack(m)
			}
		case r := <-d.c.Receipts():
			if h.receipt != nil {
				h.receipt(d, r)
			}
		case <-d.c.TypingEvents():
		case <-d.c.Done():
			return
		}
	}
}

// dialRetry dials until it succeeds or ctx ends, backing off as the SDK
// does between reconnects (a random wait up to a bound that doubles from
// 100ms to 5s), and counts each failure.
func (f *fleet) dialRetry(ctx context.Context, user string, buffer int, h handlers) (*device, error) {
	bound := 100 * time.Millisecond
	for {
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		d, err := f.dial(dctx, user, buffer, h)
		cancel()
		if err == nil {
			return d, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		f.errs.add(dialKind(err), err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(rand.Int64N(int64(bound))) + time.Millisecond):
		}
		bound = min(2*bound, 5*time.Second)
	}
}

// connectAll dials users with at most conc dials in flight and returns the
// devices in users' order (nil where it failed), recording each connect's
// latency. hfor gives user i's handlers (nil: none); tick is called after
// each device.
func (f *fleet) connectAll(ctx context.Context, users []string, conc, buffer int, hfor func(i int) handlers, lat *hist, tick func()) []*device {
	out := make([]*device, len(users))
	sem := make(chan struct{}, max(conc, 1))
	var wg sync.WaitGroup
	for i, u := range users {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// A connect that needs retries counts its whole wait: that
			// is what the device's user would see.
			start := time.Now()
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			var h handlers
			if hfor != nil {
				h = hfor(i)
			}
			d, err := f.dialRetry(rctx, u, buffer, h)
			cancel()
			if err == nil {
				out[i] = d
				if lat != nil {
					lat.record(time.Since(start))
				}
			}
			if tick != nil {
				tick()
			}
		}()
	}
	wg.Wait()
	return out
}

// closeAll closes devices (nil entries skipped), many at a time: each
// Close waits for its close frame.
func closeAll(devs []*device) {
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, d := range devs {
		if d == nil {
			continue
		}
		d.closing.Store(true)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = d.c.Close()
			<-d.drained
		}()
	}
	wg.Wait()
}

// stats sums every device's SDK counters. Reconnects are connections
// beyond each client's first.
func (f *fleet) stats() (dups, reconnects uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.devices {
		s := d.c.Stats()
		dups += s.DuplicatesDropped
		if s.Connects > 1 {
			reconnects += s.Connects - 1
		}
	}
	return dups, reconnects
}

// closeRest closes every device not closed yet (the end of a run, or an
// error part way through).
func (f *fleet) closeRest() {
	f.mu.Lock()
	var open []*device
	for _, d := range f.devices {
		if !d.closing.Load() {
			open = append(open, d)
		}
	}
	f.mu.Unlock()
	closeAll(open)
}

// runID is a short random prefix for user ids, so runs against the same
// server never share a user (and so never see each other's messages).
func runID() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	b.WriteString("b")
	for range 6 {
		b.WriteByte(letters[rand.IntN(len(letters))])
	}
	return b.String()
}

// place homes users in region, through the target's directory, and has
// their devices connect to urls, that region's gateways.
func (f *fleet) place(ctx context.Context, home func(context.Context, map[string]string) error, region string, urls []string, users ...string) error {
	homes := make(map[string]string, len(users))
	for _, u := range users {
		homes[u] = region
	}
	if err := home(ctx, homes); err != nil {
		return fmt.Errorf("load: homes in %s: %w", region, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.placed == nil {
		f.placed = map[string][]string{}
	}
	for _, u := range users {
		f.placed[u] = urls
	}
	return nil
}
