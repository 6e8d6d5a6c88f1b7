package media_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

func objectMeta(key, mime string) jetstream.ObjectMeta {
	return jetstream.ObjectMeta{Name: key, Headers: nats.Header{"Content-Type": []string{mime}}}
}

// The behaviour both stores share runs against each: the embedded store
// and a real MinIO. One MinIO serves every S3 case, each in its own bucket,
// because starting one takes seconds.
var shared = []struct {
	name string
	fn   func(*testing.T, backend)
}{
	{"UploadGrantDownload", testUploadGrantDownload},
	{"OneByteOverLimitRefused", testOverLimit},
	{"WrongContentTypeRefused", testWrongContentType},
	{"GrantOutsideOwnPrefixRefused", testGrantOutsidePrefix},
	{"NonParticipantForbidden", testNonParticipant},
	{"DisallowedSizeOrTypeRefused", testDisallowed},
	{"TamperedSignatureRefused", testTampered},
	{"ExpiredURLsRefused", testExpired},
	{"SweepRemovesOrphansKeepsGranted", testSweep},
	{"MicroServiceVisibleAndShared", testMicroService},
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	b := backend{name: "embedded"}
	for _, c := range shared {
		t.Run(c.name, func(t *testing.T) { c.fn(t, b) })
	}
}

func TestS3(t *testing.T) {
	t.Parallel()
	b := backend{name: "s3", minio: testkit.StartMinIO(t)}
	for _, c := range shared {
		t.Run(c.name, func(t *testing.T) { c.fn(t, b) })
	}
	t.Run("OtherKeyRefused", func(t *testing.T) { testS3OtherKey(t, b) })
}

// Alice uploads through her ticket, grants Bob, and Bob downloads the same
// bytes through his URL.
func testUploadGrantDownload(t *testing.T, b backend) {
	h := b.start(t)
	data := randomBytes(t, 300<<10) // above the server's 64 KiB buffered-body limit
	want := sha256.Sum256(data)

	tk := h.ticket("alice", "image/png", int64(len(data)))
	if !strings.HasPrefix(tk.Key, "u/alice/") || len(tk.Key) != len("u/alice/")+32 {
		t.Fatalf("key %q is not u/alice/<32 hex>", tk.Key)
	}
	if tk.MaxSize != int64(len(data)) || tk.Mime != "image/png" || tk.ExpiresMS <= time.Now().UnixMilli() {
		t.Fatalf("ticket %+v", tk)
	}
	if _, err := time.Parse(time.RFC3339, tk.Expires); err != nil {
		t.Fatalf("expires %q: %v", tk.Expires, err)
	}
	switch {
	case b.s3():
		if tk.Method != http.MethodPost || tk.Fields["key"] != tk.Key || tk.Fields["Content-Type"] != "image/png" || tk.Fields["policy"] == "" {
			t.Fatalf("S3 ticket %+v", tk)
		}
	default:
		if tk.Method != http.MethodPut || tk.Headers["Content-Type"] != "image/png" || len(tk.SignedHeaders) != 2 {
			t.Fatalf("embedded ticket %+v", tk)
		}
	}
	r := h.upload(tk, data)
	if r.status/100 != 2 {
		t.Fatalf("upload: %s", r)
	}
	if !b.s3() {
		var res media.UploadResult
		if err := json.Unmarshal(r.body, &res); err != nil || r.status != http.StatusCreated {
			t.Fatalf("upload answer %s: %v", r, err)
		}
		if res.SHA256 != fmt.Sprintf("%x", want) || res.Size != int64(len(data)) {
			t.Fatalf("upload result %+v", res)
		}
	}

	// Before the grant Bob is refused; Alice, the uploader, never is.
	if _, r := h.downloadURL("bob", tk.Key); r.status != http.StatusForbidden || r.code() != "forbidden" {
		t.Fatalf("bob before grant: %s", r)
	}
	if _, r := h.downloadURL("alice", tk.Key); r.status != http.StatusOK {
		t.Fatalf("alice: %s", r)
	}

	if r := h.grant("alice", tk.Key, "bob", "bob", "alice"); r.status != http.StatusOK {
		t.Fatalf("grant: %s", r)
	} else {
		var g contract.GrantResult
		if err := json.Unmarshal(r.body, &g); err != nil || len(g.Users) != 1 || g.Users[0] != "bob" || g.Owner != "alice" {
			t.Fatalf("grant result %s: %v", r, err)
		}
	}
	if r := h.grant("alice", tk.Key, "carol"); r.status != http.StatusOK {
		t.Fatalf("second grant: %s", r)
	}
	ctx := context.Background()
	for _, u := range []string{"alice", "bob", "carol"} {
		if ok, err := h.svc.Allowed(ctx, tk.Key, u); err != nil || !ok {
			t.Fatalf("Allowed(%s) = %v, %v after merged grants", u, ok, err)
		}
	}

	d, r := h.downloadURL("bob", tk.Key)
	if d == nil {
		t.Fatalf("bob after grant: %s", r)
	}
	if d.Method != http.MethodGet || d.ExpiresMS <= time.Now().UnixMilli() || d.Key != tk.Key {
		t.Fatalf("download URL %+v", d)
	}
	got := h.get(d.URL)
	if got.status != http.StatusOK {
		t.Fatalf("download: %s", got.status2())
	}
	if sha256.Sum256(got.body) != want || !bytes.Equal(got.body, data) {
		t.Fatalf("downloaded %d bytes with another sha256", len(got.body))
	}
	if ct := got.header.Get("Content-Type"); ct != "image/png" {
		t.Errorf("download Content-Type %q", ct)
	}
}

func (r reply) status2() string { return fmt.Sprintf("%d (%d bytes)", r.status, len(r.body)) }

// A body one byte over the ticket's size is refused by the store itself,
// and nothing is stored.
func testOverLimit(t *testing.T, b backend) {
	h := b.start(t)
	tk := h.ticket("alice", "image/jpeg", 1000)
	r := h.upload(tk, randomBytes(t, 1001))
	want, code := http.StatusRequestEntityTooLarge, "too_large"
	if b.s3() {
		want, code = http.StatusBadRequest, "EntityTooLarge"
	}
	if r.status != want || r.code() != code {
		t.Fatalf("1001 bytes on a 1000-byte ticket: %s", r)
	}
	if h.exists(tk.Key) {
		t.Fatal("the refused upload was stored")
	}
	// The same ticket still takes a body within its limit.
	if r := h.upload(tk, randomBytes(t, 1000)); r.status/100 != 2 {
		t.Fatalf("1000 bytes: %s", r)
	}
}

func testWrongContentType(t *testing.T, b backend) {
	h := b.start(t)
	tk := h.ticket("alice", "image/png", 100)
	r := h.upload(tk, randomBytes(t, 100), uploadOpts{contentType: "text/html"})
	want, code := http.StatusUnsupportedMediaType, "bad_type"
	if b.s3() {
		want, code = http.StatusForbidden, "AccessDenied" // the policy's Content-Type condition
	}
	if r.status != want || r.code() != code || (b.s3() && !strings.Contains(string(r.body), "Policy Condition failed")) {
		t.Fatalf("text/html on an image/png ticket: %s", r)
	}
	if h.exists(tk.Key) {
		t.Fatal("the refused upload was stored")
	}
}

func testGrantOutsidePrefix(t *testing.T, b backend) {
	h := b.start(t)
	key := h.mustUpload("alice", "application/pdf", randomBytes(t, 10))

	r := h.grant("mallory", key, "mallory")
	if r.status != http.StatusForbidden || r.code() != "forbidden" || !strings.Contains(string(r.body), "u/mallory/") {
		t.Fatalf("mallory granting alice's key: %s", r)
	}
	// Nor may alice grant anyone over HTTP: a grant follows a sent media
	// message, made by the gateway (an HTTP grant would let anyone read
	// her upload without a message, and keep it from the orphan sweep).
	if r := h.api(http.MethodPost, "/v1/media/grants", "alice", map[string]any{"key": key, "users": []string{"mallory"}}); r.status != http.StatusNotFound {
		t.Fatalf("an HTTP grant: %s, want 404", r)
	}
	if ok, _ := h.svc.Allowed(context.Background(), key, "mallory"); ok {
		t.Fatal("the refused grant took effect")
	}
	// The same refusal through the Go API, matchable with errors.Is.
	if err := h.svc.Grant(context.Background(), key, "mallory", []string{"mallory"}); !errors.Is(err, media.ErrForbidden) {
		t.Fatalf("Service.Grant: %v", err)
	}
	// A key of her own with nothing uploaded, and keys of the wrong shape.
	missing, _ := media.NewKey("mallory")
	if r := h.grant("mallory", missing, "bob"); r.status != http.StatusNotFound || r.code() != "not_found" {
		t.Fatalf("grant of an empty key: %s", r)
	}
	for _, bad := range []string{"u/alice/../x", "alice/" + strings.Repeat("a", 32), "u/alice/" + strings.Repeat("A", 32), ""} {
		if r := h.grant("alice", bad, "bob"); r.status != http.StatusBadRequest || r.code() != "bad_request" {
			t.Fatalf("grant of key %q: %s", bad, r)
		}
	}
	if r := h.grant("alice", key, "bob.smith"); r.status != http.StatusBadRequest {
		t.Fatalf("grant to an unsafe user id: %s", r)
	}
}

func testNonParticipant(t *testing.T, b backend) {
	h := b.start(t)
	key := h.mustUpload("alice", "audio/ogg", randomBytes(t, 50))
	if r := h.grant("alice", key, "bob"); r.status != http.StatusOK {
		t.Fatal(r)
	}
	if _, r := h.downloadURL("carol", key); r.status != http.StatusForbidden || r.code() != "forbidden" {
		t.Fatalf("carol: %s", r)
	}
	// Carol cannot tell a missing key from one she may not read; the
	// uploader is told it is missing.
	missing, _ := media.NewKey("alice")
	if _, r := h.downloadURL("carol", missing); r.status != http.StatusForbidden {
		t.Fatalf("carol on a missing key: %s", r)
	}
	if _, r := h.downloadURL("alice", missing); r.status != http.StatusNotFound || r.code() != "not_found" {
		t.Fatalf("alice on a missing key: %s", r)
	}
	if _, r := h.downloadURL("alice", "nonsense"); r.status != http.StatusBadRequest {
		t.Fatalf("malformed key: %s", r)
	}
	// No token at all is the gateway's 401, before the API is reached.
	req, _ := http.NewRequest(http.MethodGet, h.base+media.PathDownload+"?key="+key, nil)
	if r := h.do(req); r.status != http.StatusUnauthorized {
		t.Fatalf("no user: %s", r)
	}
}

func testDisallowed(t *testing.T, b backend) {
	h := b.start(t, func(c *media.Config) {
		c.Limits = media.DefaultLimits()
		c.Limits[media.ClassImage] = media.Limit{MaxSize: 1024, Types: []string{"image/png"}}
	})
	for _, c := range []struct {
		mime   string
		size   int64
		status int
		code   string
	}{
		{"image/png", 1025, http.StatusRequestEntityTooLarge, "too_large"},
		{"image/jpeg", 10, http.StatusUnsupportedMediaType, "bad_type"}, // allowed by default, not by this config
		{"application/x-msdownload", 10, http.StatusUnsupportedMediaType, "bad_type"},
		{"not a type", 10, http.StatusUnsupportedMediaType, "bad_type"},
		{"video/mp4", 64*media.MiB + 1, http.StatusRequestEntityTooLarge, "too_large"},
		{"image/png", 0, http.StatusBadRequest, "bad_request"},
		{"image/png", -5, http.StatusBadRequest, "bad_request"},
	} {
		r := h.api(http.MethodPost, media.PathUploads, "alice", map[string]any{"mime": c.mime, "size": c.size})
		if r.status != c.status || r.code() != c.code {
			t.Errorf("%s of %d bytes: got %s, want %d %s", c.mime, c.size, r, c.status, c.code)
		}
	}
	// Parameters are dropped and case folded, and the ticket says so.
	if tk := h.ticket("alice", "IMAGE/PNG; q=1", 1024); tk.Mime != "image/png" {
		t.Fatalf("normalised type %q", tk.Mime)
	}
	r := h.api(http.MethodPost, media.PathUploads, "alice", []byte("{"))
	if r.status != http.StatusBadRequest {
		t.Fatalf("bad JSON: %s", r)
	}
	if r := h.api(http.MethodGet, media.PathUploads, "alice", nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET uploads: %s", r)
	}
}

// Changing any signed part of a URL (the signature itself, or what it
// covers) is refused.
func testTampered(t *testing.T, b backend) {
	h := b.start(t)
	data := randomBytes(t, 64)
	key := h.mustUpload("alice", "image/webp", data)
	d, r := h.downloadURL("alice", key)
	if d == nil {
		t.Fatal(r)
	}
	sigParam, uploadSig, code := "sig", "sig", "bad_signature"
	if b.s3() {
		sigParam, uploadSig, code = "X-Amz-Signature", "x-amz-signature", "SignatureDoesNotMatch"
	}

	u, _ := url.Parse(d.URL)
	q := u.Query()
	q.Set(sigParam, flip(q.Get(sigParam)))
	u.RawQuery = q.Encode()
	if r := h.get(u.String()); r.status != http.StatusForbidden || r.code() != code {
		t.Fatalf("download with a tampered signature: %s", r)
	}
	// A valid signature for one key does not open another.
	other, _ := media.NewKey("alice")
	h.putDirect(other, "image/webp", data)
	if r := h.get(strings.Replace(d.URL, key, other, 1)); r.status != http.StatusForbidden {
		t.Fatalf("download URL moved to another key: %s", r)
	}

	tk := h.ticket("alice", "image/webp", 64)
	if b.s3() {
		r = h.upload(tk, data, uploadOpts{fields: map[string]string{uploadSig: flip(tk.Fields[uploadSig])}})
	} else {
		u, _ := url.Parse(tk.URL)
		q := u.Query()
		q.Set("sig", flip(q.Get("sig")))
		u.RawQuery = q.Encode()
		r = h.upload(tk, data, uploadOpts{url: u.String()})
	}
	if r.status != http.StatusForbidden || r.code() != code {
		t.Fatalf("upload with a tampered signature: %s", r)
	}
	if !b.s3() {
		// Raising the signed size bound breaks the signature too.
		u, _ := url.Parse(tk.URL)
		q := u.Query()
		q.Set("max", "1000000")
		u.RawQuery = q.Encode()
		if r := h.upload(tk, data, uploadOpts{url: u.String()}); r.status != http.StatusForbidden || r.code() != "bad_signature" {
			t.Fatalf("upload with a raised max: %s", r)
		}
	}
	if h.exists(tk.Key) {
		t.Fatal("a tampered upload was stored")
	}
}

// flip changes the first character of a signature, keeping it well formed.
func flip(s string) string {
	if s == "" {
		return "x"
	}
	c := byte('a')
	if s[0] == 'a' {
		c = 'b'
	}
	return string(c) + s[1:]
}

// URLs stop working at their expiry. S3 counts in whole seconds, so the
// wait runs a second past the later expiry.
func testExpired(t *testing.T, b backend) {
	h := b.start(t, func(c *media.Config) {
		c.UploadExpiry = time.Second
		c.DownloadExpiry = time.Second
	})
	data := randomBytes(t, 32)
	key, _ := media.NewKey("alice")
	h.putDirect(key, "image/gif", data)
	d, r := h.downloadURL("alice", key)
	if d == nil {
		t.Fatal(r)
	}
	tk := h.ticket("alice", "image/gif", 32)

	until := max(d.ExpiresMS, tk.ExpiresMS) + 1000
	testkit.WaitFor(t, 10*time.Second, func() error {
		if left := until - time.Now().UnixMilli(); left >= 0 {
			return fmt.Errorf("URLs still valid for %d ms", left)
		}
		return nil
	})

	r = h.get(d.URL)
	if r.status != http.StatusForbidden {
		t.Fatalf("expired download: %s", r)
	}
	if !b.s3() && r.code() != "url_expired" {
		t.Fatalf("expired download code: %s", r)
	}
	if b.s3() && !strings.Contains(string(r.body), "Request has expired") {
		t.Fatalf("expired download says: %s", r)
	}
	r = h.upload(tk, data)
	if r.status != http.StatusForbidden {
		t.Fatalf("expired upload: %s", r)
	}
	if !b.s3() && r.code() != "url_expired" {
		t.Fatalf("expired upload code: %s", r)
	}
	if b.s3() && !strings.Contains(string(r.body), "Policy expired") {
		t.Fatalf("expired upload says: %s", r)
	}
	if h.exists(tk.Key) {
		t.Fatal("an expired upload was stored")
	}
}

func testSweep(t *testing.T, b backend) {
	h := b.start(t)
	granted := h.mustUpload("alice", "video/mp4", randomBytes(t, 100))
	if r := h.grant("alice", granted, "bob"); r.status != http.StatusOK {
		t.Fatal(r)
	}
	// A grant with nobody in it still references the object (a note to
	// self).
	self := h.mustUpload("alice", "text/plain", []byte("note"))
	if err := h.svc.Grant(context.Background(), self, "alice", nil); err != nil {
		t.Fatal(err)
	}
	orphan := h.mustUpload("alice", "video/mp4", randomBytes(t, 100))

	ctx := context.Background()
	// Young objects stay whatever their grants.
	res, err := h.svc.SweepOrphans(ctx)
	if err != nil || res.Scanned != 3 || res.Removed != 0 {
		t.Fatalf("sweep now: %+v, %v", res, err)
	}
	// A day and a bit later, only the orphan goes.
	res, err = media.SweepOrphansAt(ctx, h.svc, time.Now().Add(h.cfg.OrphanAge+time.Hour))
	if err != nil || res.Scanned != 3 || res.Orphans != 1 || res.Removed != 1 {
		t.Fatalf("sweep a day later: %+v, %v", res, err)
	}
	if h.exists(orphan) || !h.exists(granted) || !h.exists(self) {
		t.Fatalf("after the sweep: orphan %v, granted %v, self %v", h.exists(orphan), h.exists(granted), h.exists(self))
	}
	d, r := h.downloadURL("bob", granted)
	if d == nil {
		t.Fatal(r)
	}
	if got := h.get(d.URL); got.status != http.StatusOK || len(got.body) != 100 {
		t.Fatalf("granted object after the sweep: %s", got.status2())
	}
	if _, r := h.downloadURL("alice", orphan); r.status != http.StatusNotFound {
		t.Fatalf("swept object: %s", r)
	}
}

// The function shows up to micro's discovery (what `nats micro ls` reads),
// answers with micro errors carrying codes, and two instances share one
// queue group.
func testMicroService(t *testing.T, b backend) {
	h := b.start(t)
	var info micro.Info
	if err := json.Unmarshal(natsRequest(t, h.n.Conn, "$SRV.INFO.media", nil).Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != media.ServiceName || info.Version != media.Version || info.Description == "" {
		t.Fatalf("info %+v", info)
	}
	subjects := map[string]string{}
	for _, e := range info.Endpoints {
		subjects[e.Subject] = e.QueueGroup
	}
	for _, s := range []string{contract.MediaUploadSubject, contract.MediaDownloadSubject, contract.MediaGrantSubject} {
		if qg, ok := subjects[s]; !ok || qg != micro.DefaultQueueGroup {
			t.Errorf("endpoint %s: present %v, queue group %q", s, ok, qg)
		}
	}
	// What an operator sees.
	cli, flags := testkit.NATSCLI(t), h.n.CLIFlags(t)
	ls := testkit.Run(t, cli, append(flags, "micro", "ls")...)
	if !strings.Contains(ls, "media ") || !strings.Contains(ls, "presigned upload and download URLs") {
		t.Errorf("nats micro ls lacks the media service:\n%s", ls)
	}
	mi := testkit.Run(t, cli, append(flags, "micro", "info", media.ServiceName)...)
	for _, want := range []string{"Version: " + media.Version, "Subject: " + contract.MediaUploadSubject, "Subject: " + contract.MediaDownloadSubject,
		"Subject: " + contract.MediaGrantSubject, "Queue Group: q", "backend: " + h.b.name} {
		if !strings.Contains(mi, want) {
			t.Errorf("nats micro info media lacks %q:\n%s", want, mi)
		}
	}
	var ping micro.Ping
	if err := json.Unmarshal(natsRequest(t, h.n.Conn, "$SRV.PING.media", nil).Data, &ping); err != nil || ping.Name != "media" {
		t.Fatalf("ping %+v: %v", ping, err)
	}

	// Raw micro errors carry the HTTP-like code and the JSON error.
	m := natsRequest(t, h.n.Conn, contract.MediaUploadSubject, []byte(`{"user":"alice","mime":"image/png","size":0}`))
	if m.Header.Get(micro.ErrorCodeHeader) != "400" || !strings.Contains(string(m.Data), `"code":"bad_request"`) {
		t.Fatalf("micro error: %v %s", m.Header, m.Data)
	}
	if _, err := h.client.Upload(context.Background(), "alice", "image/bmp", 10); !errors.Is(err, media.ErrBadType) {
		t.Fatalf("client upload of a disallowed type: %v", err)
	}
	if _, err := h.client.Download(context.Background(), "alice", "u/bob/"+strings.Repeat("0", 32)); !errors.Is(err, media.ErrForbidden) {
		t.Fatalf("client download of another's key: %v", err)
	}

	// A second instance joins the queue group; requests spread over both.
	cfg := h.cfg
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	secondNC := h.n.Connect(t, natsauth.Media)
	second, err := media.New(ctx, secondNC, h.mediaJS(), cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Stop()
	for i := 0; i < 40; i++ {
		if _, err := h.client.Upload(ctx, "alice", "image/png", 10); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	sub, err := h.n.Conn.SubscribeSync(nats.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.n.Conn.PublishRequest("$SRV.STATS.media", sub.Subject, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("stats from both instances: %v", err)
		}
		var st micro.Stats
		if err := json.Unmarshal(msg.Data, &st); err != nil {
			t.Fatal(err)
		}
		for _, e := range st.Endpoints {
			if e.Subject == contract.MediaUploadSubject {
				if e.NumRequests == 0 {
					t.Errorf("instance %s took no upload requests", st.ID)
				}
				total += e.NumRequests
			}
		}
	}
	if total < 40 {
		t.Fatalf("instances answered %d of 40+ upload requests", total)
	}
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}

	// No instance at all: the API says unavailable, not a timeout. The
	// functions' connections are flushed, so the server has dropped their
	// subscriptions before the request on the client's connection.
	if err := h.svc.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, nc := range []*nats.Conn{h.svcNC, secondNC} {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.client.Upload(context.Background(), "alice", "image/png", 10); !errors.Is(err, media.ErrUnavailable) {
		t.Fatalf("with no function running: %v", err)
	}
	r := h.api(http.MethodPost, media.PathUploads, "alice", map[string]any{"mime": "image/png", "size": 10})
	if r.status != http.StatusServiceUnavailable || r.code() != "unavailable" {
		t.Fatalf("API with no function running: %s", r)
	}
}

// The POST policy pins the key: a form naming another key, even one under
// the same user, is refused.
func testS3OtherKey(t *testing.T, b backend) {
	h := b.start(t)
	tk := h.ticket("alice", "image/png", 10)
	other, _ := media.NewKey("alice")
	r := h.upload(tk, randomBytes(t, 10), uploadOpts{fields: map[string]string{"key": other}})
	if r.status != http.StatusForbidden || r.code() != "AccessDenied" || !strings.Contains(string(r.body), "Policy Condition failed") {
		t.Fatalf("upload to another key: %s", r)
	}
	if h.exists(other) || h.exists(tk.Key) {
		t.Fatal("a refused upload was stored")
	}
}
