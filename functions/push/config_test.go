package push

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("default config (no webhook): %v", err)
	}
	ok := DefaultConfig()
	ok.WebhookURL = "https://push.example.com/hook"
	if err := ok.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	if err := (Config{WebhookURL: "http://127.0.0.1:8080/"}).Validate(); err != nil {
		t.Errorf("zero fields mean defaults: %v", err)
	}
	for field, mod := range map[string]func(*Config){
		"WebhookURL":  func(c *Config) { c.WebhookURL = "push.example.com/hook" },
		"credentials": func(c *Config) { c.WebhookURL = "https://u:p@push.example.com/" },
		"Window":      func(c *Config) { c.Window = 500 * time.Millisecond },
		"Timeout":     func(c *Config) { c.Timeout = -time.Second },
		"BaseBackoff": func(c *Config) { c.BaseBackoff = -time.Second },
		"MaxBackoff":  func(c *Config) { c.MaxBackoff = 10 * time.Millisecond },
		"MaxAttempts": func(c *Config) { c.MaxAttempts = -1 },
	} {
		c := ok
		mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: err = %v", field, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	c := Config{WebhookURL: "http://x"}.withDefaults()
	if c.Window != 30*time.Second || c.Timeout != 5*time.Second || c.BaseBackoff != time.Second ||
		c.MaxBackoff != 5*time.Minute || c.MaxAttempts != 8 {
		t.Errorf("defaults %+v", c)
	}
}
