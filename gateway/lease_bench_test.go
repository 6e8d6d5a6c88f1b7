package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
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
					srv.refreshLeases(time.Now().Add(srv.cfg.PresenceTTL)) // every lease due
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

// Every lease is refreshed by the loop's first pass at or after a third
// of the TTL since its write: none is left to expire, and a pass a third
// of the TTL after that skips none either. (How long a pass takes is
// BenchmarkLeaseRefresh's to say.)
func TestLeaseLoopRefreshesEveryLease(t *testing.T) {
	srv, all := benchServer(t, 500)
	pass := time.Now()
	for range 2 {
		pass = pass.Add(srv.cfg.PresenceTTL / 3)
		before := leaseRevs(all)
		srv.refreshLeases(pass)
		waitLeases(t, all, before)
	}
}

// Leases written together are refreshed apart: each is due at its own
// time, between a quarter and a third of the TTL after its write, and a
// pass before that writes nothing. (A pass over every session at once
// every third of the TTL made a burst of writes that held up 1:1
// messages: lease.go.)
func TestLeaseRefreshesAreSpreadOverTheInterval(t *testing.T) {
	srv, all := benchServer(t, 500)
	ttl := srv.cfg.PresenceTTL
	var first, last time.Time
	for _, s := range all {
		s.lease.mu.Lock()
		due, sent := s.lease.due, s.lease.sentAt
		s.lease.mu.Unlock()
		if d := due.Sub(sent); d < ttl/4 || d >= ttl/3 {
			t.Fatalf("refresh due %s after the write, want within [%s, %s)", d, ttl/4, ttl/3)
		}
		if first.IsZero() || due.Before(first) {
			first = due
		}
		if due.After(last) {
			last = due
		}
	}
	if spread := last.Sub(first); spread < ttl/24 {
		t.Fatalf("500 refreshes due within %s of each other, want them spread over about %s", spread, ttl/12)
	}
	writes := func() (n []uint64) {
		for _, s := range all {
			s.lease.mu.Lock()
			n = append(n, s.lease.n)
			s.lease.mu.Unlock()
		}
		return n
	}
	before := writes()
	srv.refreshLeases(first.Add(-time.Millisecond))
	if !slices.Equal(writes(), before) {
		t.Fatal("a pass before any refresh was due wrote one")
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
	pass := time.Now().Add(ttl / 3)
	l.refresh(pass) // due, nothing in flight: written
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

// A lease write the store refuses (no leader, say) is tried again a
// twelfth of the TTL on, not at the next refresh, a quarter to a third of
// the TTL on; one that cannot be published (NATS away) is tried again on
// the loop's next pass.
func TestFailedLeaseWriteIsTriedAgainSoon(t *testing.T) {
	srv, all := benchServer(t, 1)
	l := &all[0].lease
	ttl := srv.cfg.PresenceTTL
	pass := time.Now().Add(ttl / 3)
	l.refresh(pass) // due: written
	l.mu.Lock()
	// This write's answer is the refusal below: the real one, if it
	// comes, is taken for an older write's.
	l.n++
	refused := l.n
	l.writing = true
	l.mu.Unlock()
	l.onReply(refused, noResponders())
	l.mu.Lock()
	due := l.due
	l.mu.Unlock()
	if want := pass.Add(ttl / 12); !due.Equal(want) {
		t.Fatalf("refused write due again at +%s, want +%s", due.Sub(pass), ttl/12)
	}

	srv.nc.Close()
	l.refresh(due) // cannot be published
	l.mu.Lock()
	tried := l.n
	l.mu.Unlock()
	l.refresh(due.Add(leaseTick(ttl))) // the next pass tries again
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n != tried+1 {
		t.Fatalf("%d writes tried on the pass after one that could not be published, want 1", l.n-tried)
	}
}
