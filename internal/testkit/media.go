package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/media"
)

// StartMedia runs the media function on n and mounts its HTTP API on g.
// A zero cfg.S3 uses the embedded store, with URLs pointing at g.
func StartMedia(t testing.TB, n *NATS, g *Gateway, cfg media.Config) *media.Service {
	t.Helper()
	if cfg.Embedded() && cfg.BaseURL == "" {
		cfg.BaseURL = "http://" + g.Addr
	}
	if cfg.Embedded() && cfg.SigningKey == nil {
		cfg.SigningKey = MediaSigningKey
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The operator makes the buckets; the function binds to them.
	if err := media.Setup(ctx, n.JS, cfg); err != nil {
		t.Fatal(err)
	}
	nc := n.Connect(t, natsauth.Media) // its own role, as a separate process
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := media.New(ctx, nc, js, cfg, Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	api := svc.API()
	g.Server.Mount(gateway.Route{Prefix: media.PathPrefix, Handle: api.Handler(g.Server.Authenticate), Config: api.HeaderConfig(10 * time.Minute)})
	return svc
}

// MediaSigningKey signs test media URLs where a test gives none.
var MediaSigningKey = []byte("switchboard-test-media-signing-key-0123456789")

// MediaS3Config is a media config against a test MinIO.
func MediaS3Config(m *MinIO) media.Config {
	cfg := media.DefaultConfig()
	cfg.S3 = media.S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey}
	return cfg
}
