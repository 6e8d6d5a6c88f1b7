package main_test

import (
	"context"
	"strings"
	"testing"
	"time"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

// The all-in-one keeps an object a day past the retention of the messages
// that name it: with --max-age 60 days, MEDIA_ACL's records (whose expiry
// removes the object) live 61 days, not media's own 31-day default.
func TestServeMediaReferenceAgeFollowsMaxAge(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0", "--max-age", "1440h")
	js := operatorJS(t, p, data)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, media.BucketACL)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1440*time.Hour + 24*time.Hour; st.TTL() != want {
		t.Fatalf("%s keeps records %s, want --max-age + 1 day = %s", media.BucketACL, st.TTL(), want)
	}
}

// `switchboard setup` makes media's buckets too (the media role may not):
// grants kept a day past --max-age, upload claims as long as the upload
// URLs it is told of and a minute; a media function whose upload URLs
// would outlive the claims refuses to start and says what to run.
func TestSetupMakesTheMediaBuckets(t *testing.T) {
	t.Parallel()
	n := tk.StartNATS(t)
	keys := t.TempDir()
	if err := tk.TestKeys(t).Write(keys); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "setup", "--nats", n.Server.ClientURL(), "--nats-keys", keys, "--max-age", "240h", "--media-upload-expiry", "1h"); err != nil {
		t.Fatalf("setup: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for bucket, want := range map[string]time.Duration{media.BucketACL: 264 * time.Hour, media.BucketUploads: time.Hour + time.Minute} {
		kv, err := n.JS.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatalf("%s: %v", bucket, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTL() != want {
			t.Errorf("%s keeps records %s, want %s", bucket, st.TTL(), want)
		}
	}
	out, err := run(t, "function", "media", "--nats", n.Server.ClientURL(), "--nats-keys", keys, "--data", t.TempDir(),
		"--media-listen", "127.0.0.1:0", "--media-upload-expiry", "2h")
	if err == nil || !strings.Contains(out, "switchboard setup --media-upload-expiry 2h0m0s") {
		t.Fatalf("media with upload URLs outliving the claims: %v, want a refusal naming setup\n%s", err, out)
	}
}
