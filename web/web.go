// Package web is the browser's way in: a chat page at / and the
// JavaScript SDK at /sdk/switchboard.js, plain HTML, CSS and ES modules
// embedded in the binary (no build step, nothing loaded from anywhere
// else), and the development token route (devtoken.go).
//
// cmd mounts these on the gateway's listener (gateway.Mount), so the page
// and its WebSocket share an origin and the gateway's default origin rule
// (same-origin only) lets the page in. The gateway does not import this
// package, and this package imports nothing of the project but the wire
// protocol (internal/walls checks both).
//
// Files: web.go (the static files), devtoken.go (POST /v1/dev/token),
// static/ (the page: index.html, app.css, app.js; the SDK: sdk/switchboard.js).
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/url"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// Paths served.
const (
	// PathPage is the chat page; the handler serves every static file
	// below it.
	PathPage = "/"
	// PathSDK is the JavaScript SDK, a stable path other pages may import
	// (served with Access-Control-Allow-Origin: *, as a public file).
	PathSDK = "/sdk/switchboard.js"
)

//go:embed static
var static embed.FS

// Files are the embedded files, rooted at the page (index.html,
// sdk/switchboard.js, ...).
var Files = func() fs.FS {
	f, err := fs.Sub(static, "static")
	if err != nil {
		panic(err)
	}
	return f
}()

// Options configure the static handler.
type Options struct {
	// DevTokens says the server hands out development tokens (DevTokens
	// is mounted): the page then offers to sign in with a user and device
	// name alone.
	DevTokens bool
	// MediaOrigins are origins other than the page's own that the page
	// uploads to and downloads from (an S3 endpoint, or a
	// --media-base-url on another host): the page's Content Security
	// Policy lets it connect there. Empty: the page's origin only.
	MediaOrigins []string
}

// The page learns from this tag whether it may offer development tokens.
const (
	devTokensOff = `<meta name="switchboard-dev-tokens" content="off">`
	devTokensOn  = `<meta name="switchboard-dev-tokens" content="on">`
)

type file struct {
	body  []byte
	ctype string
	etag  string
}

// Handler serves the embedded files: / is index.html, every other path
// its file, anything else 404. Only GET and HEAD. Every answer is
// revalidated (no-cache with an ETag), so a new binary's page is never
// mixed with an old one's script.
func Handler(o Options) fasthttp.RequestHandler {
	files := map[string]file{}
	err := fs.WalkDir(Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Files, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		files["/"+p] = file{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	if o.DevTokens {
		index := files["/index.html"]
		index.body = bytes.Replace(index.body, []byte(devTokensOff), []byte(devTokensOn), 1)
		sum := sha256.Sum256(index.body)
		index.etag = `"` + hex.EncodeToString(sum[:12]) + `"`
		files["/index.html"] = index
	}
	files[PathPage] = files["/index.html"]
	var extra []string
	for _, origin := range o.MediaOrigins {
		if u, err := url.Parse(origin); err == nil && u.Scheme != "" && u.Host != "" {
			extra = append(extra, u.Scheme+"://"+u.Host)
		}
	}
	media := strings.Join(extra, " ")
	return func(ctx *fasthttp.RequestCtx) {
		f, ok := files[string(ctx.Path())]
		if !ok {
			ctx.Error("not found\n", fasthttp.StatusNotFound)
			return
		}
		if !ctx.IsGet() && !ctx.IsHead() {
			ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
			ctx.Response.Header.Set("Allow", "GET, HEAD") // after Error, which resets the headers
			return
		}
		h := &ctx.Response.Header
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if strings.HasPrefix(f.ctype, "text/html") {
			h.Set("Content-Security-Policy", csp(string(ctx.Host()), media))
			h.Set("X-Frame-Options", "DENY")
		}
		if string(ctx.Path()) == PathSDK {
			h.Set("Access-Control-Allow-Origin", "*")
		}
		if string(ctx.Request.Header.Peek("If-None-Match")) == f.etag {
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			return
		}
		ctx.SetContentType(f.ctype)
		ctx.SetBody(f.body)
	}
}

// csp is the page's Content Security Policy: its own scripts and styles
// only, images from itself, blobs (downloaded media) and data URLs
// (thumbnails), and connections to itself, its WebSocket and the media
// origins. The WebSocket is named by host: 'self' does not cover ws: in
// every browser.
func csp(host, media string) string {
	connect := "'self'"
	if plainHost(host) {
		connect += " ws://" + host + " wss://" + host
	}
	img := "'self' blob: data:"
	if media != "" {
		connect += " " + media
		img += " " + media
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src " + img +
		"; connect-src " + connect + "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// plainHost reports whether a Host header is only a host and port, so it
// cannot add anything to a header it is copied into.
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-:[]", r)) {
			return false
		}
	}
	return true
}
