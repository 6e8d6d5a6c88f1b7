package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// An operator lays out a regions deployment with setup --region and
// gives users their homes with home, on the directory region: every
// region then reads the same directory. A malformed assignment, or a
// region setup does not know, is refused before anything is written.
func TestHomeFillsTheDirectory(t *testing.T) {
	t.Parallel()
	rs := tk.StartRegions(t, "us", "eu")
	keys := t.TempDir()
	if err := tk.TestKeys(t).Write(keys); err != nil {
		t.Fatal(err)
	}
	regions := "us=ws://us.example/v1/ws,eu=ws://eu.example/v1/ws"
	for _, r := range rs.Regions {
		out, err := run(t, "setup", "--nats", r.Server.ClientURL(), "--nats-keys", keys, "--region", r.Name, "--regions", regions)
		if err != nil {
			t.Fatalf("setup --region %s: %v\n%s", r.Name, err, out)
		}
	}
	for _, r := range rs.Regions {
		r.WaitSourcing(t, 30*time.Second)
	}
	if out, err := run(t, "gateway", "--nats", rs.Regions[0].Server.ClientURL(), "--nats-keys", keys, "--pinned"); err == nil || !strings.Contains(out, "need --region") {
		t.Errorf("--pinned without --region: want a refusal, got %v\n%s", err, out)
	}
	if out, err := run(t, "setup", "--nats", rs.Regions[0].Server.ClientURL(), "--nats-keys", keys, "--region", "mars", "--regions", regions); err == nil || !strings.Contains(out, "mars") {
		t.Errorf("setup for a region not in --regions: want a refusal naming it, got %v\n%s", err, out)
	}

	dir := rs.Regions[0].Server.ClientURL() // us: the first listed
	out, err := run(t, "home", "--nats", dir, "--nats-keys", keys, "alice=us", "bob=eu")
	if err != nil {
		t.Fatalf("home: %v\n%s", err, out)
	}
	if !strings.Contains(out, "alice is homed in us") || !strings.Contains(out, "bob is homed in eu") {
		t.Errorf("home says:\n%s", out)
	}
	// The same home again is no change; another is refused (homes do not
	// move in this version), and alice stays where she was.
	if out, err := run(t, "home", "--nats", dir, "--nats-keys", keys, "alice=us"); err != nil {
		t.Errorf("alice's home given again: %v\n%s", err, out)
	}
	if out, err := run(t, "home", "--nats", dir, "--nats-keys", keys, "alice=eu"); err == nil || !strings.Contains(out, "homed in us already") {
		t.Errorf("alice moved to eu: want a refusal, got %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"alice"}, {"alice=US"}, {"=eu"}, {"carol=eu", "dave"}, {"carol=eu", "dave=mars"}, {}} {
		args := append([]string{"home", "--nats", dir, "--nats-keys", keys}, bad...)
		if out, err := run(t, args...); err == nil {
			t.Errorf("home %v: want a refusal, got\n%s", bad, out)
		}
	}

	// A gateway started in us with the same flags serves alice and sends
	// bob's device to eu, by the URL --regions gives.
	secret := "a-regions-secret-0123456789abcdef-0123456789"
	gw := start(t, "gateway", "--nats", dir, "--nats-keys", keys, "--jwt-secret", secret, "--region", "us", "--regions", regions)
	tok := func(user string) string {
		return strings.TrimSpace(tk.Run(t, binary, "token", "--jwt-secret", secret, "--user", user, "--device", "phone"))
	}
	tk.DialToken(t, gw.WSURL, tok("alice"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = client.Dial(ctx, client.Options{URL: gw.WSURL, Token: client.WithToken(tok("bob"))})
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusMisdirectedRequest || !strings.Contains(he.Body, "ws://eu.example/v1/ws") {
		t.Errorf("bob in us: %v, want 421 naming eu's URL", err)
	}

	want := map[string]string{"alice": "us", "bob": "eu"}
	for _, r := range rs.Regions { // the directory and its mirror alike
		tk.WaitFor(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			kv, err := r.JS.KeyValue(ctx, contract.HomesKV)
			if err != nil {
				return err
			}
			for user, home := range want {
				e, err := kv.Get(ctx, user)
				if err != nil {
					return fmt.Errorf("region %s: %s: %w", r.Name, user, err)
				}
				if string(e.Value()) != home {
					return fmt.Errorf("region %s: %s homed in %q, want %q", r.Name, user, e.Value(), home)
				}
			}
			for _, user := range []string{"carol", "dave"} { // the refused line wrote nothing
				if _, err := kv.Get(ctx, user); err == nil {
					return fmt.Errorf("region %s: %s has a home from a refused command", r.Name, user)
				}
			}
			return nil
		})
	}
}

// The load tool drives a pairs run across regions: senders homed in us
// and connected there, recipients in eu; every message delivered once, in
// order, with its receipt, and the report says where each side was.
func TestBenchPairsAcrossRegions(t *testing.T) {
	t.Parallel()
	rs := tk.StartRegions(t, "us", "eu")
	rs.Apply(t, streams.Options{})
	rs.Start(t, tk.TestConfig())
	us, eu := rs.Region("us"), rs.Region("eu")
	data := t.TempDir()
	if err := tk.TestKeys(t).Write(filepath.Join(data, "nats")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "report.json")
	_, rep := runBenchJSON(t, out, "bench", "--scenario", "pairs", "--pairs", "4", "--rate", "40", "--duration", "1s",
		"--senders-in", "us="+us.Gateway.URL, "--recipients-in", "eu="+eu.Gateway.URL,
		"--nats", us.Server.ClientURL(), "--data", data, "--jwt-secret", string(tk.Secret),
		"--json", out, "--quiet", "--settle", "-1s", "--baseline-msgs", "2000", "--drain-timeout", "30s")
	m := rep.Messages
	if rep.Pairs == nil || rep.Pairs.SenderRegion != "us" || rep.Pairs.RecipientRegion != "eu" {
		t.Fatalf("report: %+v", rep.Pairs)
	}
	if m.Sent == 0 || m.Delivered != m.Sent || m.Receipts != m.Sent || m.Lost+m.Duplicated+m.Reordered+m.MissingReceipts != 0 {
		t.Fatalf("messages: %+v", m)
	}
	for _, bad := range [][]string{
		{"--scenario", "idle", "--senders-in", "us=" + us.Gateway.URL, "--recipients-in", "eu=" + eu.Gateway.URL},
		{"--scenario", "pairs", "--senders-in", "us=" + us.Gateway.URL},
		{"--scenario", "pairs", "--senders-in", "us=" + us.Gateway.URL, "--recipients-in", "eu=" + eu.Gateway.URL, "--url", us.Gateway.URL},
	} {
		args := append(append([]string{"bench"}, bad...), "--nats", us.Server.ClientURL(), "--data", data, "--jwt-secret", string(tk.Secret))
		if out, err := run(t, args...); err == nil || !strings.Contains(out, "--senders-in") {
			t.Errorf("bench %v: want a refusal naming the flags, got %v\n%s", bad, err, out)
		}
	}
}
