package media_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

// The media role may not make streams, so the function binds to buckets
// the operator made: started before setup, or with upload URLs that would
// outlive the upload claims setup made room for, it refuses to start and
// says what to run; after setup it starts.
func TestFunctionBindsToBucketsTheOperatorMade(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc := n.Connect(t, natsauth.Media)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := media.DefaultConfig()
	cfg.BaseURL = "http://127.0.0.1:1"
	cfg.SigningKey = testkit.MediaSigningKey
	cfg.SweepInterval = -1
	start := func(c media.Config) error {
		svc, err := media.New(ctx, nc, js, c, testkit.Logger(t))
		if err == nil {
			_ = svc.Stop()
		}
		return err
	}
	if err := start(cfg); !errors.Is(err, media.ErrNotSetUp) || !strings.Contains(err.Error(), "switchboard setup") {
		t.Fatalf("started before setup: %v, want ErrNotSetUp naming setup", err)
	}
	setup := cfg
	setup.UploadExpiry = 15 * time.Minute
	if err := media.Setup(ctx, n.JS, setup); err != nil {
		t.Fatal(err)
	}
	longer := cfg
	longer.UploadExpiry = time.Hour
	if err := start(longer); !errors.Is(err, media.ErrNotSetUp) || !strings.Contains(err.Error(), "--media-upload-expiry 1h0m0s") {
		t.Fatalf("upload URLs outliving the claims: %v, want ErrNotSetUp", err)
	}
	if err := start(cfg); err != nil {
		t.Fatalf("after setup: %v", err)
	}
	// The operator's setup again, with the new expiry, lets it start.
	if err := media.Setup(ctx, n.JS, longer); err != nil {
		t.Fatal(err)
	}
	if err := start(longer); err != nil {
		t.Fatalf("after setup for the longer expiry: %v", err)
	}
}

// Setup sets the grant bucket's TTL from ReferenceAge, and a run again
// with another changes it.
func TestSetupAppliesReferenceAge(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, age := range []time.Duration{48 * time.Hour, 72 * time.Hour} {
		cfg := media.DefaultConfig()
		cfg.ReferenceAge = age
		if err := media.Setup(ctx, n.JS, cfg); err != nil {
			t.Fatal(err)
		}
		if got := bucketTTL(t, n.JS, media.BucketACL); got != age {
			t.Fatalf("%s keeps records %s, want %s", media.BucketACL, got, age)
		}
	}
}

// A setup run again without --media-upload-expiry (an upgrade, a
// --max-age change, an all-in-one restarted on the same NATS) keeps the
// upload claims as long as they were, so a media function running with
// 2h upload URLs keeps claims that outlive them, and starts again.
func TestSetupRunAgainKeepsClaimsForRunningFunctions(t *testing.T) {
	t.Parallel()
	n := testkit.StartStreams(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := media.DefaultConfig()
	cfg.BaseURL = "http://127.0.0.1:1"
	cfg.SigningKey = testkit.MediaSigningKey
	cfg.SweepInterval = -1
	cfg.UploadExpiry = 2 * time.Hour
	cfg.OrphanAge = 24 * time.Hour
	if err := media.Setup(ctx, n.JS, cfg); err != nil { // setup --media-upload-expiry 2h
		t.Fatal(err)
	}
	nc := n.Connect(t, natsauth.Media)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := media.New(ctx, nc, js, cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()

	// setup --max-age 60d, later: the media flags left out.
	again := media.DefaultConfig()
	again.ReferenceAge = 61 * 24 * time.Hour
	if err := media.Setup(ctx, n.JS, again); err != nil {
		t.Fatal(err)
	}
	if got, need := bucketTTL(t, n.JS, media.BucketUploads), cfg.UploadExpiry+time.Minute; got < need {
		t.Errorf("a setup run again cut %s to %s under a running function whose upload URLs live %s (needs %s)",
			media.BucketUploads, got, cfg.UploadExpiry, need)
	}
	if _, err := media.New(ctx, nc, js, cfg, testkit.Logger(t)); err != nil {
		t.Errorf("the same function restarted: %v", err)
	}
}

// bucketTTL is how long KV bucket keeps a record.
func bucketTTL(t testing.TB, js jetstream.JetStream, bucket string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.TTL()
}
