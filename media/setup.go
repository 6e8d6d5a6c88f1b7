package media

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotSetUp wraps a media bucket that is missing or was made for
// another config: the operator runs `switchboard setup` (Setup) first.
var ErrNotSetUp = errors.New("media: buckets not set up")

// claimMargin is how much longer than an upload URL a claim lives, for
// clock skew: every upload that could race a claim starts before its URL
// expires.
const claimMargin = time.Minute

// Setup creates or updates the media function's buckets for cfg: grants
// (kept cfg.ReferenceAge after the last), daily counts, and the embedded
// store's bytes and upload claims (made whatever the backend, so moving
// between S3 and the embedded store needs no setup run). A zero
// cfg.Replicas keeps an existing bucket's replicas (one for a new one), so
// a run without it does not scale a cluster's buckets back to one, and
// the upload claims are never kept shorter than they were.
//
// The operator runs it (`switchboard setup`, the all-in-one), not the
// media function: a role that may create or update a stream may give it
// a source, and a bucket of media's own that sourced INBOX would hand
// media every inbox. The function only binds to what Setup made (New).
func Setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if cfg.Replicas != 0 && cfg.Replicas != 1 && cfg.Replicas != 3 && cfg.Replicas != 5 {
		return fmt.Errorf("%w: Replicas %d must be 1, 3 or 5", ErrConfig, cfg.Replicas)
	}
	replicas := cfg.Replicas
	cfg = cfg.withDefaults()
	if cfg.ReferenceAge < time.Second {
		return fmt.Errorf("%w: ReferenceAge %s must be at least 1s", ErrConfig, cfg.ReferenceAge)
	}
	if cfg.UploadExpiry < MinExpiry || cfg.UploadExpiry > MaxExpiry {
		return fmt.Errorf("%w: UploadExpiry %s must be between 1s and 7 days", ErrConfig, cfg.UploadExpiry)
	}
	// What the buckets have: a run without replicas keeps theirs, and one
	// read that fails is an error rather than a guess of one replica.
	existing := func(stream string) (*jetstream.StreamConfig, error) {
		s, err := js.Stream(ctx, stream)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("media: read %s: %w", stream, err)
		}
		c := s.CachedInfo().Config
		return &c, nil
	}
	kept := func(old *jetstream.StreamConfig) int {
		switch {
		case replicas > 0:
			return replicas
		case old != nil:
			return old.Replicas
		}
		return 1
	}
	for _, kv := range []jetstream.KeyValueConfig{{
		Bucket: BucketACL,
		Description: "Switchboard media access: key u/<owner>/<id>, value who besides the owner may download it; " +
			"a record also marks the object as referenced, so the orphan sweep keeps it; it expires ReferenceAge after the last grant",
		History: 1,
		TTL:     cfg.ReferenceAge,
	}, {
		Bucket:      BucketQuota,
		Description: "Switchboard media: bytes of upload tickets issued per user and UTC day, key <user>.<yyyymmdd>",
		History:     1,
		TTL:         48 * time.Hour,
	}, {
		Bucket:      BucketUploads,
		Description: "Switchboard embedded media: one claim per upload key, so a signed PUT URL stores at most one object",
		History:     1,
		// A claim must outlive every upload that could race it.
		TTL: cfg.UploadExpiry + claimMargin,
	}} {
		old, err := existing("KV_" + kv.Bucket)
		if err != nil {
			return err
		}
		if kv.Bucket == BucketUploads && old != nil && old.MaxAge > kv.TTL {
			// Never shorter under functions already running: their upload
			// URLs may outlive claims cut back (a run of setup without
			// --media-upload-expiry after one with a longer).
			kv.TTL = old.MaxAge
		}
		kv.Storage = jetstream.FileStorage
		kv.Replicas = kept(old)
		if _, err := js.CreateOrUpdateKeyValue(ctx, kv); err != nil {
			return fmt.Errorf("media: bucket %s: %w", kv.Bucket, err)
		}
	}
	old, err := existing("OBJ_" + BucketObjects)
	if err != nil {
		return err
	}
	_, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      BucketObjects,
		Description: "Switchboard media bytes, key u/<owner>/<id> (the embedded store, used when no S3 endpoint is configured)",
		Storage:     jetstream.FileStorage,
		Replicas:    kept(old),
	})
	if err != nil {
		return fmt.Errorf("media: object store %s: %w", BucketObjects, err)
	}
	return nil
}

// bindKV opens a bucket Setup made.
func bindKV(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w: bucket %s is missing: run `switchboard setup` as the operator", ErrNotSetUp, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("media: bucket %s: %w", bucket, err)
	}
	return kv, nil
}
