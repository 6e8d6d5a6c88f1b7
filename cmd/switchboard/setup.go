package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/internal/natsauth"
)

// runSetup creates or updates the streams and buckets (media's too) on a
// NATS that gateways and functions will use, as the operator: they
// themselves have no right to. Safe to run again (on an upgrade, to
// change --max-age).
func runSetup(args []string, out io.Writer) error {
	c := defaultAppConfig()
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	fs.StringVar(&c.NATSURL, "nats", "", "NATS URL (required)")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory, whose nats/ holds the NATS keys unless --nats-keys says otherwise")
	bindNATSAuthFlags(fs, &c)
	bindStreamFlags(fs, &c.Streams)
	bindRegionFlags(fs, &c.Regions)
	m := &c.Functions.Media
	m.ReferenceAge = 0 // unless given: a day past --max-age (referenceAge)
	bindMediaBucketFlags(fs, m)
	fs.DurationVar(&m.UploadExpiry, "media-upload-expiry", m.UploadExpiry, "the longest life of an upload URL the media functions will be given (their --media-upload-expiry): upload claims are kept that long and a minute")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	m.ReferenceAge = referenceAge(m.ReferenceAge, c.Streams.MaxAge)
	var err error
	if c.Streams.Region, err = c.Regions.layout(); err != nil { // regions.go
		return fmt.Errorf("setup: %w", err)
	}
	if c.NATSURL == "" {
		return errors.New("setup: --nats is required")
	}
	c.NATSKeys = c.natsKeysDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(r natsauth.Role) (*nats.Conn, error) {
		ro, err := natsauth.RoleOptions(r, c.natsKeysDir(), c.NATSCreds)
		if err != nil {
			return nil, err
		}
		return nats.Connect(c.NATSURL, append(ro, nats.Name("switchboard-setup"))...)
	}
	if err := setupStreams(ctx, connect, c.Streams, *m); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	fmt.Fprintln(out, "streams and buckets are in place")
	return nil
}
