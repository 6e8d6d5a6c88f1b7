package media_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

// userHeader stands in for the gateway's token check: the test server
// takes the caller from it, as the gateway takes it from the token.
const userHeader = "X-Test-User"

// backend is one of the two stores; minio is nil for the embedded one.
type backend struct {
	name  string
	minio *testkit.MinIO
}

func (b backend) s3() bool { return b.minio != nil }

// harness is one media service on its own NATS, with an HTTP server that
// mounts the API as the gateway will.
type harness struct {
	t      testing.TB
	b      backend
	n      *testkit.NATS
	svc    *media.Service
	svcNC  *nats.Conn // the function's connection, in its own role
	cfg    media.Config
	base   string
	hc     *http.Client
	mc     *minio.Client // direct S3 access, for set-up and checks
	client *media.Client // the micro service's NATS client
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// mediaJS is a JetStream context in the media function's role.
func (h *harness) mediaJS() jetstream.JetStream {
	js, err := jetstream.New(h.n.Connect(h.t, natsauth.Media))
	if err != nil {
		h.t.Fatal(err)
	}
	return js
}

func (b backend) start(t testing.TB, mod ...func(*media.Config)) *harness {
	t.Helper()
	h := &harness{t: t, b: b, n: testkit.StartNATS(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.base = "http://" + ln.Addr().String()

	cfg := media.DefaultConfig()
	cfg.BaseURL = h.base
	cfg.SigningKey = testkit.MediaSigningKey
	cfg.SweepInterval = -1 // tests sweep explicitly
	if b.s3() {
		cfg.S3 = media.S3Config{
			Endpoint:  b.minio.Endpoint,
			AccessKey: b.minio.AccessKey,
			SecretKey: b.minio.SecretKey,
			Bucket:    "media-" + randomHex(t, 6), // buckets isolate tests sharing one MinIO
		}
		h.mc, err = minio.New(b.minio.Endpoint, &minio.Options{
			Creds: credentials.NewStaticV4(b.minio.AccessKey, b.minio.SecretKey, ""), Region: "us-east-1",
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range mod {
		m(&cfg)
	}
	h.cfg = cfg
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The operator makes the buckets, the function binds to them in its
	// own role, and its client asks as a gateway does.
	if err := media.Setup(ctx, h.n.JS, cfg); err != nil {
		t.Fatal(err)
	}
	h.svcNC = h.n.Connect(t, natsauth.Media)
	h.svc, err = media.New(ctx, h.svcNC, h.mediaJS(), cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.svc.Stop() })
	calls, err := contract.NewCaller(h.n.Connect(t, natsauth.Gateway), contract.CallPrefix(string(natsauth.Gateway)))
	if err != nil {
		t.Fatal(err)
	}
	h.client = media.NewClient(calls, 5*time.Second)

	api := h.svc.API()
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			path := string(ctx.Path())
			switch {
			case strings.HasPrefix(path, media.PathBlob):
				api.Blob(ctx)
			case strings.HasPrefix(path, media.PathPrefix):
				user := string(ctx.Request.Header.Peek(userHeader))
				if user == "" {
					ctx.SetStatusCode(http.StatusUnauthorized)
					ctx.SetBodyString(`{"code":"unauthorized","message":"no token"}`)
					return
				}
				api.Authenticated(ctx, user)
			default:
				ctx.SetStatusCode(http.StatusNotFound)
			}
		},
		// As the gateway's: a small buffered body limit, so uploads above
		// it prove the blob route streams, and an upload's time and size
		// only for a URL that verifies.
		HeaderReceived: func(hdr *fasthttp.RequestHeader) fasthttp.RequestConfig {
			return api.RequestConfig(hdr, fasthttp.RequestConfig{ReadTimeout: time.Minute, MaxRequestBodySize: 1 << 40})
		},
		MaxRequestBodySize: 64 << 10,
		StreamRequestBody:  true,
		CloseOnShutdown:    true,
	}
	go func() { _ = srv.Serve(ln) }()
	h.hc = &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	t.Cleanup(func() {
		h.hc.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	return h
}

// reply is an HTTP answer.
type reply struct {
	status int
	body   []byte
	header http.Header
}

// code is the refusal's code: from a JSON error body (this package) or an
// XML one (S3).
func (r reply) code() string {
	var e struct {
		Code string `json:"code"`
	}
	if json.Unmarshal(r.body, &e) == nil && e.Code != "" {
		return e.Code
	}
	if m := regexp.MustCompile(`<Code>([^<]*)</Code>`).FindSubmatch(r.body); m != nil {
		return string(m[1])
	}
	return ""
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

func (h *harness) do(req *http.Request) reply {
	h.t.Helper()
	resp, err := h.hc.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, body: body, header: resp.Header}
}

// api calls an authenticated route as user.
func (h *harness) api(method, path, user string, body any) reply {
	h.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.base+path, r)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set(userHeader, user)
	req.Header.Set("Content-Type", "application/json")
	return h.do(req)
}

// ticket asks for an upload ticket over HTTP and fails unless it is issued.
func (h *harness) ticket(user, mime string, size int64) *media.Ticket {
	h.t.Helper()
	r := h.api(http.MethodPost, media.PathUploads, user, map[string]any{"mime": mime, "size": size})
	if r.status != http.StatusCreated {
		h.t.Fatalf("upload ticket for %s: %s", user, r)
	}
	var t media.Ticket
	if err := json.Unmarshal(r.body, &t); err != nil {
		h.t.Fatal(err)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		h.t.Errorf("a ticket is a credential, but Cache-Control is %q", r.header.Get("Cache-Control"))
	}
	return &t
}

// uploadOpts change an upload away from what the ticket says.
type uploadOpts struct {
	contentType string            // sent in place of the ticket's type
	fields      map[string]string // POST fields replaced
	url         string            // sent to in place of the ticket's URL
}

// upload sends data exactly as the ticket says: a multipart form with the
// fields first and the file last for POST, the raw bytes with the listed
// headers for PUT.
func (h *harness) upload(t *media.Ticket, data []byte, opts ...uploadOpts) reply {
	h.t.Helper()
	var o uploadOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	target := t.URL
	if o.url != "" {
		target = o.url
	}
	switch t.Method {
	case http.MethodPost:
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		for k, v := range t.Fields {
			if nv, ok := o.fields[k]; ok {
				v = nv
			}
			if k == "Content-Type" && o.contentType != "" {
				v = o.contentType
			}
			if err := w.WriteField(k, v); err != nil {
				h.t.Fatal(err)
			}
		}
		fw, err := w.CreateFormFile("file", "upload")
		if err != nil {
			h.t.Fatal(err)
		}
		fw.Write(data)
		w.Close()
		req, err := http.NewRequest(http.MethodPost, target, &buf)
		if err != nil {
			h.t.Fatal(err)
		}
		req.Header.Set("Content-Type", w.FormDataContentType())
		return h.do(req)
	case http.MethodPut:
		req, err := http.NewRequest(http.MethodPut, target, bytes.NewReader(data))
		if err != nil {
			h.t.Fatal(err)
		}
		for k, v := range t.Headers {
			req.Header.Set(k, v)
		}
		if o.contentType != "" {
			req.Header.Set("Content-Type", o.contentType)
		}
		return h.do(req)
	}
	h.t.Fatalf("ticket method %q", t.Method)
	return reply{}
}

// mustUpload asks for a ticket for data and uploads it.
func (h *harness) mustUpload(user, mime string, data []byte) string {
	h.t.Helper()
	t := h.ticket(user, mime, int64(len(data)))
	if r := h.upload(t, data); r.status/100 != 2 {
		h.t.Fatalf("upload: %s", r)
	}
	return t.Key
}

// downloadURL asks for a download URL as user.
func (h *harness) downloadURL(user, key string) (*media.DownloadURL, reply) {
	h.t.Helper()
	r := h.api(http.MethodGet, media.PathDownload+"?key="+key, user, nil)
	if r.status != http.StatusOK {
		return nil, r
	}
	var d media.DownloadURL
	if err := json.Unmarshal(r.body, &d); err != nil {
		h.t.Fatal(err)
	}
	return &d, r
}

func (h *harness) get(url string) reply {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.do(req)
}

// grant asks the media function, as a gateway does for a media message
// owner sent to users, and answers as HTTP would have.
func (h *harness) grant(owner, key string, users ...string) reply {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := h.client.Grant(ctx, key, owner, users)
	var e *media.Error
	switch {
	case errors.As(err, &e):
		b, _ := json.Marshal(e)
		return reply{status: e.Status, body: b}
	case err != nil:
		h.t.Fatalf("grant: %v", err)
	}
	b, _ := json.Marshal(g)
	return reply{status: http.StatusOK, body: b}
}

// putDirect stores an object behind the service's back, for tests that
// need one in place without going through a ticket.
func (h *harness) putDirect(key, mime string, data []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h.b.s3() {
		if _, err := h.mc.PutObject(ctx, h.cfg.S3.Bucket, key, bytes.NewReader(data), int64(len(data)),
			minio.PutObjectOptions{ContentType: mime}); err != nil {
			h.t.Fatal(err)
		}
		return
	}
	obs, err := h.n.JS.ObjectStore(ctx, media.BucketObjects)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := obs.Put(ctx, objectMeta(key, mime), bytes.NewReader(data)); err != nil {
		h.t.Fatal(err)
	}
}

// exists reports whether the store holds key.
func (h *harness) exists(key string) bool {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h.b.s3() {
		_, err := h.mc.StatObject(ctx, h.cfg.S3.Bucket, key, minio.StatObjectOptions{})
		if err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
			h.t.Fatal(err)
		}
		return err == nil
	}
	obs, err := h.n.JS.ObjectStore(ctx, media.BucketObjects)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = obs.GetInfo(ctx, key)
	return err == nil
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// natsRequest sends a raw request, for micro's own subjects.
func natsRequest(t testing.TB, nc *nats.Conn, subject string, data []byte) *nats.Msg {
	t.Helper()
	m, err := nc.Request(subject, data, 5*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return m
}

// serveWith runs api.Blob on a GET of rawURL in memory and returns the
// status and body, for instances that have no HTTP server of their own.
func serveWith(t testing.TB, api *media.API, rawURL string) (int, string) {
	t.Helper()
	var req fasthttp.Request
	req.SetRequestURI(rawURL)
	req.Header.SetMethod(http.MethodGet)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	api.Blob(&ctx)
	body := string(ctx.Response.Body())
	return ctx.Response.StatusCode(), body
}
