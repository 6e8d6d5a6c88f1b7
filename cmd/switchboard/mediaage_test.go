package main_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/media"
)

// The all-in-one keeps an object a day past the retention of the messages
// that name it: with --max-age 60 days, MEDIA_ACL's records (whose expiry
// removes the object) live 61 days, not media's own 31-day default.
func TestServeMediaReferenceAgeFollowsMaxAge(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0", "--max-age", "1440h")
	opt, err := nats.NkeyOptionFromSeed(filepath.Join(data, "nats", "operator.nk"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(p.NATSURL, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
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
