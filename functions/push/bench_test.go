package push

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// BenchmarkPush measures notifications per second from stored messages to
// a local webhook: one instance, one device per user, every message for a
// different user so none is coalesced. Each notification costs a presence
// read, a device read, a claim create, a wake key read (gone.go), a
// consumer info, the HTTP call, a claim rewrite and a confirmed ack.
func BenchmarkPush(b *testing.B) {
	n := tk.StartNATS(b)
	var got atomic.Int64
	done := make(chan struct{})
	total := int64(b.N)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if got.Add(1) == total {
			close(done)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)

	// The durable exists before the messages, so the instance started
	// below finds them all waiting.
	ctx := context.Background()
	ccfg, err := streams.ConsumerConfig("push")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := n.JS.CreateOrUpdateConsumer(ctx, contract.Inbox, ccfg); err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		putDevices(b, n.JS, fmt.Sprintf("u%d", i), "phone")
	}
	for i := range b.N {
		m := nats.NewMsg(contract.InboxSubject(fmt.Sprintf("u%d", i)))
		m.Header.Set(contract.HdrKind, contract.KindMsg)
		m.Header.Set(contract.HdrFrom, "alice")
		m.Header.Set(contract.HdrID, fmt.Sprintf("m%d", i))
		m.Header.Set(contract.HdrTS, "1795582349000")
		m.Data = []byte(secretBody)
		if _, err := n.JS.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-n.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("publishing timed out")
	}

	cfg := testConfig(srv.URL)
	cfg.WebhookSecret = ""
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	startPush(b, n, cfg)
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d notifications", got.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "notifications/s")
}
