package main_test

import (
	"context"
	"testing"
	"time"

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
