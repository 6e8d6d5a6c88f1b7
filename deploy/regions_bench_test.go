package deploy

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// The regions' figures (README, "Regions"; issue 16), on servers started
// from deploy/regions as the tests start them: each region's leaf link
// to the hub runs through the test kit's TCP proxy, which can cut it.
// Every figure comes with its same-run baseline.
//
//	go test ./deploy -run '^$' -bench Regions -benchtime 2000x   (latency)
//	go test ./deploy -run '^$' -bench 'RegionsForwarding|RegionsPartition' -benchtime 1x -timeout 30m

// arrivals counts copies a region's INBOX republishes (sb.live.>), and
// when the first and the last of an expected number came.
type arrivals struct {
	mu          sync.Mutex
	n, want     int
	first, last time.Time
	done        chan struct{}
	// fence is the live subject whose copy closes fenced, uncounted.
	fence  string
	fenced chan struct{}
}

func watchArrivals(b *testing.B, nc *nats.Conn) *arrivals {
	b.Helper()
	a := &arrivals{}
	sub, err := nc.Subscribe(contract.LivePrefix+">", func(m *nats.Msg) {
		now := time.Now()
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.fence != "" && m.Subject == a.fence {
			close(a.fenced)
			a.fence = ""
			return
		}
		a.n++
		if a.n == 1 {
			a.first = now
		}
		a.last = now
		if a.n == a.want && a.done != nil {
			close(a.done)
			a.done = nil
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return a
}

// expect starts a count of want arrivals; the channel closes at the last.
func (a *arrivals) expect(want int) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n, a.want, a.first, a.last = 0, want, time.Time{}, time.Time{}
	ch := make(chan struct{})
	a.done = ch
	return ch
}

// fenceFor returns a channel closed when user's live copy arrives, which
// is not counted: sourced in order, it comes after any repeat of what
// crossed before it.
func (a *arrivals) fenceFor(user string) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fence, a.fenced = contract.LivePrefix+user, make(chan struct{})
	return a.fenced
}

func (a *arrivals) times() (first, last time.Time, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.first, a.last, a.n
}

// publishAll publishes n bodies asynchronously on subject(i) and waits
// for every PubAck.
func publishAll(b *testing.B, js jetstream.JetStream, n int, subject func(i int) string, body []byte) {
	b.Helper()
	for i := range n {
		if _, err := js.PublishAsync(subject(i), body, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("PubAcks did not all come")
	}
}

func startBenchRegions(b *testing.B) (*tk.Region, *tk.Region) {
	b.Helper()
	rs := tk.StartRegions(b, "us", "eu")
	rs.Apply(b, streams.Options{})
	return rs.Region("us"), rs.Region("eu")
}

func percentile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000
}

// Latency from publishing a 256 B message in us to its live copy in the
// recipient's region: into us's OUTBOX for a user of eu (stored in us,
// sourced across the two leaf hops into eu's INBOX, republished there),
// against into us's INBOX for a user of us (stored, republished) in the
// same run, one message at a time, each kind in turn.
func BenchmarkRegionsLatency(b *testing.B) {
	us, eu := startBenchRegions(b)
	usJS, err := jetstream.New(us.Conn)
	if err != nil {
		b.Fatal(err)
	}
	cross, same := make(chan struct{}, 1), make(chan struct{}, 1)
	for _, s := range []struct {
		nc *nats.Conn
		ch chan struct{}
	}{{eu.Conn, cross}, {us.Conn, same}} {
		sub, err := s.nc.Subscribe(contract.LiveSubject("lat"), func(*nats.Msg) { s.ch <- struct{}{} })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = sub.Unsubscribe() })
		if err := s.nc.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	body := make([]byte, 256)
	ctx := context.Background()
	one := func(subject string, ch chan struct{}) time.Duration {
		start := time.Now()
		f, err := usJS.PublishAsync(subject, body)
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			b.Fatalf("no live copy of %s", subject)
		}
		d := time.Since(start)
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		case <-ctx.Done():
		}
		return d
	}
	for range 200 { // warm up both paths
		one(contract.OutboxSubject("eu", "lat"), cross)
		one(contract.InboxSubject("lat"), same)
	}
	var xs, ss []time.Duration
	b.ResetTimer()
	for range b.N {
		xs = append(xs, one(contract.OutboxSubject("eu", "lat"), cross))
		ss = append(ss, one(contract.InboxSubject("lat"), same))
	}
	b.StopTimer()
	b.ReportMetric(percentile(xs, 0.5), "cross-p50-ms")
	b.ReportMetric(percentile(xs, 0.99), "cross-p99-ms")
	b.ReportMetric(percentile(ss, 0.5), "same-p50-ms")
	b.ReportMetric(percentile(ss, 0.99), "same-p99-ms")
	b.ReportMetric(percentile(xs, 0.5)-percentile(ss, 0.5), "added-p50-ms")
	b.ReportMetric(percentile(xs, 0.99)-percentile(ss, 0.99), "added-p99-ms")
}

// Forwarding throughput: 50,000 messages of 256 B published into us's
// OUTBOX for 100 users of eu, from the first publish until the last is
// stored in eu's INBOX (its live copy seen), against raw JetStream in the
// same run: the same messages published into us's INBOX until the last
// PubAck.
func BenchmarkRegionsForwarding(b *testing.B) {
	const n = 50_000
	us, eu := startBenchRegions(b)
	usJS, err := jetstream.New(us.Conn, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	a := watchArrivals(b, eu.Conn)
	body := make([]byte, 256)
	var rawRate, fwdRate, linkRate float64
	b.ResetTimer()
	for it := range b.N {
		start := time.Now()
		publishAll(b, usJS, n, func(i int) string { return contract.InboxSubject("raw" + strconv.Itoa(i%100)) }, body)
		rawRate += n / time.Since(start).Seconds()

		done := a.expect(n)
		start = time.Now()
		publishAll(b, usJS, n, func(i int) string {
			return contract.OutboxSubject("eu", "fwd"+strconv.Itoa(it)+"x"+strconv.Itoa(i%100))
		}, body)
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			_, _, got := a.times()
			b.Fatalf("%d of %d forwarded", got, n)
		}
		first, last, _ := a.times()
		fwdRate += n / last.Sub(start).Seconds()
		linkRate += n / last.Sub(first).Seconds()
	}
	b.StopTimer()
	b.ReportMetric(fwdRate/float64(b.N), "forwarded-msgs/s")
	b.ReportMetric(linkRate/float64(b.N), "first-to-last-msgs/s")
	b.ReportMetric(rawRate/float64(b.N), "raw-js-msgs/s")
	b.ReportMetric(fwdRate/rawRate, "ratio")
}

// A backlog after a partition: us's leaf link is cut, 10,000 messages of
// 256 B for eu's users are stored in us's OUTBOX, the link stays cut for
// SWITCHBOARD_BENCH_PARTITION (default 60s) and is restored. Resume is
// from the restore to the first message stored in eu, drain from that
// first to the last; the baseline of the same run is how long the same
// 10,000 took to cross with the link up.
func BenchmarkRegionsPartitionDrain(b *testing.B) {
	const n = 10_000
	partition := 60 * time.Second
	if v := os.Getenv("SWITCHBOARD_BENCH_PARTITION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		partition = d
	}
	us, eu := startBenchRegions(b)
	usJS, err := jetstream.New(us.Conn, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	a := watchArrivals(b, eu.Conn)
	body := make([]byte, 256)
	var resume, drain, total, up time.Duration
	var extra atomic.Int64
	b.ResetTimer()
	for it := range b.N {
		subject := func(i int) string {
			return contract.OutboxSubject("eu", "part"+strconv.Itoa(it)+"x"+strconv.Itoa(i%100))
		}
		// With the link up, for the baseline.
		done := a.expect(n)
		start := time.Now()
		publishAll(b, usJS, n, func(i int) string { return subject(i) + "up" }, body)
		<-done
		_, last, _ := a.times()
		up += last.Sub(start)

		us.Cut(b)
		cutAt := time.Now()
		done = a.expect(n)
		publishAll(b, usJS, n, subject, body)
		time.Sleep(time.Until(cutAt.Add(partition))) // the partition's length is what is measured
		if _, _, got := a.times(); got != 0 {
			b.Fatalf("%d crossed a cut link", got)
		}
		restored := time.Now()
		us.Restore()
		select {
		case <-done:
		case <-time.After(10 * time.Minute):
			_, _, got := a.times()
			b.Fatalf("%d of %d drained", got, n)
		}
		first, last, _ := a.times()
		resume += first.Sub(restored)
		drain += last.Sub(first)
		total += last.Sub(restored)
		// Nothing more comes: a repeat would cross before a fence sent
		// after the last, and be counted.
		fenceUser := "fence" + strconv.Itoa(it)
		fenced := a.fenceFor(fenceUser)
		publishAll(b, usJS, 1, func(int) string { return contract.OutboxSubject("eu", fenceUser) }, body)
		select {
		case <-fenced:
		case <-time.After(time.Minute):
			b.Fatal("the fence did not cross")
		}
		if _, _, got := a.times(); got != n {
			extra.Add(int64(got - n))
		}
		us.WaitLinked(b, 30*time.Second)
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
	b.ReportMetric(per(resume), "resume-s")
	b.ReportMetric(per(drain), "drain-s")
	b.ReportMetric(per(total), "restore-to-drained-s")
	b.ReportMetric(per(up), "link-up-10k-s")
	b.ReportMetric(float64(extra.Load()), "extra-copies")
}
