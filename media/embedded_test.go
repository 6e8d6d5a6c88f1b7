package media_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

// A signed PUT URL stores one object: a second upload to it is refused and
// the first bytes stay.
func TestEmbeddedSecondUploadRefused(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t)
	first := randomBytes(t, 100)
	tk := h.ticket("alice", "application/zip", 100)
	if r := h.upload(tk, first); r.status != http.StatusCreated {
		t.Fatal(r)
	}
	if r := h.upload(tk, randomBytes(t, 100)); r.status != http.StatusConflict || r.code() != "exists" {
		t.Fatalf("second upload: %s", r)
	}
	d, r := h.downloadURL("alice", tk.Key)
	if d == nil {
		t.Fatal(r)
	}
	if got := h.get(d.URL); string(got.body) != string(first) {
		t.Fatal("the second upload replaced the first")
	}
}

// A body must declare its length, within the signed bound, and then have
// exactly that many bytes. A refused upload releases the key, so the same
// URL can be retried. Sizes are above the server's 64 KiB buffered-body
// limit, so the handler (not fasthttp's own parser) sees the stream.
func TestEmbeddedBodyLength(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t)
	const size = 100_000
	tk := h.ticket("alice", "application/octet-stream", size)

	// Chunked: no Content-Length. Written at once with its headers: the
	// server answers before reading a body, and closes, so a client still
	// writing one (net/http's does, after the headers) may find the
	// connection broken rather than read the answer.
	chunked := "32\r\n" + strings.Repeat("x", 50) + "\r\n0\r\n\r\n"
	if r := rawPut(t, tk, "Transfer-Encoding: chunked", chunked); !strings.HasPrefix(r, "HTTP/1.1 411") || !strings.Contains(r, "length_required") {
		t.Fatalf("chunked body: %s", r)
	}
	// Declared above the bound: refused before the body is streamed. The
	// server has read its 64 KiB buffered part by then; sending exactly
	// that much leaves nothing unread for the close to reset.
	if r := rawPut(t, tk, fmt.Sprintf("Content-Length: %d", size+1), strings.Repeat("x", 64<<10)); !strings.HasPrefix(r, "HTTP/1.1 413") || !strings.Contains(r, "too_large") {
		t.Fatalf("Content-Length %d on a %d-byte URL: %s", size+1, size, r)
	}
	// Declared in full, sent in part, then the client stops sending.
	if r := rawPut(t, tk, fmt.Sprintf("Content-Length: %d", size), strings.Repeat("x", size-30_000)); !strings.HasPrefix(r, "HTTP/1.1 400") || !strings.Contains(r, "bad_request") {
		t.Fatalf("short body: %s", r)
	}
	if h.exists(tk.Key) {
		t.Fatal("a short body was stored")
	}
	if r := h.upload(tk, randomBytes(t, size)); r.status != http.StatusCreated {
		t.Fatalf("retry after a refused upload: %s", r)
	}
}

// dialTicket opens a TCP connection to the server of ticket tk's URL.
func dialTicket(t *testing.T, tk *media.Ticket) (net.Conn, *url.URL) {
	t.Helper()
	u, err := url.Parse(tk.URL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	return c, u
}

// rawPut sends a PUT with the framing header length (Content-Length or
// Transfer-Encoding) and body in one write, half-closes the connection and
// returns the raw answer.
func rawPut(t *testing.T, tk *media.Ticket, length, body string) string {
	t.Helper()
	c, u := dialTicket(t, tk)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write([]byte(fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n%s\r\n\r\n%s",
		u.RequestURI(), u.Host, tk.Headers["Content-Type"], length, body)))
	_ = c.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("HTTP/1.1 %d %s", resp.StatusCode, b)
}

// Instances given one key (a file each has a copy of) serve each other's
// URLs, and an instance with another key serves none of them. The key is
// nowhere in NATS, where other components could read it.
func TestEmbeddedInstancesShareSigningKey(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t)
	key := h.mustUpload("alice", "image/png", []byte("png bytes"))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other, err := media.NewAPI(ctx, h.n.Conn, h.n.JS, h.cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	d, r := h.downloadURL("alice", key)
	if d == nil {
		t.Fatal(r)
	}
	// Serve the URL with the other instance's handler, on the raw fasthttp
	// context, as its own server would.
	status, body := serveWith(t, other, d.URL)
	if status != http.StatusOK || body != "png bytes" {
		t.Fatalf("other instance: %d %s", status, body)
	}
	// An instance with its own configured key rejects the URL.
	cfg := h.cfg
	cfg.SigningKey = []byte(strings.Repeat("k", 32))
	foreign, err := media.NewAPI(ctx, h.n.Conn, h.n.JS, cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if status, body := serveWith(t, foreign, d.URL); status != http.StatusForbidden || !strings.Contains(body, "bad_signature") {
		t.Fatalf("instance with another key: %d %s", status, body)
	}
	for _, bucket := range []string{media.BucketACL, media.BucketUploads} {
		kv, err := h.n.JS.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range keys.Keys() {
			if !strings.HasPrefix(k, "u/") && !strings.HasPrefix(k, "u.") {
				t.Errorf("%s holds %q, which is not an object's record", bucket, k)
			}
		}
	}
}

func TestSigningKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "media.key")
	k1, err := media.LoadOrCreateSigningKey(path)
	if err != nil || len(k1) < 32 {
		t.Fatalf("made %d bytes: %v", len(k1), err)
	}
	k2, err := media.LoadOrCreateSigningKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("read back %x, made %x: %v", k2, k1, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v: %v", fi.Mode(), err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := media.LoadOrCreateSigningKey(path); err == nil {
		t.Fatal("a file without a key was accepted")
	}
	cfg := media.DefaultConfig()
	cfg.BaseURL = "http://localhost"
	if err := cfg.Validate(); err == nil {
		t.Fatal("an embedded store without a signing key was accepted")
	}
}

// Instances starting together on the same data directory all get the
// one key one of them made, and no leftover file is left beside it.
func TestSigningKeyMadeByOneOfManyStarting(t *testing.T) {
	for round := range 20 {
		dir := t.TempDir()
		path := filepath.Join(dir, "media.key")
		const n = 16
		keys, errs := make([][]byte, n), make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				keys[i], errs[i] = media.LoadOrCreateSigningKey(path)
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil || !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("round %d: instance %d got %x (%v), instance 0 %x", round, i, keys[i], errs[i], keys[0])
			}
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("round %d: %d files beside the key", round, len(ents)-1)
		}
	}
}

// With an S3 backend the blob routes do not exist.
func TestBlobWithoutEmbeddedStore(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	cfg := media.DefaultConfig()
	cfg.S3 = media.S3Config{Endpoint: "127.0.0.1:1", AccessKey: "a", SecretKey: "b"}
	api, err := media.NewAPI(context.Background(), n.Conn, n.JS, cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	status, body := serveWith(t, api, "http://x"+media.PathBlob+"u/alice/"+strings.Repeat("0", 32)+"?exp=1&sig=x")
	var e media.Error
	if status != http.StatusNotFound || json.Unmarshal([]byte(body), &e) != nil || e.Code != "not_found" {
		t.Fatalf("blob on S3: %d %s", status, body)
	}
}

// Racing uploads to one URL (a client retrying while its first attempt is
// still running) store exactly one object: the winner's.
func TestEmbeddedConcurrentUploadsStoreOne(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t)
	// Bodies within the server's buffered limit are read whole before the
	// handler runs, so a refused racer's connection closes cleanly.
	const size = 60 << 10
	tk := h.ticket("alice", "image/png", size)
	const n = 6
	bodies := make([][]byte, n)
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := range n {
		bodies[i] = randomBytes(t, size)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPut, tk.URL, bytes.NewReader(bodies[i]))
			req.Header.Set("Content-Type", "image/png")
			resp, err := h.hc.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			replies[i] = reply{status: resp.StatusCode, body: b}
		}()
	}
	wg.Wait()
	winner := -1
	for i, r := range replies {
		switch {
		case r.status == http.StatusCreated && winner < 0:
			winner = i
		case r.status == http.StatusConflict && r.code() == "exists":
		default:
			t.Fatalf("upload %d: %s", i, r)
		}
	}
	if winner < 0 {
		t.Fatal("no upload won")
	}
	d, r := h.downloadURL("alice", tk.Key)
	if d == nil {
		t.Fatal(r)
	}
	if got := h.get(d.URL); !bytes.Equal(got.body, bodies[winner]) {
		t.Fatal("the stored bytes are not the winner's")
	}
}

// Grants to one key from many workers at once (a group message fanned out)
// all land: the record is merged with compare-and-set.
func TestGrantsMergeConcurrently(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t)
	key := h.mustUpload("alice", "image/png", []byte("group photo"))
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h.client.Grant(context.Background(), key, "alice", []string{fmt.Sprintf("member%02d", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := range 20 {
		if ok, err := h.svc.Allowed(context.Background(), key, fmt.Sprintf("member%02d", i)); err != nil || !ok {
			t.Fatalf("member%02d: %v, %v", i, ok, err)
		}
	}
	g, err := h.client.Grant(context.Background(), key, "alice", nil)
	if err != nil || len(g.Users) != 20 {
		t.Fatalf("record after concurrent grants: %+v, %v", g, err)
	}
}

// A signature has one spelling: the strict raw base64url of its HMAC.
// Another spelling of the same bytes (other trailing bits, a line break,
// padding) and anything that is no signature at all are all refused
// with 403 bad_signature, on downloads and uploads alike.
func TestEmbeddedSignatureHasOneSpelling(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t)
	data := randomBytes(t, 64)
	key := h.mustUpload("alice", "image/png", data)
	d, r := h.downloadURL("alice", key)
	if d == nil {
		t.Fatal(r)
	}
	tk := h.ticket("alice", "image/png", 64)

	// withSig is rawURL with its sig set to sig, or removed when sig is nil.
	withSig := func(rawURL string, sig *string) string {
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		if sig == nil {
			q.Del("sig")
		} else {
			q.Set("sig", *sig)
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	spellings := func(rawURL string) map[string]*string {
		u, _ := url.Parse(rawURL)
		sig := u.Query().Get("sig")
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		// 32 bytes take 43 characters: the last one carries 4 bits of the
		// HMAC and 2 that must be zero.
		last := strings.IndexByte(alphabet, sig[len(sig)-1])
		s := func(v string) *string { return &v }
		out := map[string]*string{
			"line break at the end":    s(sig + "\n"),
			"line break in the middle": s(sig[:20] + "\r\n" + sig[20:]),
			"padded":                   s(sig + "="),
			"standard alphabet":        s(strings.NewReplacer("-", "+", "_", "/").Replace(sig) + "+/"),
			"garbage":                  s("!!not base64!!"),
			"too short":                s(sig[:40]),
			"empty":                    s(""),
			"missing":                  nil,
		}
		for k := 1; k <= 3; k++ {
			out[fmt.Sprintf("trailing bits %02b", k)] = s(sig[:len(sig)-1] + string(alphabet[last^k]))
		}
		return out
	}
	for name, sig := range spellings(d.URL) {
		if r := h.get(withSig(d.URL, sig)); r.status != http.StatusForbidden || r.code() != "bad_signature" {
			t.Errorf("download, sig %s: %s", name, r)
		}
	}
	for name, sig := range spellings(tk.URL) {
		if r := h.upload(tk, data, uploadOpts{url: withSig(tk.URL, sig)}); r.status != http.StatusForbidden || r.code() != "bad_signature" {
			t.Errorf("upload, sig %s: %s", name, r)
		}
	}
	// The one true spelling still works, for both.
	if r := h.get(d.URL); r.status != http.StatusOK {
		t.Fatalf("download with the issued URL: %s", r)
	}
	if r := h.upload(tk, data); r.status != http.StatusCreated {
		t.Fatalf("upload with the issued URL: %s", r)
	}
}

// The signed URLs serve pages of any origin (CORS): a preflight is
// answered without a signature, and uploads and downloads carry
// Access-Control-Allow-Origin, so a page served from another address than
// the store can use the URLs it was given. A refused request gets the
// header too, so the page can read why.
func TestEmbeddedBlobsAllowOtherOrigins(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t)
	data := randomBytes(t, 64)
	tk := h.ticket("alice", "image/png", int64(len(data)))

	pre, err := http.NewRequest(http.MethodOptions, tk.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	pre.Header.Set("Origin", "http://127.0.0.1:8080")
	pre.Header.Set("Access-Control-Request-Method", http.MethodPut)
	pre.Header.Set("Access-Control-Request-Headers", "content-type")
	r := h.do(pre)
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), http.MethodPut) ||
		!strings.EqualFold(r.header.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Fatalf("preflight: %s %v", r, r.header)
	}

	if r := h.upload(tk, data); r.status != http.StatusCreated || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("upload: %s, Access-Control-Allow-Origin %q", r, r.header.Get("Access-Control-Allow-Origin"))
	}
	d, r := h.downloadURL("alice", tk.Key)
	if d == nil {
		t.Fatal(r)
	}
	if r := h.get(d.URL); !bytes.Equal(r.body, data) || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("download: %d bytes, Access-Control-Allow-Origin %q", len(r.body), r.header.Get("Access-Control-Allow-Origin"))
	}
	if r := h.get(d.URL + "x"); r.status != http.StatusForbidden || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("tampered download: %s, Access-Control-Allow-Origin %q", r, r.header.Get("Access-Control-Allow-Origin"))
	}
}

// stallUpload starts uploading size bytes through ticket t and stops
// after the headers and 9,000 bytes (past what fasthttp reads before the
// handler runs), holding the connection open.
func stallUpload(t *testing.T, tk *media.Ticket, size int64) net.Conn {
	t.Helper()
	c, u := dialTicket(t, tk)
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", u.RequestURI(), u.Host, tk.Mime, size, bytes.Repeat([]byte("x"), 9000))
	return c
}

// Uploads that start and stall hold a slot each: past 8 of one
// uploader's, the next is refused at once with 429 too_many (and
// Retry-After) before its body is read, while another uploader goes on;
// a slot given back lets the refused one through.
func TestEmbeddedStalledUploadsAreBounded(t *testing.T) {
	t.Parallel()
	h := backend{}.start(t)
	const size = 64 << 20
	var stalled []net.Conn
	for range 8 {
		stalled = append(stalled, stallUpload(t, h.ticket("mallory", "video/mp4", size), size))
	}
	testkit.WaitFor(t, 10*time.Second, func() error {
		if n := media.UploadsInProgress(h.svc); n != 8 {
			return testkit.Errorf("%d uploads in progress, want the 8 stalled", n)
		}
		return nil
	})
	ninth := h.ticket("mallory", "application/pdf", 10)
	data := randomBytes(t, 10)
	r := h.upload(ninth, data)
	if r.status != http.StatusTooManyRequests || r.code() != "too_many" || r.header.Get("Retry-After") == "" {
		t.Fatalf("a 9th upload of mallory's: %s", r)
	}
	h.mustUpload("alice", "application/pdf", randomBytes(t, 10))

	stalled[0].Close()
	testkit.WaitFor(t, 10*time.Second, func() error {
		if n := media.UploadsInProgress(h.svc); n != 7 {
			return testkit.Errorf("%d uploads in progress after one stalled connection closed, want 7", n)
		}
		return nil
	})
	if r := h.upload(ninth, data); r.status != http.StatusCreated {
		t.Fatalf("the 9th upload once a slot was free: %s", r)
	}
}

// An object lives while a message that references it is kept: its grant
// record expires ReferenceAge after the last grant (each message naming
// the object starts it again), and the sweep then removes the object as
// an orphan.
func TestReferencesExpireAfterTheLastGrant(t *testing.T) {
	t.Parallel()
	const age = 2 * time.Second
	h := backend{}.start(t, func(c *media.Config) { c.ReferenceAge = age })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := h.mustUpload("alice", "image/png", []byte("photo"))
	if r := h.grant("alice", key, "bob"); r.status != http.StatusOK {
		t.Fatal(r)
	}
	kv, err := h.n.JS.KeyValue(ctx, media.BucketACL)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := kv.Status(ctx); err != nil || st.TTL() != age {
		t.Fatalf("%s keeps records %v (%v), want %v", media.BucketACL, st.TTL(), err, age)
	}
	first, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	// The same grant again (the object forwarded) writes the record again.
	if r := h.grant("alice", key, "bob"); r.status != http.StatusOK {
		t.Fatal(r)
	}
	if again, err := kv.Get(ctx, key); err != nil || again.Revision() <= first.Revision() {
		t.Fatalf("a second grant left the record at revision %d (was %d): %v", again.Revision(), first.Revision(), err)
	}
	// The server expires it once its age has passed.
	testkit.WaitFor(t, 10*age, func() error {
		if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("the grant record outlived its %v: %v", age, err)
		}
		return nil
	})
	if ok, err := h.svc.Allowed(ctx, key, "bob"); err != nil || ok {
		t.Fatalf("bob may still download after the reference expired: %v, %v", ok, err)
	}
	res, err := media.SweepOrphansAt(ctx, h.svc, time.Now().Add(h.cfg.OrphanAge+time.Hour))
	if err != nil || res.Removed != 1 || h.exists(key) {
		t.Fatalf("sweep after the reference expired: %+v, %v; object still there: %v", res, err, h.exists(key))
	}
}
