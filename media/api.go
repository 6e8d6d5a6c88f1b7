package media

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/protocol"
)

// The HTTP routes. Everything under PathPrefix except PathBlob needs the
// caller's token (the gateway checks it and passes the user to
// Authenticated); PathBlob is authorised by the URL's signature alone.
const (
	PathPrefix   = "/v1/media/"
	PathUploads  = "/v1/media/uploads"
	PathDownload = "/v1/media/download"
	PathBlob     = "/v1/media/blob/"
)

// maxJSONBody bounds a request body on the authenticated routes. (Grants
// are not among them: a grant follows a media message the gateway stored,
// over NATS; one over HTTP would let an uploader share an object with no
// message and keep it from the orphan sweep.)
const maxJSONBody = 256 << 10

// API is the media HTTP API as fasthttp handlers for the gateway to mount:
//
//	POST /v1/media/uploads            {"mime":"image/png","size":1234}
//	     201 Ticket; 400 bad_request, 413 too_large, 415 bad_type
//	GET  /v1/media/download?key=KEY
//	     200 DownloadURL {"key","url","method","expires","expires_ms"};
//	     400 bad_request, 403 forbidden (not the uploader nor granted), 404 not_found
//	PUT  /v1/media/blob/KEY?type&max&exp&sig   (embedded store; the Ticket's URL)
//	     201 UploadResult {"key","size","sha256","mime"}; 400 bad_request (a body that is not its
//	     Content-Length), 403 bad_signature/url_expired, 409 exists, 411 length_required,
//	     413 too_large, 415 bad_type
//	GET  /v1/media/blob/KEY?exp&sig            (embedded store; the DownloadURL's URL)
//	     200 the bytes; 403 bad_signature/url_expired, 404 not_found
//
// Every route may also answer 405 method_not_allowed, 500 internal and, for
// the first two, 503 unavailable (the media function did not answer) and
// 401 unauthorized, which the gateway sends before calling Authenticated.
// Error bodies are {"code":"...","message":"..."}; Error lists the codes.
//
// The authenticated routes call the media function over NATS rather than
// presigning in the gateway, so presigning scales with the function's
// instances and the gateway needs no object-store credentials.
//
// Serving PathBlob needs the fasthttp.Server to stream request bodies
// (StreamRequestBody: true); without it uploads above MaxRequestBodySize
// are refused by fasthttp before reaching Blob. The server's ReadTimeout
// covers a whole upload, so it must allow the largest upload at the
// slowest client speed the deployment supports; RequestConfig, as the
// server's HeaderReceived hook, gives that time to verified uploads only.
//
// An API is safe from many goroutines.
type API struct {
	client *Client
	blob   *embeddedStore // nil with S3: clients talk to S3 directly
	log    *slog.Logger
}

// NewAPI returns the HTTP API for a gateway that does not run the media
// function itself (Service.API is the in-process shortcut). With the
// embedded store it opens the object store and signing key, creating them
// if the function has not yet.
func NewAPI(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log = log.WithGroup("media")
	a := &API{client: NewClient(nc, cfg.RequestTimeout), log: log}
	if cfg.Embedded() {
		_, _, blob, err := open(ctx, js, cfg, log)
		if err != nil {
			return nil, err
		}
		a.blob = blob
	}
	return a, nil
}

// Authenticated serves the routes that need a caller: user is the id the
// gateway took from the verified token.
func (a *API) Authenticated(ctx *fasthttp.RequestCtx, user string) {
	if !protocol.ValidID(user) {
		writeError(ctx, ErrUnauthorized)
		return
	}
	method := string(ctx.Method())
	switch string(ctx.Path()) {
	case PathUploads:
		if !allowMethod(ctx, method, http.MethodPost) {
			return
		}
		var req struct {
			Mime string `json:"mime"`
			Size int64  `json:"size"`
		}
		if !readJSON(ctx, &req) {
			return
		}
		t, err := a.client.Upload(context.Background(), user, req.Mime, req.Size)
		a.answer(ctx, http.StatusCreated, t, err)
	case PathDownload:
		if !allowMethod(ctx, method, http.MethodGet) {
			return
		}
		key := string(ctx.QueryArgs().Peek("key"))
		if key == "" {
			writeError(ctx, errorf(ErrBadRequest, "the key parameter is required"))
			return
		}
		d, err := a.client.Download(context.Background(), user, key)
		a.answer(ctx, http.StatusOK, d, err)
	default:
		writeError(ctx, errorf(ErrNotFound, "no such route"))
	}
}

// Handler serves every route under PathPrefix: the blob URLs by their
// signature, the others after authenticate (the gateway's token check,
// which answers a refusal itself) names the user.
func (a *API) Handler(authenticate func(*fasthttp.RequestCtx) (user string, ok bool)) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if bytes.HasPrefix(ctx.Path(), []byte(PathBlob)) {
			a.Blob(ctx)
			return
		}
		if user, ok := authenticate(ctx); ok {
			a.Authenticated(ctx, user)
		}
	}
}

// HeaderConfig is RequestConfig with upload's limits: the time an upload
// may take, and no body limit but the upload's own.
func (a *API) HeaderConfig(uploadTimeout time.Duration) func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	upload := fasthttp.RequestConfig{ReadTimeout: uploadTimeout, MaxRequestBodySize: 1 << 40}
	return func(h *fasthttp.RequestHeader) fasthttp.RequestConfig { return a.RequestConfig(h, upload) }
}

// Blob serves the embedded store's signed PUT and GET URLs. With an S3
// backend there is nothing here and every request is not_found.
func (a *API) Blob(ctx *fasthttp.RequestCtx) {
	if a.blob == nil {
		writeError(ctx, errorf(ErrNotFound, "this server has no embedded media store"))
		return
	}
	a.blob.serveBlob(ctx)
}

// RequestConfig is for the HTTP server's HeaderReceived hook: it decides
// what a request on PathBlob may cost from its header alone, before any
// of its body is read. A PUT whose URL verifies (signed by this store,
// exactly as issued, not expired) gets upload, the time and body size an
// upload needs. A blob request that does not verify (a bad or missing
// signature, an expired URL, a path that is no key, another method, or
// any at all without an embedded store) keeps the server's limits and has
// its body cut off: its header is made to declare no body and to close
// the connection, so the server reads none of the body and Blob answers
// the refusal at once. Anything else is left as it is, with the zero
// RequestConfig (the server's own limits).
//
// The path is parsed as the server will parse it to route the request,
// so no spelling of a blob path escapes the check.
func (a *API) RequestConfig(h *fasthttp.RequestHeader, upload fasthttp.RequestConfig) fasthttp.RequestConfig {
	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	if uri.Parse(h.Host(), h.RequestURI()) != nil || !bytes.HasPrefix(uri.Path(), []byte(PathBlob)) {
		return fasthttp.RequestConfig{}
	}
	err := ErrNotFound
	var g blobGrant
	if a.blob != nil {
		g, err = a.blob.verify(h.Method(), uri)
	}
	if err != nil {
		h.SetContentLength(0)        // and no Transfer-Encoding
		h.Del(fasthttp.HeaderExpect) // no "100 Continue" inviting the body
		h.SetConnectionClose()       // what was sent of it is never read as a request
		return fasthttp.RequestConfig{}
	}
	if g.method == http.MethodPut {
		return upload
	}
	return fasthttp.RequestConfig{}
}

func (a *API) answer(ctx *fasthttp.RequestCtx, status int, v any, err error) {
	if err != nil {
		e := asError(err)
		if e.Status >= 500 {
			a.log.Error("media request", "path", string(ctx.Path()), "err", err)
		}
		writeError(ctx, e)
		return
	}
	writeJSON(ctx, status, v)
}

func allowMethod(ctx *fasthttp.RequestCtx, got, want string) bool {
	if got == want {
		return true
	}
	ctx.Response.Header.Set("Allow", want)
	writeError(ctx, errorf(ErrMethodNotAllowed, "use %s", want))
	return false
}

// readJSON decodes a bounded request body. It reads the body stream when
// the server streams bodies, so a huge body is cut off at the bound
// rather than buffered.
func readJSON(ctx *fasthttp.RequestCtx, v any) bool {
	var body []byte
	if stream := ctx.RequestBodyStream(); stream != nil {
		b, err := io.ReadAll(io.LimitReader(stream, maxJSONBody+1))
		if err != nil {
			ctx.SetConnectionClose()
			writeError(ctx, errorf(ErrBadRequest, "could not read the request body"))
			return false
		}
		body = b
	} else {
		body = ctx.PostBody()
	}
	if len(body) > maxJSONBody {
		ctx.SetConnectionClose()
		writeError(ctx, errorf(ErrTooLarge, "the request body is above %d bytes", maxJSONBody))
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		writeError(ctx, errorf(ErrBadRequest, "the request body is not valid JSON"))
		return false
	}
	return true
}
