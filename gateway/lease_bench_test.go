package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/embednats"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/streams"
)

// idleSessions is how many sessions the lease benchmark holds on one
// gateway: P3's figure. They have fake transports, not sockets: a socket
// pair each would pass the machine's 20,000-file limit in one process.
const idleSessions = 15000

// benchServer is a gateway on an embedded NATS (no worker function runs)
// with idleSessions sessions that hold leases and nothing else.
func benchServer(b testing.TB, sessions int) (*Server, []*session) {
	b.Helper()
	keys, err := natsauth.Generate()
	if err != nil {
		b.Fatal(err)
	}
	ns, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:0", StoreDir: b.TempDir(), Users: keys.ServerUsers()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	connect := func(r natsauth.Role) *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL(), keys.Options(r)...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		return nc
	}
	js, err := jetstream.New(connect(natsauth.Operator))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, js, streams.Options{}); err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", ""
	gk, err := NewHS256Keys([]byte("switchboard-bench-secret-0123456789abcdef"))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(ctx, cfg, gk, connect(natsauth.Gateway), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.stopLeases)
	all := make([]*session, sessions)
	for i := range all {
		s := newSession(srv, Identity{User: fmt.Sprintf("u%05d", i), Device: "phone", Expires: time.Now().Add(time.Hour)}, newFakeTransport())
		s.owner = srv.replies.register(s)
		if !srv.track(s) {
			b.Fatal("not tracked")
		}
		s.lease.goOnline()
		all[i] = s
	}
	waitLeases(b, all, nil)
	return srv, all
}

// leaseRevs is every session's lease revision.
func leaseRevs(all []*session) []uint64 {
	revs := make([]uint64, len(all))
	for i, s := range all {
		s.lease.mu.Lock()
		revs[i] = s.lease.rev
		s.lease.mu.Unlock()
	}
	return revs
}

// waitLeases waits until every lease has been written (past before, when
// given) and no write is in flight.
func waitLeases(b testing.TB, all []*session, before []uint64) {
	b.Helper()
	waitWithin(b, time.Minute, func() error {
		pending := 0
		for i, s := range all {
			s.lease.mu.Lock()
			if s.lease.writing || s.lease.rev == 0 || (before != nil && s.lease.rev == before[i]) {
				pending++
			}
			s.lease.mu.Unlock()
		}
		if pending > 0 {
			return fmt.Errorf("%d of %d leases not written within a minute", pending, len(all))
		}
		return nil
	})
}

// BenchmarkLeaseRefresh is one pass of the lease loop over 15,000 idle
// sessions on one gateway, from its start until every lease's refresh is
// stored (each lease's revision moved): it must end well within a third
// of PresenceTTL (20 s by default), or leases expire and devices show
// offline. "sync" is the loop as it was, one refresh waited for after
// another, for comparison.
func BenchmarkLeaseRefresh(b *testing.B) {
	for _, mode := range []string{"pipelined", "sync"} {
		b.Run(mode, func(b *testing.B) {
			srv, all := benchServer(b, idleSessions)
			b.ResetTimer()
			for range b.N {
				before := leaseRevs(all)
				if mode == "sync" {
					syncPass(b, srv, all)
				} else {
					srv.refreshLeases(time.Now())
				}
				waitLeases(b, all, before)
			}
			b.ReportMetric(float64(len(all))*float64(b.N)/b.Elapsed().Seconds(), "leases/s")
		})
	}
}

// syncPass refreshes every lease as the lease loop did before its writes
// were pipelined: a publish waited for, one session after another.
func syncPass(b *testing.B, srv *Server, all []*session) {
	ctx, cancel := context.WithTimeout(context.Background(), srv.cfg.PresenceTTL/3)
	defer cancel()
	for _, s := range all {
		s.lease.mu.Lock()
		m := &nats.Msg{Subject: contract.LeaseSubject(s.id.User, s.id.Device), Data: []byte(`{}`)}
		ack, err := srv.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(srv.cfg.PresenceTTL), jetstream.WithExpectLastSequencePerSubject(s.lease.rev))
		if err != nil {
			s.lease.mu.Unlock()
			b.Fatal(err)
		}
		s.lease.rev = ack.Sequence
		s.lease.mu.Unlock()
	}
}

// Every lease is refreshed by one pass of the loop: none is left to
// expire, and a pass right after it skips none either. (How long a pass
// takes is BenchmarkLeaseRefresh's to say.)
func TestLeaseLoopRefreshesEveryLease(t *testing.T) {
	srv, all := benchServer(t, 500)
	for range 2 {
		before := leaseRevs(all)
		srv.refreshLeases(time.Now())
		waitLeases(t, all, before)
	}
}

// A lease write whose answer is lost counts as lost by the next pass of
// the refresh loop, a third of the TTL on, which writes again: stamped
// with its publish, a hair after its own pass, it did not, the next pass
// skipped too, and the lease could run out on a live device.
func TestLostLeaseWriteIsWrittenAgainByTheNextPass(t *testing.T) {
	srv, all := benchServer(t, 1)
	l := &all[0].lease
	ttl := srv.cfg.PresenceTTL
	pass := time.Now()
	l.refresh(pass) // nothing in flight: written
	l.mu.Lock()
	// Its answer lost: one that comes is taken for an older write's.
	l.n++
	written := l.n
	l.writing = true
	l.mu.Unlock()
	l.refresh(pass.Add(ttl / 3))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n != written+1 {
		t.Fatalf("%d writes after the pass that followed a lost one, want %d", l.n, written+1)
	}
}
