package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// Baseline is plain JetStream on the same server: what Switchboard's
// figures are ratios of.
type Baseline struct {
	// Messages were async-published and consumed by a durable consumer
	// with explicit acks, Size bytes each, in Seconds (first publish to
	// last consumed).
	Messages int64 `json:"messages"`
	// PublishErrors are publishes whose PubAck was an error (not counted
	// in Messages; a baseline with any is suspect).
	PublishErrors int64 `json:"publish_errors,omitempty"`
	Size          int   `json:"size"`
	// Replicas is the baseline stream's, INBOX's own.
	Replicas   int     `json:"replicas"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	// PublishAck is publish to PubAck; PublishConsume publish to the
	// consumer's callback. Flat out, so they include queueing.
	PublishAck     Latency `json:"publish_ack"`
	PublishConsume Latency `json:"publish_consume"`
	// StreamBytesPerMsg is the temp stream's bytes over its messages:
	// what JetStream stores per message of this size.
	StreamBytesPerMsg float64 `json:"stream_bytes_per_msg"`
	// Paced is the same at the scenario's fixed rate, for its latencies.
	Paced *PacedBaseline `json:"paced,omitempty"`
	// Consumers is raw durable consumers created on the server (idle).
	Consumers *ConsumerBaseline `json:"consumers,omitempty"`
	Error     string            `json:"error,omitempty"`
}

// PacedBaseline is the raw publish and consume at a fixed rate.
type PacedBaseline struct {
	Rate           float64 `json:"rate"`
	Messages       int64   `json:"messages"`
	PublishAck     Latency `json:"publish_ack"`
	PublishConsume Latency `json:"publish_consume"`
}

// ConsumerBaseline is what a bare durable consumer costs, against which a
// connected device (consumer, session, socket, presence lease) is set.
type ConsumerBaseline struct {
	Count      int     `json:"count"`
	PerSec     float64 `json:"per_sec"`
	BytesEach  float64 `json:"rss_bytes_each"`
	RSSMeasure bool    `json:"rss_measured"`
}

// rawStream is the baseline's own stream, deleted when done.
type rawStream struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   jetstream.Stream
	name     string
	subject  string // prefix: subjects are subject.<pass>
	replicas int
}

func openRaw(ctx context.Context, t Target, run string) (*rawStream, error) {
	nc, err := nats.Connect(t.NATSURL, append(t.NATSOptions, nats.Name("switchboard-bench"))...)
	if err != nil {
		return nil, fmt.Errorf("load: baseline: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, err
	}
	r := &rawStream{nc: nc, js: js, name: "SBBENCH_" + strings.ToUpper(run), subject: "sbbench." + run}
	// As many replicas as INBOX, where every message is stored: on a
	// cluster an R1 baseline would set R3 stores against R1 ones.
	replicas := 1
	if inbox, err := js.Stream(ctx, contract.Inbox); err == nil {
		replicas = max(1, inbox.CachedInfo().Config.Replicas)
	}
	r.stream, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:         r.name,
		Description:  "switchboard bench: raw baseline, deleted after the run",
		Subjects:     []string{r.subject + ".>"},
		Storage:      jetstream.FileStorage,
		Replicas:     replicas,
		MaxConsumers: -1,
	})
	r.replicas = replicas
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("load: baseline stream: %w", err)
	}
	return r, nil
}

func (r *rawStream) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = r.js.DeleteStream(ctx, r.name)
	r.nc.Close()
}

// rawPass is one publish-and-consume pass.
type rawPass struct {
	messages       int64
	elapsed        time.Duration
	ack, consume   *hist
	publishErrors  int64
	firstPublishAt time.Time
}

// pass publishes count messages (or, with count < 0, for dur) at rate
// (0: flat out) to subject.<name>, consumed by a durable consumer of that
// name, and waits until every one is consumed.
func (r *rawStream) pass(ctx context.Context, name string, size, count int, dur time.Duration, rate float64, tick func()) (*rawPass, error) {
	subj := r.subject + "." + name
	cons, err := r.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: name, FilterSubject: subj, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024,
	})
	if err != nil {
		return nil, fmt.Errorf("load: baseline consumer: %w", err)
	}
	p := &rawPass{ack: newHist(), consume: newHist()}
	var (
		got      atomic.Int64
		want     atomic.Int64
		lastAt   atomic.Int64
		doneOnce sync.Once
		done     = make(chan struct{})
	)
	want.Store(-1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		if d := m.Data(); len(d) >= 8 {
			p.consume.record(now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(d)))))
		}
		_ = m.Ack()
		lastAt.Store(now.UnixNano())
		if n := got.Add(1); n == want.Load() {
			doneOnce.Do(func() { close(done) })
		}
	})
	if err != nil {
		return nil, fmt.Errorf("load: baseline consume: %w", err)
	}
	defer cc.Stop()

	futures := make(chan jetstream.PubAckFuture, 8192)
	var ackWG sync.WaitGroup
	var pubErrs atomic.Int64
	ackWG.Add(1)
	go func() {
		defer ackWG.Done()
		for f := range futures {
			select {
			case <-f.Ok():
				p.ack.record(time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(f.Msg().Data)))))
			case <-f.Err():
				pubErrs.Add(1)
			}
		}
	}()

	start := time.Now()
	p.firstPublishAt = start
	end := start.Add(dur)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	var published int64
	for {
		if count >= 0 && published >= int64(count) {
			break
		}
		due := start
		if interval > 0 {
			due = start.Add(time.Duration(published) * interval)
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
		} else {
			due = time.Now()
		}
		if count < 0 && !due.Before(end) {
			break
		}
		if ctx.Err() != nil {
			break
		}
		data := make([]byte, size)
		binary.BigEndian.PutUint64(data, uint64(due.UnixNano()))
		f, err := r.js.PublishAsync(subj, data)
		if err != nil {
			// Not sent (too many PubAcks awaited): counted neither as
			// published nor as failed, and made again while counting.
			continue
		}
		futures <- f
		published++
		if tick != nil {
			tick()
		}
	}
	close(futures)
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
	}
	ackWG.Wait()
	stored := published - pubErrs.Load()
	want.Store(stored)
	if got.Load() >= stored {
		doneOnce.Do(func() { close(done) })
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("load: baseline: consumed %d of %d within 60s", got.Load(), stored)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.messages = stored
	p.publishErrors = pubErrs.Load()
	p.elapsed = time.Unix(0, lastAt.Load()).Sub(start)
	return p, nil
}

// bytesPerMsg is the stream's stored bytes per message.
func (r *rawStream) bytesPerMsg(ctx context.Context) float64 {
	info, err := r.stream.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return 0
	}
	return float64(info.State.Bytes) / float64(info.State.Msgs)
}

// consumers creates n durable consumers, conc at a time, each filtered on
// its own subject as a device's is, and measures their rate and, when the
// process holding NATS is known, their resident memory.
func (r *rawStream) consumers(ctx context.Context, n, conc int, natsProcs []Proc, settle time.Duration, tick func()) (*ConsumerBaseline, error) {
	w := startWatch(natsProcs)
	start := time.Now()
	sem := make(chan struct{}, max(conc, 1))
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("c%d", i)
			_, err := r.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
				Durable: name, FilterSubject: r.subject + ".dev." + name,
				AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 256,
			})
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
			if tick != nil {
				tick()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return nil, fmt.Errorf("load: baseline consumers: %w", firstErr)
	}
	if settle > 0 {
		time.Sleep(settle)
	}
	out := &ConsumerBaseline{Count: n, PerSec: float64(n) / elapsed.Seconds()}
	if d, ok := rssDelta(w.stop()); ok && len(natsProcs) > 0 {
		out.BytesEach, out.RSSMeasure = float64(d)/float64(n), true
	}
	return out, nil
}

// natsProcs picks the processes that hold NATS.
func natsProcs(ps []Proc) []Proc {
	var out []Proc
	for _, p := range ps {
		if p.Role == "serve" || p.Role == "nats" {
			out = append(out, p)
		}
	}
	return out
}

// runBaseline runs the flat-out pass and, at a fixed rate, the paced pass.
func runBaseline(ctx context.Context, cfg Config, t Target, run string, prog *progress) (*Baseline, error) {
	if t.NATSURL == "" {
		return nil, errors.New("load: baseline: no NATS URL (--nats)")
	}
	r, err := openRaw(ctx, t, run)
	if err != nil {
		return nil, err
	}
	defer r.close()
	b := &Baseline{Size: cfg.Size, Replicas: r.replicas}
	total := int64(cfg.BaselineMsgs)
	if cfg.BaselineMsgs < 0 {
		total = 0
	}
	prog.set("raw JetStream", total, nil)
	p, err := r.pass(ctx, "raw", cfg.Size, cfg.BaselineMsgs, cfg.BaselineDuration, 0, func() { prog.add(1) })
	if err != nil {
		return nil, err
	}
	b.Messages, b.Seconds, b.PublishErrors = p.messages, p.elapsed.Seconds(), p.publishErrors
	if b.Seconds > 0 {
		b.MsgsPerSec = float64(p.messages) / b.Seconds
	}
	b.PublishAck, b.PublishConsume = p.ack.summary(), p.consume.summary()
	b.StreamBytesPerMsg = r.bytesPerMsg(ctx)
	if cfg.Scenario == ScenarioPairs && cfg.Rate > 0 {
		prog.set(fmt.Sprintf("raw at %.0f/s", cfg.Rate), int64(cfg.Rate*cfg.BaselineDuration.Seconds()), nil)
		pp, err := r.pass(ctx, "paced", cfg.Size, -1, cfg.BaselineDuration, cfg.Rate, func() { prog.add(1) })
		if err != nil {
			return nil, err
		}
		b.Paced = &PacedBaseline{Rate: cfg.Rate, Messages: pp.messages, PublishAck: pp.ack.summary(), PublishConsume: pp.consume.summary()}
	}
	return b, nil
}
