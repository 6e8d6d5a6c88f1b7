package gateway

import (
	"errors"
	"strings"

	"github.com/valyala/fasthttp"
)

// Route is an HTTP API that another part of the binary serves on the
// gateway's listener (the media API): every request whose path starts with
// Prefix goes to Handle. Config, when set, decides from a request's header,
// before its body is read, how long it may take and how large it may be
// (fasthttp.Server's HeaderReceived); the zero RequestConfig keeps the
// gateway's handshake-sized limits. The gateway knows nothing of what the
// route does: cmd mounts it, so the gateway links no object store.
type Route struct {
	Prefix string
	Handle fasthttp.RequestHandler
	Config func(*fasthttp.RequestHeader) fasthttp.RequestConfig
}

// Mount adds r. Call it before Serve.
func (s *Server) Mount(r Route) { s.routes = append(s.routes, r) }

// mounted returns the route serving path, or nil.
func (s *Server) mounted(path []byte) *Route {
	for i := range s.routes {
		if strings.HasPrefix(string(path), s.routes[i].Prefix) {
			return &s.routes[i]
		}
	}
	return nil
}

// requestConfig asks the route a request is for how long it may take and
// how large it may be; nothing else gets more than the handshake's limits.
// The path is parsed as the server will parse it to route the request.
func (s *Server) requestConfig(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if len(s.routes) == 0 {
		return fasthttp.RequestConfig{}
	}
	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	if uri.Parse(h.Host(), h.RequestURI()) != nil {
		return fasthttp.RequestConfig{}
	}
	if r := s.mounted(uri.Path()); r != nil && r.Config != nil {
		return r.Config(h)
	}
	return fasthttp.RequestConfig{}
}

// Authenticate checks a mounted route's request with the same tokens and
// rules as the WebSocket handshake (Authorization: Bearer, or access_token
// in the query) and returns the user. On failure it has answered 401.
func (s *Server) Authenticate(ctx *fasthttp.RequestCtx) (user string, ok bool) {
	tok := bearerToken(ctx)
	if tok == "" {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="switchboard"`)
		httpError(ctx, fasthttp.StatusUnauthorized, "no_token", "a token is required")
		return "", false
	}
	id, err := s.verifyToken(tok)
	if err != nil {
		code := "bad_token"
		if errors.Is(err, ErrTokenExpired) {
			code = "token_expired"
		}
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="switchboard", error="invalid_token"`)
		httpError(ctx, fasthttp.StatusUnauthorized, code, "the token is not valid")
		return "", false
	}
	return id.User, true
}
