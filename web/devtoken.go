package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/protocol"
)

// PathDevToken is the development token route.
const PathDevToken = "/v1/dev/token"

// PrefixDev is where cmd mounts DevTokens.
const PrefixDev = "/v1/dev/"

// Mint signs a token for user on device and says when it expires.
type Mint func(user, device string) (token string, expires time.Time, err error)

// DevTokens serves the development token route, for signing in from the
// chat page without the CLI:
//
//	POST /v1/dev/token   {"user":"alice","device":"laptop"}   (Content-Type: application/json)
//	     200 {"token","user","device","expires_ms"}; 400 bad_request, 403 bad_origin, 415 bad_type
//	other methods        405 with Allow: POST
//
// Anyone who reaches it gets a token for any user: cmd mounts it only in
// development (--dev-tokens). It answers same-origin requests only: a
// request with an Origin other than its own host is refused, and only a
// JSON body is read, which another origin's page cannot send without a
// CORS preflight that nothing here answers. The token is in the answer
// only: it is never logged.
func DevTokens(mint Mint) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != PathDevToken {
			devError(ctx, fasthttp.StatusNotFound, "not_found", "no such route")
			return
		}
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			devError(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", "POST {\"user\",\"device\"}")
			return
		}
		if !sameOrigin(string(ctx.Request.Header.Peek("Origin")), string(ctx.Host())) {
			devError(ctx, fasthttp.StatusForbidden, "bad_origin", "tokens are given to this server's own page only")
			return
		}
		ct, _, _ := strings.Cut(string(ctx.Request.Header.ContentType()), ";")
		if !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
			devError(ctx, fasthttp.StatusUnsupportedMediaType, "bad_type", "send application/json")
			return
		}
		body, ok := devBody(ctx)
		if !ok {
			devError(ctx, fasthttp.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body must be at most %d bytes", maxDevBody))
			return
		}
		var req struct {
			User   string `json:"user"`
			Device string `json:"device"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			devError(ctx, fasthttp.StatusBadRequest, "bad_request", "the body must be {\"user\",\"device\"}")
			return
		}
		if !protocol.ValidID(req.User) || !protocol.ValidID(req.Device) {
			devError(ctx, fasthttp.StatusBadRequest, "bad_request", "user and device must be 1-64 characters of A-Z a-z 0-9 _ -")
			return
		}
		tok, exp, err := mint(req.User, req.Device)
		if err != nil {
			devError(ctx, fasthttp.StatusInternalServerError, "internal", "no token could be made")
			return
		}
		b, _ := json.Marshal(struct {
			Token     string `json:"token"`
			User      string `json:"user"`
			Device    string `json:"device"`
			ExpiresMS int64  `json:"expires_ms"`
		}{tok, req.User, req.Device, exp.UnixMilli()})
		ctx.Response.Header.Set("Cache-Control", "no-store")
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
	}
}

// maxDevBody bounds a token request's body: {"user","device"} is under
// 200 bytes. The route needs no credentials, and on the gateway's server
// bodies stream: read whole, a declared gigabyte would be held in memory.
const maxDevBody = 4 << 10

// devBody reads the request's body, false if it is longer than
// maxDevBody (it is not read past that).
func devBody(ctx *fasthttp.RequestCtx) ([]byte, bool) {
	if ctx.Request.Header.ContentLength() > maxDevBody {
		return nil, false
	}
	r := ctx.RequestBodyStream()
	if r == nil {
		b := ctx.PostBody() // a server that does not stream bounds it itself
		return b, len(b) <= maxDevBody
	}
	b, err := io.ReadAll(io.LimitReader(r, maxDevBody+1))
	return b, err == nil && len(b) <= maxDevBody
}

func devError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	b, _ := json.Marshal(map[string]string{"code": code, "message": msg})
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// sameOrigin reports whether a request's Origin (none: not a browser's
// cross-origin request) names the host it was sent to, as the gateway's
// WebSocket rule does: host and port, the default port by scheme.
func sameOrigin(origin, host string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	port := ":80"
	if u.Scheme == "https" {
		port = ":443"
	}
	withPort := func(h string) string {
		h = strings.ToLower(h)
		if !strings.Contains(h, ":") || strings.HasSuffix(h, "]") {
			h += port
		}
		return h
	}
	return withPort(u.Host) == withPort(host)
}
