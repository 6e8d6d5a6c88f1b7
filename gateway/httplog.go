package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/valyala/fasthttp"
)

// httpLogger carries fasthttp's own log lines (a malformed request, an
// accept error) into the gateway's logger. fasthttp writes them with the
// raw request in them: the request line with its query (access_token, a
// media URL's sig) and the headers (Authorization, Cookie), which are
// credentials. So nothing is copied that could hold one: a line keeps
// fasthttp's words up to the first verb of its format, the addresses
// among its arguments and, for an error, only its class (errorClass).
// Strings and anything else are dropped.
//
// A request the server could not parse is the client's fault and one
// arrives per bad request, so those lines are debug; the rest (accept
// errors, connection limits) are warnings.
type httpLogger struct{ log *slog.Logger }

func (l httpLogger) Printf(format string, args ...any) {
	what := format
	if i := strings.IndexByte(what, '%'); i >= 0 {
		what = what[:i]
	}
	if what = strings.TrimRight(what, " :-<>,."); what == "" {
		what = "http server"
	}
	var attrs []any
	var addrs []string
	for _, a := range args {
		switch v := a.(type) {
		case net.Addr:
			addrs = append(addrs, v.String())
		case net.IP:
			addrs = append(addrs, v.String())
		case error:
			attrs = append(attrs, "err", errorClass(v))
		}
	}
	if len(addrs) > 0 {
		// fasthttp names the local address before the remote one.
		attrs = append(attrs, "remote", addrs[len(addrs)-1])
	}
	level := slog.LevelWarn
	if strings.HasPrefix(format, "error when serving connection") {
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, what, attrs...)
}

// errorClass says what went wrong without quoting what was received.
// fasthttp's errors put its own words first and the bytes it could not
// parse after ("error when reading request headers: fasthttp: duplicate
// content-length header: buffer size=98, contents: \"GET /v1/ws?access_token=..."),
// so the leading parts that are plain lowercase words are kept, up to the
// first part that is not.
func errorClass(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return "network " + oe.Op + ": " + errorClass(oe.Err)
	}
	var kept []string
	for _, part := range strings.Split(err.Error(), ": ") {
		if !plainWords(part) {
			break
		}
		kept = append(kept, part)
	}
	if len(kept) == 0 {
		return fmt.Sprintf("unrecognised error (%T)", err)
	}
	return strings.Join(kept, ": ")
}

// plainWords holds for short text of lowercase words and numbers: what an
// error message says, not what a token or signature looks like (those
// carry capitals, dots or long unbroken runs).
func plainWords(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, w := range strings.Split(s, " ") {
		if len(w) > 24 {
			return false
		}
		for i := 0; i < len(w); i++ {
			c := w[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// HTTPLogger is the logger to give any other fasthttp server of the
// binary (the media function's blob listener): fasthttp's lines without a
// credential in them, as the gateway's own.
func HTTPLogger(log *slog.Logger) fasthttp.Logger { return httpLogger{log: log} }
