package gateway

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// An error's class keeps fasthttp's words and drops whatever it quoted,
// wherever the quote is and however it is spelled.
func TestErrorClassDropsWhatWasReceived(t *testing.T) {
	const tok = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
	const sig = "q1w2e3r4t5y6u7i8o9p0asdfghjklzxcvbnmqwertyu"
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("error when reading request headers: %w: buffer size=9, contents: %q", errors.New("fasthttp: duplicate content-length header"), "GET /?access_token="+tok),
			"error when reading request headers: fasthttp: duplicate content-length header"},
		{fmt.Errorf("cannot find http request method in %q", "Authorization: Bearer "+tok), "unrecognised error (*errors.errorString)"},
		{fmt.Errorf("error when reading request headers: unsupported http version in /v1/media/blob/u/a/b?sig=%s", sig), "error when reading request headers"},
		{fmt.Errorf("error when reading request headers: %s", sig), "error when reading request headers"},
		{fmt.Errorf("error when reading request headers: %s", strings.ToLower(sig)), "error when reading request headers"},
	} {
		got := errorClass(c.err)
		if got != c.want {
			t.Errorf("class of %q: %q, want %q", c.err, got, c.want)
		}
		if strings.Contains(got, "eyJ") || strings.Contains(got, sig[:10]) {
			t.Errorf("class of %q quotes what was received: %q", c.err, got)
		}
	}
}
