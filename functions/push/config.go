package push

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Sentinels; match them with errors.Is.
var (
	// ErrNotConfigured is returned by Start and Validate when no webhook
	// URL is set: push is optional, and the caller decides to run without.
	ErrNotConfigured = errors.New("push: not configured (no webhook URL)")
	// ErrConfig wraps an invalid setting; the message names the field.
	ErrConfig = errors.New("push: invalid config")
	// ErrMalformed wraps the reason an INBOX message cannot be turned into
	// a notification. Such a message is dead-lettered at once.
	ErrMalformed = errors.New("push: malformed inbox message")
	// ErrWebhook wraps a failed webhook call.
	ErrWebhook = errors.New("push: webhook")
)

// Config tunes an instance. A zero duration or count means its default
// (DefaultConfig); a negative one is an error.
type Config struct {
	// WebhookURL receives one POST per notified device. Empty means push
	// is not configured and Start refuses to run.
	WebhookURL string
	// WebhookSecret, when set, is sent as "Authorization: Bearer <secret>"
	// so the receiver can tell the calls are ours. Empty sends none.
	WebhookSecret string
	// Window is the coalescing window: at most one push per user per
	// window, so a burst of messages wakes each device once. The server
	// keeps per-key TTLs in whole seconds, so it is rounded up to one.
	// Zero means 30 s.
	Window time.Duration
	// Timeout bounds one webhook call. Zero means 5 s.
	Timeout time.Duration
	// BaseBackoff is the delay before the second attempt; each later one
	// doubles it, with jitter. Zero means 1 s.
	BaseBackoff time.Duration
	// MaxBackoff caps the delay between attempts. Zero means 5 min.
	MaxBackoff time.Duration
	// MaxAttempts is how many deliveries of a message may try the webhook
	// before its notification is dead-lettered. Zero means 8.
	MaxAttempts int
}

// DefaultConfig returns the defaults, with no webhook (push disabled).
func DefaultConfig() Config {
	return Config{
		Window:      30 * time.Second,
		Timeout:     5 * time.Second,
		BaseBackoff: time.Second,
		MaxBackoff:  5 * time.Minute,
		MaxAttempts: 8,
	}
}

// withDefaults fills the zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.BaseBackoff == 0 {
		c.BaseBackoff = d.BaseBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	return c
}

// Validate reports the first invalid field, wrapping ErrConfig, or
// ErrNotConfigured when there is no webhook URL.
func (c Config) Validate() error {
	if c.WebhookURL == "" {
		return ErrNotConfigured
	}
	u, err := url.Parse(c.WebhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Not quoted: it may carry credentials, which would reach a log.
		return fmt.Errorf("%w: WebhookURL is not an absolute http or https URL", ErrConfig)
	}
	if u.User != nil {
		// Credentials in a URL end up in logs; the secret has its own field.
		return fmt.Errorf("%w: WebhookURL must not carry credentials; use WebhookSecret", ErrConfig)
	}
	c = c.withDefaults()
	switch {
	case c.Window < time.Second:
		return fmt.Errorf("%w: Window %s is under the 1 s granularity of per-key TTLs", ErrConfig, c.Window)
	case c.Timeout < 0:
		return fmt.Errorf("%w: Timeout %s is negative", ErrConfig, c.Timeout)
	case c.BaseBackoff < 0:
		return fmt.Errorf("%w: BaseBackoff %s is negative", ErrConfig, c.BaseBackoff)
	case c.MaxBackoff < c.BaseBackoff:
		return fmt.Errorf("%w: MaxBackoff %s is below BaseBackoff %s", ErrConfig, c.MaxBackoff, c.BaseBackoff)
	case c.MaxAttempts < 1:
		return fmt.Errorf("%w: MaxAttempts %d is below 1", ErrConfig, c.MaxAttempts)
	}
	return nil
}
