package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fill stores n messages in one transaction, half sent to and half
// received from 50 peers, with bodies of about 100 bytes.
func fill(t testing.TB, s *Store, n int) {
	t.Helper()
	body := json.RawMessage(`{"text":"a message of about a hundred bytes, like most chat messages are, give or take a few"}`)
	err := s.tx(func(ctx context.Context, c *sql.Conn) error {
		for i := range n {
			peer := fmt.Sprintf("user%02d", i%50)
			sender := ""
			if i%2 == 1 {
				sender = peer
			}
			if _, err := c.ExecContext(ctx, `INSERT INTO messages (conv, sender, id, seq, ts, body, status) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				peer, sender, fmt.Sprintf("m-%d", i), i+1, time.Now().UnixMilli(), []byte(body), 2); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// durabilities runs a store benchmark as the store is (synchronous=FULL:
// an fsync per write) and with synchronous=OFF, which leaves what the
// write costs without the fsync: the CPU and the file system's page cache.
func durabilities(b *testing.B, fn func(b *testing.B, s *Store)) {
	for _, sync := range []string{"FULL", "OFF"} {
		b.Run("sync="+sync, func(b *testing.B) {
			s := openT(b, tmpPath(b))
			if _, err := s.exec("PRAGMA synchronous = " + sync); err != nil {
				b.Fatal(err)
			}
			fn(b, s)
		})
	}
}

// BenchmarkStoreSend is the store's cost of one send: kept in the outbox
// before it goes out, then confirmed. Two durable writes.
func BenchmarkStoreSend(b *testing.B) {
	durabilities(b, func(b *testing.B, s *Store) {
		body := json.RawMessage(`{"text":"hello"}`)
		i := 0
		for b.Loop() {
			id := fmt.Sprintf("m-%d", i)
			i++
			if err := s.AddOutgoing(Outgoing{ID: id, To: "bob", Body: body}); err != nil {
				b.Fatal(err)
			}
			if err := s.Confirm(id, uint64(i), time.Now(), Sent); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStoreAddOutgoing is the write Send waits for before the frame
// goes out.
func BenchmarkStoreAddOutgoing(b *testing.B) {
	durabilities(b, func(b *testing.B, s *Store) {
		body := json.RawMessage(`{"text":"hello"}`)
		i := 0
		for b.Loop() {
			i++
			if err := s.AddOutgoing(Outgoing{ID: fmt.Sprintf("m-%d", i), To: "bob", Body: body}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStoreReceived is the store's cost of one received message:
// the dedup check and the insert, one durable write.
func BenchmarkStoreReceived(b *testing.B) {
	durabilities(b, func(b *testing.B, s *Store) {
		body := json.RawMessage(`{"text":"hello"}`)
		i := 0
		for b.Loop() {
			i++
			if _, err := s.Received(Message{Conv: "alice", From: "alice", ID: fmt.Sprintf("m-%d", i), Seq: uint64(i), Body: body}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStoreOpen100k opens (and closes) a store of 100,000 messages:
// locking, the quick_check and the outbox read a Client does on start.
func BenchmarkStoreOpen100k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "big.db")
	s, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	fill(b, s, 100_000)
	s.Close()
	for b.Loop() {
		s, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Outbox(); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// BenchmarkOpen100k is opening a store of 100,000 messages and reading
// its outbox and conversation list, as an app's start does.
func BenchmarkOpen100k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "big.db")
	s := openT(b, path)
	fill(b, s, 100_000)
	s.Close()
	if fi, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(fi.Size()>>10), "KiB")
	}
	b.ResetTimer()
	for range b.N {
		s, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Outbox(); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Conversations(); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
