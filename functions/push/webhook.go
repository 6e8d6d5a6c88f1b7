package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// webhook posts notifications to the configured URL. It is safe for
// concurrent use.
type webhook struct {
	url     string
	secret  string
	timeout time.Duration
	client  *http.Client
}

func newWebhook(cfg Config) *webhook {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Every worker talks to the same host; without this most connections
	// would be closed after each call and redialled.
	tr.MaxIdleConnsPerHost = workers
	return &webhook{
		url:     cfg.WebhookURL,
		secret:  cfg.WebhookSecret,
		timeout: cfg.Timeout,
		client: &http.Client{
			Transport: tr,
			// A redirected POST would turn into a GET or carry the secret
			// to another host; a moved webhook is a config error.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// callError is a failed webhook call: a response other than 2xx, or no
// response at all (status 0).
type callError struct {
	status     int
	retryAfter time.Duration // from a 429 or 503, else 0
	err        error         // transport error when status is 0
}

func (e *callError) Error() string {
	if e.status == 0 {
		err := e.err
		// Drop the URL net/http puts in front: a webhook URL often holds a
		// token, and this text goes to logs and dead letters.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Sprintf("%s: %v", ErrWebhook, err)
	}
	return fmt.Sprintf("%s: %d %s", ErrWebhook, e.status, http.StatusText(e.status))
}

func (e *callError) Unwrap() []error { return []error{ErrWebhook, e.err} }

// permanent reports whether retrying cannot help: the receiver rejected
// the request itself (4xx other than 429) or points elsewhere (3xx).
// Throttling, server errors and transport errors are worth retrying.
func (e *callError) permanent() bool {
	return e.status != 0 && e.status != http.StatusTooManyRequests && e.status < 500
}

// isPermanent reports whether err is a webhook call that must not be retried.
func isPermanent(err error) bool {
	var ce *callError
	return errors.As(err, &ce) && ce.permanent()
}

// retryAfter is the delay the receiver asked for, or 0.
func retryAfter(err error) time.Duration {
	var ce *callError
	if errors.As(err, &ce) {
		return ce.retryAfter
	}
	return 0
}

// post sends one notification and returns nil on 2xx.
func (w *webhook) post(ctx context.Context, n Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return &callError{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if w.secret != "" {
		req.Header.Set("Authorization", "Bearer "+w.secret)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return &callError{err: err}
	}
	// Read a little of the body so the connection can be reused; a
	// receiver that answers with megabytes does not get to stall us.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	ce := &callError{status: resp.StatusCode}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		ce.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return ce
}

// parseRetryAfter reads either form of Retry-After (seconds or an HTTP
// date); anything else is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
