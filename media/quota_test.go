package media_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/media"
)

// Upload tickets count against the uploader's bytes of the day: past the
// quota the ticket is refused with quota_exceeded (429 over HTTP) and
// nothing is counted; other users and the next day start afresh; tickets
// asked at once are counted once each, across the compare-and-set.
func TestDailyUploadQuota(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t, func(c *media.Config) { c.DailyQuota = 100_000 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	day := time.Date(2026, 12, 5, 22, 0, 0, 0, time.UTC)
	ask := func(user string, size int64, at time.Time) error {
		_, err := media.UploadAt(ctx, h.svc, user, "application/zip", size, at)
		return err
	}

	if err := ask("alice", 60_000, day); err != nil {
		t.Fatal(err)
	}
	if err := ask("alice", 50_000, day); !errors.Is(err, media.ErrQuota) {
		t.Fatalf("60,000 + 50,000 bytes of a 100,000-byte quota: %v, want quota_exceeded", err)
	}
	if err := ask("alice", 40_000, day.Add(time.Hour)); err != nil { // the refusal counted nothing
		t.Fatalf("60,000 + 40,000 bytes: %v", err)
	}
	if err := ask("bob", 100_000, day); err != nil {
		t.Fatalf("another user: %v", err)
	}
	// Over HTTP, as a client sees it (on the clock's own day).
	if err := ask("dave", 100_000, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := h.api(http.MethodPost, media.PathUploads, "dave", map[string]any{"mime": "application/zip", "size": 1})
	if r.status != http.StatusTooManyRequests || r.code() != "quota_exceeded" {
		t.Fatalf("a ticket past the quota over HTTP: %s", r)
	}
	if err := ask("alice", 100_000, day.Add(2*time.Hour)); err != nil { // 00:00 UTC passed
		t.Fatalf("the next day: %v", err)
	}

	// Ten tickets of 10,000 bytes fit carol's day; of twenty asked at once
	// exactly ten are issued.
	var issued atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := ask("carol", 10_000, day); {
			case err == nil:
				issued.Add(1)
			case !errors.Is(err, media.ErrQuota):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := issued.Load(); n != 10 {
		t.Fatalf("%d of 20 concurrent 10,000-byte tickets issued under a 100,000-byte quota, want 10", n)
	}
}

// A ticket counts at least 4 KiB, whatever its size: each object costs
// the store more than its bytes, so tiny uploads cannot store many times
// the quota.
func TestQuotaCountsEachObject(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t, func(c *media.Config) { c.DailyQuota = 10 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	day := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	for i := range 2 {
		if _, err := media.UploadAt(ctx, h.svc, "mallory", "image/png", 1, day); err != nil {
			t.Fatalf("1-byte ticket %d under a 10 KiB quota: %v", i, err)
		}
	}
	if _, err := media.UploadAt(ctx, h.svc, "mallory", "image/png", 1, day); !errors.Is(err, media.ErrQuota) {
		t.Fatalf("a third 1-byte ticket (each counts 4 KiB) under a 10 KiB quota: %v, want quota_exceeded", err)
	}
	if _, err := media.UploadAt(ctx, h.svc, "mallory", "image/png", 5<<10, day.Add(24*time.Hour)); err != nil {
		t.Fatalf("a larger ticket counts its size: %v", err)
	}
}
