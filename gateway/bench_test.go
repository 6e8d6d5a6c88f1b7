package gateway_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

var body256 = tk.Body(strings.Repeat("x", 254)) // 256 bytes with the quotes

// BenchmarkEndToEnd measures 1:1 messages from client to gateway to
// JetStream and back through the gateway to the recipient, with the "sent"
// and "delivered" acks included: a message counts once the sender holds
// its delivered receipt.
func BenchmarkEndToEnd(b *testing.B) {
	for _, pairs := range []int{1, 8} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) { benchEndToEnd(b, pairs) })
	}
}

func benchEndToEnd(b *testing.B, pairs int) {
	n := tk.StartNATS(b)
	cfg := tk.TestConfig()
	cfg.SendRate, cfg.SendBurst, cfg.FrameRate, cfg.FrameBurst = 1e9, 1e9, 1e9, 1e9
	cfg.MaxPendingSends = 1024
	cfg.OutboundQueue = 4096
	g := tk.StartGateway(b, n, cfg)
	const inflight = 64 // concurrent sends per sender
	perPair := b.N/pairs + 1
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	type pair struct{ from, to string }
	var ps []pair
	for p := range pairs {
		ps = append(ps, pair{fmt.Sprintf("s%d", p), fmt.Sprintf("r%d", p)})
	}
	senders := make(map[string]func(), pairs)
	for _, p := range ps {
		alice := tk.Dial(b, g.URL, p.from, "d")
		bob := tk.Dial(b, g.URL, p.to, "d")
		senders[p.from] = func() {
			defer wg.Done()
			var inner sync.WaitGroup
			work := make(chan int)
			for range inflight {
				inner.Add(1)
				go func() {
					defer inner.Done()
					for i := range work {
						if _, err := alice.Send(ctx, p.to, "m"+strconv.Itoa(i), body256); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			go func() {
				for range perPair {
					m := <-bob.Messages()
					bob.Ack(m.Seq)
				}
			}()
			receipts := make(chan struct{})
			go func() {
				defer close(receipts)
				for range perPair {
					select {
					case <-alice.Receipts():
					case <-ctx.Done():
						b.Error("receipts did not all arrive")
						return
					}
				}
			}()
			for i := range perPair {
				work <- i
			}
			close(work)
			inner.Wait()
			<-receipts
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for _, s := range senders {
		wg.Add(1)
		go s()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(perPair*pairs)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkRawJetStream is the baseline measured in the same run: 256-byte
// async publishes to the same kind of stream on the same kind of server,
// consumed by a durable consumer with explicit acks.
func BenchmarkRawJetStream(b *testing.B) {
	n := tk.StartNATS(b)
	nc := n.Connect(b, natsauth.Operator)
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	ctx := context.Background()
	cons, err := js.CreateConsumer(ctx, "INBOX", jetstream.ConsumerConfig{
		Durable: "raw", FilterSubject: "inbox.raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024,
	})
	if err != nil {
		b.Fatal(err)
	}
	data := []byte(strings.Repeat("x", 256))
	done := make(chan struct{})
	var got int
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		got++
		if got == b.N {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := js.PublishAsync("inbox.raw", data); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	<-done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkNATSCLIPubAsync runs `nats bench js pub async` (256 B, file
// storage) against an embedded server: the figure QUALITY.md's bars are
// ratios of. It reports the CLI's own rate; b.N only repeats the run.
func BenchmarkNATSCLIPubAsync(b *testing.B) {
	cli := tk.NATSCLI(b)
	n := tk.StartNATS(b)
	re := regexp.MustCompile(`([\d,]+) msgs/sec`)
	var rate float64
	for range b.N {
		args := append(n.CLIFlags(b), "bench", "js", "pub", "async", "bench.cli",
			"--msgs", "100000", "--size", "256", "--create", "--storage", "file", "--purge", "--no-progress")
		out, err := exec.Command(cli, args...).CombinedOutput()
		if err != nil {
			b.Fatalf("nats bench: %v\n%s", err, out)
		}
		m := re.FindSubmatch(out)
		if m == nil {
			b.Fatalf("no rate in nats bench output:\n%s", out)
		}
		rate, _ = strconv.ParseFloat(strings.ReplaceAll(string(m[1]), ",", ""), 64)
	}
	b.ReportMetric(rate, "msgs/s")
}
