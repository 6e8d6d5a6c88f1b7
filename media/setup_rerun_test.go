package media_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

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
