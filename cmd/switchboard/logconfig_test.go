package main

import (
	"bytes"
	"flag"
	"log/slog"
	"strings"
	"testing"
)

// The config line hides what of a URL can hold a credential: a webhook's
// path and query (often its token), any URL's user info and query; the
// host stays, for the operator.
func TestConfigLogHidesURLCredentials(t *testing.T) {
	var c functionsConfig
	fs := flag.NewFlagSet("function", flag.ContinueOnError)
	bindPushFlags(fs, &c)
	if err := fs.Parse([]string{"--push-webhook", "https://hooks.example/services/T0/B0/PATHSECRET?token=QUERYSECRET"}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	logConfig(slog.New(slog.NewTextHandler(&buf, nil)), fs)
	for _, s := range []string{"PATHSECRET", "QUERYSECRET"} {
		if strings.Contains(buf.String(), s) {
			t.Errorf("the config line carries the webhook URL's %s: %s", s, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "hooks.example") {
		t.Errorf("the config line lost the webhook's host: %s", buf.String())
	}
	for in, want := range map[string]string{
		"nats://gw:PASSWORD@nats.example:4222": "nats://redacted@nats.example:4222",
		"http://minio.example:9000":            "http://minio.example:9000",
		"https://x.example/a/b?k=SECRET":       "https://x.example/redacted?redacted",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%s) = %s, want %s", in, got, want)
		}
	}
}

// A list of NATS servers (--nats a,b,c) has each server's credentials
// hidden, not only the first's.
func TestConfigLogHidesEveryServersCredentials(t *testing.T) {
	var nats string
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.StringVar(&nats, "nats", "", "")
	if err := fs.Parse([]string{"--nats", "nats://gw:FIRSTPW@127.0.0.1:1,nats://gw:SECONDPW@127.0.0.1:2, nats://THIRDTOKEN@127.0.0.1:3"}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	logConfig(slog.New(slog.NewTextHandler(&buf, nil)), fs)
	for _, s := range []string{"FIRSTPW", "SECONDPW", "THIRDTOKEN"} {
		if strings.Contains(buf.String(), s) {
			t.Errorf("the config line carries %s: %s", s, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "127.0.0.1:3") {
		t.Errorf("the config line lost a server: %s", buf.String())
	}
}
