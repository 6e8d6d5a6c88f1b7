package media

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The daily upload quota: how many bytes of upload tickets one user may
// be issued per UTC day (Config.DailyQuota), so one account cannot fill
// the object store, whichever backend holds it. Uploads already bound
// each object's size (Limits) and, on the embedded store, how many run at
// once; neither bounds how much a user stores over time. Between them
// the quota and the retention of messages (an object lives while a
// message references it; an orphan goes after OrphanAge) bound what one
// user can hold to about quota × retention days.
//
// It is counted when a ticket is issued, against the size the ticket
// allows: S3 never tells the function that an upload finished, and a
// ticket's size is what the store accepts. A ticket whose upload is never
// made still counts; the day's count is one KV key, <user>.<yyyymmdd>,
// raised with compare-and-set so instances share it, and the bucket
// forgets it after two days.
//
// A ticket counts at least objectCharge bytes: each object costs the
// store records of its own besides its bytes (on the embedded store a
// metadata and a chunk message, about 250 bytes), so counted at its size
// a day of 1-byte tickets would store hundreds of times the quota. At 4
// KiB the overhead stays a few percent of the quota, and the quota also
// bounds the objects one user makes a day (the default: 524,288).

// DefaultDailyQuota is Config.DailyQuota's default: 2 GiB a day, some
// twenty 100 MiB documents or a hundred 16 MiB photos.
const DefaultDailyQuota = 2 << 30

// BucketQuota is the KV bucket of the users' daily counts.
const BucketQuota = "MEDIA_QUOTA"

// quotaAttempts bounds compare-and-set retries of one count.
const quotaAttempts = 16

// quota counts the bytes of upload tickets issued per user and day.
type quota struct {
	kv    jetstream.KeyValue
	limit int64 // bytes per user and day
}

func openQuota(ctx context.Context, js jetstream.JetStream, cfg Config) (*quota, error) {
	kv, err := bindKV(ctx, js, BucketQuota)
	if err != nil {
		return nil, err
	}
	return &quota{kv: kv, limit: cfg.DailyQuota}, nil
}

// objectCharge is the least a ticket counts against the quota.
const objectCharge = 4 << 10

// take counts size bytes (objectCharge at least) against user's quota
// for now's day, or refuses with ErrQuota when they would go past it
// (and counts nothing).
func (q *quota) take(ctx context.Context, user string, size int64, now time.Time) error {
	size = max(size, objectCharge)
	day := now.UTC()
	key := user + "." + day.Format("20060102")
	for range quotaAttempts {
		var used int64
		e, err := q.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if used, err = strconv.ParseInt(string(e.Value()), 10, 64); err != nil || used < 0 {
				used = 0 // unreadable: counted afresh
			}
		}
		if used+size > q.limit {
			reset := time.Date(day.Year(), day.Month(), day.Day()+1, 0, 0, 0, 0, time.UTC)
			return errorf(ErrQuota, "uploads of %d more bytes today would pass your daily quota of %d bytes (%d used); it renews at %s",
				size, q.limit, used, reset.Format(time.RFC3339))
		}
		val := []byte(strconv.FormatInt(used+size, 10))
		if e == nil {
			_, err = q.kv.Create(ctx, key, val)
		} else {
			_, err = q.kv.Update(ctx, key, val, e.Revision())
		}
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			return err
		} // else another ticket of theirs was counted first
	}
	return fmt.Errorf("media: quota of %s: changed by others %d times in a row", user, quotaAttempts)
}
