// Package worker runs a worker function's share of a durable consumer: a
// pool of goroutines applying messages, with retries and dead letters.
// Every instance of a function pulls from the same durable, so the server
// hands each message to one of them; a message is acked only after it was
// applied, so one an instance dies with comes again to another.
package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/streams"
)

// Options configure a Pool.
type Options struct {
	// Function names the dead-letter subject: dlq.<Function>.<...>.
	Function string
	// Workers is how many messages are applied at once.
	Workers int
	// MaxAttempts is how many deliveries a failing message gets before it
	// is dead-lettered.
	MaxAttempts int
	// Timeout bounds one application.
	Timeout time.Duration
	// Key, when set, sends messages with the same key to the same
	// goroutine, so an instance applies them in stream order (events about
	// one message, say). Without it any goroutine takes any message.
	Key func(jetstream.Msg) string
	// Consume are further options of the pull (a priority group, say).
	Consume []jetstream.PullConsumeOpt
}

// Handler applies one message. nil acks it. An error marked Permanent
// dead-letters it at once; any other error retries it with backoff until
// MaxAttempts, then dead-letters it.
type Handler func(ctx context.Context, m jetstream.Msg) error

type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Permanent marks an error that retrying cannot fix (a malformed message).
func Permanent(err error) error { return permanent{err} }

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool { return errors.As(err, new(permanent)) }

// Pool consumes one durable with a fixed set of goroutines.
type Pool struct {
	js   jetstream.JetStream
	o    Options
	h    Handler
	log  *slog.Logger
	cc   jetstream.ConsumeContext
	work []chan jetstream.Msg
	quit chan struct{}
	wg   sync.WaitGroup
	// draining is closed once Stop has stopped the pulls (tests).
	draining chan struct{}

	Applied, Retried, DeadLettered atomic.Int64
}

// Start begins consuming cons.
func Start(js jetstream.JetStream, cons jetstream.Consumer, o Options, log *slog.Logger, h Handler) (*Pool, error) {
	if o.Workers <= 0 || o.MaxAttempts <= 0 {
		return nil, errors.New("worker: workers and max attempts must be positive")
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	p := &Pool{js: js, o: o, h: h, log: log, quit: make(chan struct{}), draining: make(chan struct{})}
	queues := 1
	if o.Key != nil {
		queues = o.Workers
	}
	for range queues {
		p.work = append(p.work, make(chan jetstream.Msg))
	}
	for i := range o.Workers {
		p.wg.Add(1)
		go p.run(p.work[i%queues])
	}
	cc, err := cons.Consume(p.dispatch, append([]jetstream.PullConsumeOpt{jetstream.PullMaxMessages(2 * o.Workers)}, o.Consume...)...)
	if err != nil {
		close(p.quit)
		p.wg.Wait()
		return nil, err
	}
	p.cc = cc
	return p, nil
}

// Stop stops pulling and finishes the messages being applied and those
// already fetched (a pull's buffer, which stopping the pull outright
// would drop, leaving them to the ack wait). Past a bound, the ones not
// started are handed back (nak) for another instance.
func (p *Pool) Stop() {
	p.cc.Drain()
	close(p.draining)
	select {
	case <-p.cc.Closed():
	case <-time.After(2 * p.o.Timeout):
		p.cc.Stop()
	}
	close(p.quit)
	p.wg.Wait()
}

func (p *Pool) dispatch(m jetstream.Msg) {
	q := p.work[0]
	if len(p.work) > 1 {
		h := fnv.New32a()
		h.Write([]byte(p.o.Key(m)))
		q = p.work[h.Sum32()%uint32(len(p.work))]
	}
	select {
	case q <- m:
	case <-p.quit:
		// Stopping: hand it back now rather than after the ack wait.
		_ = m.Nak()
	}
}

func (p *Pool) run(q chan jetstream.Msg) {
	defer p.wg.Done()
	for {
		select {
		case m := <-q:
			p.handle(m)
		case <-p.quit:
			return
		}
	}
}

func (p *Pool) handle(m jetstream.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), p.o.Timeout)
	defer cancel()
	err := p.h(ctx, m)
	if err == nil {
		p.Applied.Add(1)
		_ = m.Ack()
		return
	}
	meta, _ := m.Metadata()
	if IsPermanent(err) || meta == nil || meta.NumDelivered >= uint64(p.o.MaxAttempts) {
		p.deadLetter(m, err.Error())
		return
	}
	p.Retried.Add(1)
	p.log.Warn("will retry", "err", err, "attempt", meta.NumDelivered)
	_ = m.NakWithDelay(Backoff(int(meta.NumDelivered), 100*time.Millisecond, 30*time.Second))
}

// deadLetter moves a message the function cannot apply to the DLQ stream,
// with the reason, and terminates it, so it neither blocks the queue nor
// vanishes.
func (p *Pool) deadLetter(m jetstream.Msg, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), p.o.Timeout)
	defer cancel()
	if err := streams.DeadLetter(ctx, p.js, p.o.Function, m, reason); err != nil {
		p.log.Error("dead-lettering failed; will retry", "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	p.DeadLettered.Add(1)
	p.log.Warn("dead-lettered", "subject", m.Subject(), "reason", reason)
	_ = m.Term()
}

// Backoff is base·2^(attempt-1), capped at limit.
func Backoff(attempt int, base, limit time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// Service describes a worker function's face: the stream its durable
// consumer reads (configured by streams/consumers/<Options.Function>.json)
// and its micro service with one request endpoint.
type Service struct {
	Stream string
	// AckWait overrides the durable's ack wait when set.
	AckWait time.Duration
	Micro   micro.Config
	// Endpoint, Subject and Handler are the request endpoint; Example is a
	// request, shown to operators in the endpoint's metadata.
	Endpoint, Subject, Example string
	Handler                    micro.HandlerFunc
}

// Serve binds the durable consumer, adds the micro service and starts a
// Pool applying messages with h. When it returns the endpoint is
// reachable: its subscription is on the server.
func Serve(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, svc Service, o Options, log *slog.Logger, h Handler) (micro.Service, *Pool, error) {
	ccfg, err := streams.ConsumerConfig(o.Function)
	if err != nil {
		return nil, nil, err
	}
	if svc.AckWait > 0 {
		ccfg.AckWait = svc.AckWait
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, svc.Stream, ccfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: consumer: %w", o.Function, err)
	}
	ms, err := micro.AddService(nc, svc.Micro)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", o.Function, err)
	}
	if err := ms.AddEndpoint(svc.Endpoint, svc.Handler, micro.WithEndpointSubject(svc.Subject),
		micro.WithEndpointMetadata(map[string]string{"request": svc.Example})); err != nil {
		_ = ms.Stop()
		return nil, nil, fmt.Errorf("%s: %w", o.Function, err)
	}
	pool, err := Start(js, cons, o, log, h)
	if err != nil {
		_ = ms.Stop()
		return nil, nil, fmt.Errorf("%s: %w", o.Function, err)
	}
	if err := nc.Flush(); err != nil {
		pool.Stop()
		_ = ms.Stop()
		return nil, nil, fmt.Errorf("%s: %w", o.Function, err)
	}
	return ms, pool, nil
}
