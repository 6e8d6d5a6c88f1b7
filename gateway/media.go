package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/media"
	"github.com/switchboard-im/switchboard/protocol"
)

// EnableMedia mounts the media HTTP API (uploads, downloads, grants, and
// the embedded store's signed URLs) on this gateway. Call it before Serve.
func (s *Server) EnableMedia(api *media.API) { s.mediaAPI.Store(api) }

// serveMedia authenticates a media API request with the same tokens as
// the WebSocket (Authorization: Bearer, or access_token in the query) and
// hands it to the media API. The embedded store's blob URLs carry their
// own signature and need no token.
func (s *Server) serveMedia(ctx *fasthttp.RequestCtx) {
	api := s.mediaAPI.Load()
	if api == nil {
		httpError(ctx, fasthttp.StatusNotFound, "no_media", "media is not enabled on this gateway")
		return
	}
	if strings.HasPrefix(string(ctx.Path()), media.PathBlob) {
		api.Blob(ctx)
		return
	}
	tok := bearerToken(ctx)
	if tok == "" {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="switchboard"`)
		httpError(ctx, fasthttp.StatusUnauthorized, "no_token", "a token is required")
		return
	}
	id, err := s.verifyToken(tok)
	if err != nil {
		code := "bad_token"
		if errors.Is(err, ErrTokenExpired) {
			code = "token_expired"
		}
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="switchboard", error="invalid_token"`)
		httpError(ctx, fasthttp.StatusUnauthorized, code, "the token is not valid")
		return
	}
	api.Authenticated(ctx, id.User)
}

// grantMedia lets the recipient download the object a media send names,
// before the message is stored: a message whose recipient could not fetch
// its media, or whose size or sha256 are not those of the upload, is never
// delivered. It returns the reference to store, or nil after answering
// the client with an error.
func (s *session) grantMedia(f *protocol.Frame) []byte {
	if protocol.MediaOwner(f.Media.Key) != s.id.User {
		s.sendError(protocol.ErrBadMedia, "media.key is not under your upload prefix", f.ID, 0, 0)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
	defer cancel()
	_, err := s.srv.media.GrantMessage(ctx, media.GrantRequest{
		User: s.id.User, Key: f.Media.Key, Users: []string{f.To},
		Size: f.Media.Size, SHA256: f.Media.SHA256,
	})
	switch {
	case err == nil:
	case errors.Is(err, media.ErrUnavailable):
		s.sendError(protocol.ErrUnavailable, "media is unavailable; resend", f.ID, 0, 0)
		return nil
	case errors.Is(err, media.ErrNotFound):
		s.sendError(protocol.ErrBadMedia, "media.key was not uploaded (yet)", f.ID, 0, 0)
		return nil
	case errors.Is(err, media.ErrForbidden), errors.Is(err, media.ErrBadRequest), errors.Is(err, media.ErrTooLarge):
		s.sendError(protocol.ErrBadMedia, "media.key cannot be shared: "+err.Error(), f.ID, 0, 0)
		return nil
	default:
		s.log.Warn("media grant failed", "err", err)
		s.sendError(protocol.ErrUnavailable, "media is unavailable; resend", f.ID, 0, 0)
		return nil
	}
	ref, _ := json.Marshal(f.Media)
	return ref
}

// requestConfig decides from a request's header, before its body is
// read, how long it may take and how large it may be. Only an upload to
// the embedded store whose signed URL verifies gets more than the
// handshake-sized defaults (its body streams into the object store, which
// enforces the upload's own size limit); any other blob request is
// answered without its body being read. The media API checks the URL, so
// the gateway need not know how it is signed. Before then no one has
// shown any right to hold a connection for an upload's time.
func (s *Server) requestConfig(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	api := s.mediaAPI.Load()
	if api == nil {
		return fasthttp.RequestConfig{}
	}
	return api.RequestConfig(h, fasthttp.RequestConfig{ReadTimeout: s.cfg.MediaUploadTimeout, MaxRequestBodySize: 1 << 40})
}
