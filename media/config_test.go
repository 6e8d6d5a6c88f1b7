package media_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/media"
)

func TestConfigValidate(t *testing.T) {
	ok := media.DefaultConfig()
	ok.BaseURL = "http://127.0.0.1:8080"
	ok.SigningKey = []byte("0123456789abcdef0123456789abcdef")
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults with a base URL and a key: %v", err)
	}
	if d := media.DefaultConfig(); d.UploadExpiry != 15*time.Minute || d.DownloadExpiry != 15*time.Minute ||
		d.OrphanAge != 24*time.Hour || d.Limits[media.ClassVideo].MaxSize != 64*media.MiB ||
		d.Limits[media.ClassDocument].MaxSize != 100*media.MiB {
		t.Fatalf("defaults %+v", d)
	}
	for _, c := range []struct {
		name, field string
		mod         func(*media.Config)
	}{
		{"no base URL", "BaseURL", func(c *media.Config) { c.BaseURL = "" }},
		{"base URL with a path", "BaseURL", func(c *media.Config) { c.BaseURL = "http://h/x" }},
		{"short signing key", "SigningKey", func(c *media.Config) { c.SigningKey = []byte("short") }},
		{"no signing key", "SigningKey", func(c *media.Config) { c.SigningKey = nil }},
		{"upload expiry above 7 days", "UploadExpiry", func(c *media.Config) { c.UploadExpiry = 7*24*time.Hour + time.Second }},
		{"download expiry above 7 days", "DownloadExpiry", func(c *media.Config) { c.DownloadExpiry = 8 * 24 * time.Hour }},
		{"download expiry below 1s", "DownloadExpiry", func(c *media.Config) { c.DownloadExpiry = time.Millisecond }},
		{"orphan age within upload expiry", "OrphanAge", func(c *media.Config) { c.OrphanAge = time.Minute }},
		{"no S3 secret", "S3.AccessKey", func(c *media.Config) { c.S3 = media.S3Config{Endpoint: "h:9000", AccessKey: "a"} }},
		{"bad bucket", "S3.Bucket", func(c *media.Config) {
			c.S3 = media.S3Config{Endpoint: "h:9000", AccessKey: "a", SecretKey: "b", Bucket: "Bad_Bucket"}
		}},
		{"zero size", "Limits[image].MaxSize", func(c *media.Config) {
			c.Limits = media.DefaultLimits()
			c.Limits[media.ClassImage] = media.Limit{Types: []string{"image/png"}}
		}},
		{"type with parameters", "Limits[audio].Types", func(c *media.Config) {
			c.Limits = media.DefaultLimits()
			c.Limits[media.ClassAudio] = media.Limit{MaxSize: 1, Types: []string{"audio/ogg; codecs=opus"}}
		}},
		{"type in two classes", "image/png", func(c *media.Config) {
			c.Limits = media.DefaultLimits()
			c.Limits["stickers"] = media.Limit{MaxSize: 1, Types: []string{"image/png"}}
		}},
		{"replicas", "Replicas", func(c *media.Config) { c.Replicas = 2 }},
	} {
		cfg := ok
		cfg.Limits = nil
		c.mod(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, media.ErrConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v (want ErrConfig naming %s)", c.name, err, c.field)
		}
	}
	s3 := ok
	s3.BaseURL = ""
	s3.S3 = media.S3Config{Endpoint: "minio:9000", AccessKey: "a", SecretKey: "b"}
	if err := s3.Validate(); err != nil {
		t.Fatalf("S3 without a base URL: %v", err)
	}
	week := ok
	week.UploadExpiry, week.DownloadExpiry, week.OrphanAge = media.MaxExpiry, media.MaxExpiry, 8*24*time.Hour
	if err := week.Validate(); err != nil {
		t.Fatalf("exactly 7 days: %v", err)
	}
}

func TestKeys(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k, err := media.NewKey("alice_1")
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^u/alice_1/[0-9a-f]{32}$`).MatchString(k) || seen[k] {
			t.Fatalf("key %q", k)
		}
		seen[k] = true
		if owner, err := media.ParseKey(k); err != nil || owner != "alice_1" {
			t.Fatalf("ParseKey(%q) = %q, %v", k, owner, err)
		}
	}
	for _, bad := range []string{"a.b", "", "alice bob", "x*", strings.Repeat("a", 65)} {
		if _, err := media.NewKey(bad); !errors.Is(err, media.ErrBadRequest) {
			t.Errorf("NewKey(%q): %v", bad, err)
		}
	}
	for _, bad := range []string{
		"", "u/", "u/alice", "u/alice/", "v/alice/" + strings.Repeat("a", 32), "u/al.ice/" + strings.Repeat("a", 32),
		"u/alice/" + strings.Repeat("a", 31), "u/alice/" + strings.Repeat("a", 33), "u/alice/" + strings.Repeat("g", 32),
		"u/alice/" + strings.Repeat("a", 31) + "/", "u/alice/x/" + strings.Repeat("a", 32),
	} {
		if _, err := media.ParseKey(bad); !errors.Is(err, media.ErrBadRequest) {
			t.Errorf("ParseKey(%q): %v", bad, err)
		}
	}
}
