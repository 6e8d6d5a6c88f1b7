package media

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"
)

// embeddedStore keeps media in a JetStream object store on the NATS the
// rest of Switchboard already runs on, so the all-in-one binary serves
// media with no object store to deploy. Its URLs point at the binary's own
// HTTP server (API.Blob) and carry an HMAC-SHA256 signature in place of
// S3's: the signature is the whole authorisation, so the routes need no
// token and a URL can be handed to any HTTP client, as with S3.
type embeddedStore struct {
	obs     jetstream.ObjectStore
	claims  jetstream.KeyValue // MEDIA_UPLOADS: one entry per upload started
	baseURL string             // scheme://host[:port], no trailing slash
	key     []byte
	log     *slog.Logger
	uploads uploadSlots
}

// Uploads in progress at once, on one instance. Each holds a chunk of the
// object store (128 KiB) and its connection for as long as its client
// takes, up to --media-upload-timeout: without a bound, a client that
// starts uploads and stalls them holds memory without end (about 177 KiB
// each, measured).
const (
	maxUploads     = 512 // in all
	maxUserUploads = 8   // per uploader
)

// uploadSlots counts the uploads in progress, in all and per uploader.
type uploadSlots struct {
	mu     sync.Mutex
	total  int
	byUser map[string]int
}

// take reserves a slot for user's upload: ErrTooMany if they or the
// instance have all they may.
func (u *uploadSlots) take(user string) *Error {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.byUser[user] >= maxUserUploads:
		return errorf(ErrTooMany, "%d uploads of yours are in progress; finish one first", maxUserUploads)
	case u.total >= maxUploads:
		return errorf(ErrTooMany, "too many uploads are in progress; retry shortly")
	}
	if u.byUser == nil {
		u.byUser = map[string]int{}
	}
	u.byUser[user]++
	u.total++
	return nil
}

// give frees user's slot.
func (u *uploadSlots) give(user string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.byUser[user]--; u.byUser[user] <= 0 {
		delete(u.byUser, user)
	}
	u.total--
}

// inProgress is how many uploads hold a slot (tests).
func (u *uploadSlots) inProgress() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.total
}

func newEmbeddedStore(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*embeddedStore, error) {
	obs, err := js.ObjectStore(ctx, BucketObjects)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w: object store %s is missing: run `switchboard setup` as the operator", ErrNotSetUp, BucketObjects)
	}
	if err != nil {
		return nil, fmt.Errorf("media: object store %s: %w", BucketObjects, err)
	}
	claims, err := bindKV(ctx, js, BucketUploads)
	if err != nil {
		return nil, err
	}
	// A claim must outlive every upload that could race it: a URL that
	// lives longer than the bucket keeps claims could store twice.
	st, err := claims.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("media: bucket %s: %w", BucketUploads, err)
	}
	if need := cfg.UploadExpiry + claimMargin; st.TTL() < need {
		return nil, fmt.Errorf("%w: %s keeps an upload claim %s, less than the upload expiry %s and a minute: run `switchboard setup --media-upload-expiry %s`",
			ErrNotSetUp, BucketUploads, st.TTL(), cfg.UploadExpiry, cfg.UploadExpiry)
	}
	// The key is the function's own (a file, Config.SigningKey), never
	// stored in NATS, so no other component can forge a URL.
	key := cfg.SigningKey
	return &embeddedStore{
		obs:     obs,
		claims:  claims,
		baseURL: strings.TrimSuffix(cfg.BaseURL, "/"),
		key:     key,
		log:     log,
	}, nil
}

// mac is the signature over everything a URL grants: the method, the key,
// and for uploads the exact type and the size bound; and when it expires.
// Each field is on its own line and none can contain a newline (keys and
// media types are validated, numbers are decimal), so no two grants sign
// the same text.
func (s *embeddedStore) mac(method, key, mime string, maxSize, expMS int64) []byte {
	m := hmac.New(sha256.New, s.key)
	fmt.Fprintf(m, "switchboard-media-v1\n%s\n%s\n%s\n%d\n%d", method, key, mime, maxSize, expMS)
	return m.Sum(nil)
}

func (s *embeddedStore) blobURL(key string, q url.Values) string {
	return s.baseURL + PathBlob + key + "?" + q.Encode()
}

func (s *embeddedStore) PresignUpload(_ context.Context, key, mime string, size int64, expiry time.Duration) (*Ticket, error) {
	exp := time.Now().Add(expiry)
	sig := s.mac(http.MethodPut, key, mime, size, exp.UnixMilli())
	q := url.Values{
		"type": {mime},
		"max":  {strconv.FormatInt(size, 10)},
		"exp":  {strconv.FormatInt(exp.UnixMilli(), 10)},
		"sig":  {base64.RawURLEncoding.EncodeToString(sig)},
	}
	t := &Ticket{
		Key:           key,
		URL:           s.blobURL(key, q),
		Method:        http.MethodPut,
		Headers:       map[string]string{"Content-Type": mime},
		SignedHeaders: []string{"Content-Type", "Content-Length"},
		Mime:          mime,
		MaxSize:       size,
	}
	t.Expires, t.ExpiresMS = expiryFields(exp)
	return t, nil
}

func (s *embeddedStore) PresignDownload(_ context.Context, key string, expiry time.Duration) (*DownloadURL, error) {
	exp := time.Now().Add(expiry)
	sig := s.mac(http.MethodGet, key, "", 0, exp.UnixMilli())
	q := url.Values{
		"exp": {strconv.FormatInt(exp.UnixMilli(), 10)},
		"sig": {base64.RawURLEncoding.EncodeToString(sig)},
	}
	d := &DownloadURL{Key: key, URL: s.blobURL(key, q), Method: http.MethodGet}
	d.Expires, d.ExpiresMS = expiryFields(exp)
	return d, nil
}

func (s *embeddedStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	info, err := s.obs.GetInfo(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return ObjectInfo{}, ErrNotFound
	}
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("media: object info: %w", err)
	}
	return objectInfo(info), nil
}

// objectInfo describes an object. Its digest is the object store's own:
// the SHA-256 this process computed over the bytes as it stored them
// (servePut is the only writer), which every read checks them against.
func objectInfo(info *jetstream.ObjectInfo) ObjectInfo {
	oi := ObjectInfo{
		Key:         info.Name,
		Size:        int64(info.Size),
		ContentType: info.Headers.Get("Content-Type"),
		Modified:    info.ModTime,
	}
	if sum, err := jetstream.DecodeObjectDigest(info.Digest); err == nil && len(sum) == sha256.Size {
		oi.SHA256 = hex.EncodeToString(sum)
	}
	return oi
}

func (s *embeddedStore) Objects(ctx context.Context) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		infos, err := s.obs.List(ctx)
		if errors.Is(err, jetstream.ErrNoObjectsFound) {
			return
		}
		if err != nil {
			yield(ObjectInfo{}, fmt.Errorf("media: list objects: %w", err))
			return
		}
		for _, info := range infos {
			if !strings.HasPrefix(info.Name, keyPrefix) {
				continue
			}
			if !yield(objectInfo(info), nil) {
				return
			}
		}
	}
}

func (s *embeddedStore) Remove(ctx context.Context, key string) error {
	err := s.obs.Delete(ctx, key)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("media: delete object: %w", err)
	}
	return nil
}

// serveBlob answers the signed routes.
//
// Any origin may use them (CORS): the URL's signature is the whole
// credential, and the requests carry no cookie or token, so a page on
// another origin than the store (the chat page at 127.0.0.1 while
// --media-base-url says localhost, an app's own site) can upload and
// download what it was given a URL for, and nothing else. A preflight is
// answered without looking at the URL: it carries no body and grants
// nothing.
func (s *embeddedStore) serveBlob(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Access-Control-Allow-Origin", "*")
	if string(ctx.Method()) == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, PUT")
		h.Set("Access-Control-Allow-Headers", "Content-Type")
		h.Set("Access-Control-Max-Age", "600")
		ctx.SetStatusCode(http.StatusNoContent)
		return
	}
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Type, ETag")
	g, err := s.verify(ctx.Method(), ctx.URI())
	if err != nil {
		// A refused upload's body is still on the wire; closing the
		// connection is the only way not to parse it as the next request.
		ctx.SetConnectionClose()
		if errors.Is(err, ErrMethodNotAllowed) {
			ctx.Response.Header.Set("Allow", "GET, PUT, OPTIONS")
		}
		writeError(ctx, err)
		return
	}
	if g.method == http.MethodPut {
		s.servePut(ctx, g)
		return
	}
	s.serveGet(ctx, g)
}

// blobGrant is what a verified blob URL allows: a method on a key until
// expMS and, for an upload, one body of exactly type mime and at most
// limit bytes.
type blobGrant struct {
	method, key, mime string
	limit, expMS      int64
}

// verify checks a blob request from its method and URL alone, before any
// of its body is read: the key, the method, the signature over everything
// the URL grants, and last the expiry, so a request this store did not
// sign learns nothing else. A URL is accepted in exactly the spelling
// PresignUpload or PresignDownload gave it; whatever else is wrong with
// one (a parameter missing, malformed or spelled another way, a signature
// that does not match) is ErrBadSignature.
func (s *embeddedStore) verify(method []byte, uri *fasthttp.URI) (blobGrant, *Error) {
	g := blobGrant{key: strings.TrimPrefix(string(uri.Path()), PathBlob)}
	if _, err := ParseKey(g.key); err != nil {
		return g, ErrNotFound
	}
	args := uri.QueryArgs()
	switch string(method) {
	case http.MethodPut:
		g.method = http.MethodPut
		g.mime = string(args.Peek("type"))
		limit, ok := parseDecimal(args.Peek("max"))
		if !ok || limit < 1 || g.mime == "" {
			return g, errorf(ErrBadSignature, "the URL's type and max parameters are not as signed")
		}
		g.limit = limit
	case http.MethodGet:
		g.method = http.MethodGet
	default:
		return g, ErrMethodNotAllowed
	}
	expMS, ok := parseDecimal(args.Peek("exp"))
	if !ok {
		return g, errorf(ErrBadSignature, "the URL's exp parameter is not as signed")
	}
	g.expMS = expMS
	sig, ok := decodeSig(args.Peek("sig"))
	if !ok || !hmac.Equal(sig, s.mac(g.method, g.key, g.mime, g.limit, g.expMS)) {
		return g, ErrBadSignature
	}
	if time.Now().UnixMilli() > g.expMS {
		return g, ErrURLExpired
	}
	return g, nil
}

// decodeSig reads a signature in its one spelling: the raw base64url of
// an HMAC-SHA256, with the unused trailing bits zero (Strict) and no line
// breaks, which even the strict decoder skips. Any other spelling of the
// same bytes would be a second URL for one grant.
func decodeSig(p []byte) ([]byte, bool) {
	if len(p) != base64.RawURLEncoding.EncodedLen(sha256.Size) || bytes.ContainsAny(p, "\r\n") {
		return nil, false
	}
	sig := make([]byte, sha256.Size)
	n, err := base64.RawURLEncoding.Strict().Decode(sig, p)
	return sig, err == nil && n == sha256.Size
}

// parseDecimal reads a number as strconv.FormatInt writes it: no sign,
// no leading zeros, nothing around it.
func parseDecimal(p []byte) (int64, bool) {
	v, err := strconv.ParseInt(string(p), 10, 64)
	return v, err == nil && strconv.FormatInt(v, 10) == string(p)
}

func (s *embeddedStore) servePut(ctx *fasthttp.RequestCtx, g blobGrant) {
	// Every refusal before the body is read leaves the body on the wire;
	// closing the connection is the only way not to parse it as the next
	// request.
	refuse := func(e *Error) {
		ctx.SetConnectionClose()
		writeError(ctx, e)
	}
	key, mime, limit := g.key, g.mime, g.limit
	if ct := string(ctx.Request.Header.ContentType()); ct != mime {
		refuse(errorf(ErrBadType, "Content-Type must be %s, as signed", mime))
		return
	}
	// -1 is a chunked body and -2 one delimited by closing the connection.
	// Neither declares a size that can be held against the signed bound
	// before reading, so both are refused.
	length := int64(ctx.Request.Header.ContentLength())
	if length < 1 {
		refuse(errorf(ErrLengthRequired, "a Content-Length of 1 to %d bytes is required", limit))
		return
	}
	if length > limit {
		refuse(errorf(ErrTooLarge, "Content-Length %d is above this URL's limit of %d bytes", length, limit))
		return
	}

	owner, _ := ParseKey(key) // checked by verify
	if e := s.uploads.take(owner); e != nil {
		ctx.Response.Header.Set("Retry-After", "1")
		refuse(e)
		return
	}
	defer s.uploads.give(owner)

	// A context of its own for the store calls: the request context is
	// recycled by fasthttp once the handler returns, and nats.go (or a
	// derived context's watcher) may still look at it after that.
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Claim the key, then look for an object: an upload that finished
	// before our claim is seen by the lookup, one still running holds the
	// claim. Either way a second upload is refused, across instances.
	if _, err := s.claims.Create(sctx, key, []byte(strconv.FormatInt(time.Now().UnixMilli(), 10))); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			refuse(ErrExists)
			return
		}
		s.log.Error("claim upload", "key", key, "err", err)
		refuse(ErrInternal)
		return
	}
	release := func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.claims.Delete(c, key); err != nil {
			s.log.Warn("release upload claim", "key", key, "err", err)
		}
	}
	if _, err := s.obs.GetInfo(sctx, key); !errors.Is(err, jetstream.ErrObjectNotFound) {
		if err == nil {
			refuse(ErrExists)
			return
		}
		release()
		s.log.Error("object info", "key", key, "err", err)
		refuse(ErrInternal)
		return
	}

	var body io.Reader
	if stream := ctx.RequestBodyStream(); stream != nil {
		body = stream // the server streams bodies (StreamRequestBody)
	} else {
		body = bytes.NewReader(ctx.PostBody()) // already read, within the server's MaxRequestBodySize
	}
	b := &boundedBody{r: io.LimitReader(body, limit+1), max: limit, want: length}
	meta := jetstream.ObjectMeta{Name: key, Headers: nats.Header{"Content-Type": []string{mime}}}
	info, err := s.obs.Put(sctx, meta, b)
	if err != nil {
		release() // the URL may be retried until it expires
		var re *readError
		switch {
		case errors.Is(err, ErrTooLarge):
			refuse(errorf(ErrTooLarge, "the body is above this URL's limit of %d bytes", limit))
		case errors.As(err, &re):
			refuse(errorf(ErrBadRequest, "the body does not match its Content-Length of %d bytes", length))
		default:
			s.log.Error("store upload", "key", key, "err", err)
			refuse(ErrInternal)
		}
		return
	}
	writeJSON(ctx, http.StatusCreated, UploadResult{
		Key:    key,
		Size:   int64(info.Size),
		SHA256: objectInfo(info).SHA256,
		Mime:   mime,
	})
}

// UploadResult answers a successful embedded upload. SHA256 (hex) is
// what the chat message should carry for recipients to verify.
type UploadResult struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Mime   string `json:"mime"`
}

func (s *embeddedStore) serveGet(ctx *fasthttp.RequestCtx, g blobGrant) {
	key := g.key
	// The body is written after this handler returns, so the read must not
	// hang off the request's context; closing the body ends it.
	rctx, cancel := context.WithCancel(context.Background())
	res, err := s.obs.Get(rctx, key)
	if err != nil {
		cancel()
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			writeError(ctx, ErrNotFound)
			return
		}
		s.log.Error("read object", "key", key, "err", err)
		writeError(ctx, ErrInternal)
		return
	}
	info, err := res.Info()
	if err != nil {
		res.Close()
		cancel()
		s.log.Error("read object info", "key", key, "err", err)
		writeError(ctx, ErrInternal)
		return
	}
	ctx.SetStatusCode(http.StatusOK)
	ctx.SetContentType(info.Headers.Get("Content-Type"))
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	// Keys are never reused, so the bytes never change: the client may
	// keep them while the URL is valid.
	ctx.Response.Header.Set("Cache-Control", "private, max-age="+strconv.FormatInt(max(0, (g.expMS-time.Now().UnixMilli())/1000), 10))
	body := &progressBody{ReadCloser: &closeBoth{ReadCloser: res, cancel: cancel}, ctx: ctx, stall: downloadStall}
	body.moveDeadline()
	ctx.SetBodyStream(body, int(info.Size))
}

// downloadStall bounds how long one piece of a download may take to
// write.
const downloadStall = 30 * time.Second

// progressBody moves the response's write deadline on as each piece of a
// download is read to be written. The server's write timeout is set once
// for the whole response: a client reading steadily, but slower than the
// object's size over that timeout (a 16 MiB photo below 1.6 MB/s with the
// gateway's 10 s), was cut off mid-body. A deadline the handler sets
// replaces the server's, so the timeout bounds a stall, not the download.
type progressBody struct {
	io.ReadCloser
	ctx   *fasthttp.RequestCtx
	stall time.Duration
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.moveDeadline()
	}
	return n, err
}

// moveDeadline sets the write deadline a stall on. A request served in
// memory (fasthttp's RequestCtx.Init, in tests) has no connection behind
// its Conn, whose methods then panic: there is nothing to move.
func (b *progressBody) moveDeadline() {
	defer func() { _ = recover() }()
	_ = b.ctx.SetWriteDeadline(time.Now().Add(b.stall))
}

// closeBoth closes an object read and cancels its context.
type closeBoth struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *closeBoth) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// boundedBody enforces an upload's limits while it is read, so a body that
// lies about its length is cut off at max+1 bytes rather than stored.
type boundedBody struct {
	r         io.Reader
	n         int64
	max, want int64
}

// readError marks a failure of the client's body, as opposed to the store.
type readError struct{ err error }

func (e *readError) Error() string { return "media: upload body: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case b.n > b.max:
		return n, &readError{ErrTooLarge}
	case b.n > b.want:
		return n, &readError{errors.New("body longer than Content-Length")}
	case err == io.EOF && b.n != b.want:
		return n, &readError{io.ErrUnexpectedEOF}
	case err != nil && err != io.EOF:
		return n, &readError{err}
	}
	return n, err
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"internal error"}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	// Tickets and URLs are credentials: no cache may keep them.
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(b)
}

// writeError answers with the error's status and its JSON.
func writeError(ctx *fasthttp.RequestCtx, e *Error) {
	writeJSON(ctx, e.Status, e)
}
