package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/protocol"
)

// do runs one request through h, as the gateway's server would hand it
// over, and returns the response.
func do(h fasthttp.RequestHandler, method, uri string, header map[string]string, body string) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	ctx.Request.Header.SetHost("chat.example:8080")
	for k, v := range header {
		ctx.Request.Header.Set(k, v)
	}
	ctx.Request.SetBodyString(body)
	h(&ctx)
	var r fasthttp.Response
	ctx.Response.CopyTo(&r)
	return &r
}

func TestServesThePageAndTheSDK(t *testing.T) {
	h := Handler(Options{})
	for path, ctype := range map[string]string{
		"/":           "text/html; charset=utf-8",
		"/index.html": "text/html; charset=utf-8",
		"/app.js":     "text/javascript; charset=utf-8",
		"/app.css":    "text/css; charset=utf-8",
		"/icon.svg":   "image/svg+xml",
		PathSDK:       "text/javascript; charset=utf-8",
	} {
		r := do(h, "GET", path, nil, "")
		if r.StatusCode() != 200 || string(r.Header.ContentType()) != ctype {
			t.Errorf("GET %s: %d %s, want 200 %s", path, r.StatusCode(), r.Header.ContentType(), ctype)
		}
		if got := string(r.Header.Peek("Cache-Control")); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache (revalidated, so a new binary's files are never mixed with old ones)", path, got)
		}
		if string(r.Header.Peek("X-Content-Type-Options")) != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
		// Revalidation answers 304 with no body.
		etag := string(r.Header.Peek("ETag"))
		if r2 := do(h, "GET", path, map[string]string{"If-None-Match": etag}, ""); etag == "" || r2.StatusCode() != 304 || len(r2.Body()) != 0 {
			t.Errorf("GET %s with If-None-Match %s: %d, want 304", path, etag, r2.StatusCode())
		}
	}
	if r := do(h, "GET", PathSDK, nil, ""); string(r.Header.Peek("Access-Control-Allow-Origin")) != "*" {
		t.Error("the SDK is not importable from other origins")
	}
	if r := do(h, "GET", "/app.js", nil, ""); len(r.Header.Peek("Access-Control-Allow-Origin")) != 0 {
		t.Error("the page's own script is served to other origins")
	}
	for _, path := range []string{"/nope", "/static/app.js", "/sdk/", "/../go.mod", "/v1/anything"} {
		if r := do(h, "GET", path, nil, ""); r.StatusCode() != 404 {
			t.Errorf("GET %s: %d, want 404", path, r.StatusCode())
		}
	}
	if r := do(h, "POST", "/", nil, "x"); r.StatusCode() != 405 || string(r.Header.Peek("Allow")) != "GET, HEAD" {
		t.Errorf("POST /: %d Allow %q, want 405 GET, HEAD", r.StatusCode(), r.Header.Peek("Allow"))
	}
}

// Everything the page loads comes from the binary: the policy allows
// nothing else but the page's WebSocket and its media origins, and the
// page names no other host.
func TestThePageLoadsNothingFromElsewhere(t *testing.T) {
	r := do(Handler(Options{MediaOrigins: []string{"https://s3.example:9000/bucket", "not a url"}}), "GET", "/", nil, "")
	want := "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data: https://s3.example:9000; " +
		"connect-src 'self' ws://chat.example:8080 wss://chat.example:8080 https://s3.example:9000; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	if got := string(r.Header.Peek("Content-Security-Policy")); got != want {
		t.Errorf("policy:\n%s\nwant\n%s", got, want)
	}
	if string(r.Header.Peek("X-Frame-Options")) != "DENY" {
		t.Error("the page may be framed")
	}
	// A Host header that is more than a host cannot write into the policy.
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/")
	ctx.Request.Header.SetHost("evil; script-src *")
	Handler(Options{})(&ctx)
	if p := string(ctx.Response.Header.Peek("Content-Security-Policy")); strings.Contains(p, "evil") {
		t.Errorf("policy copies the Host header: %s", p)
	}
	// A URL with a host name: scheme://name.tld, or a scheme-relative //name.tld.
	url := regexp.MustCompile(`(?i)((https?|wss?):|["'(=])//[a-z0-9-]+(\.[a-z0-9-]+)+`)
	err := fs.WalkDir(Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == "icon.svg" {
			return err
		}
		b, _ := fs.ReadFile(Files, p)
		for _, m := range url.FindAllString(string(b), -1) {
			t.Errorf("%s names another host: %s", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestThePageKnowsWhetherDevTokensAreOn(t *testing.T) {
	off := string(do(Handler(Options{}), "GET", "/", nil, "").Body())
	on := do(Handler(Options{DevTokens: true}), "GET", "/", nil, "")
	if !strings.Contains(off, devTokensOff) || strings.Contains(off, devTokensOn) {
		t.Error("the page offers development tokens when they are off")
	}
	if !strings.Contains(string(on.Body()), devTokensOn) {
		t.Error("the page does not offer development tokens when they are on")
	}
	if r := do(Handler(Options{}), "GET", "/", nil, ""); string(r.Header.Peek("ETag")) == string(on.Header.Peek("ETag")) {
		t.Error("the two pages share an ETag")
	}
}

// The SDK's tables are the protocol's: every error code with its retry
// flag, every close code with its name and reconnect flag, and nothing
// else.
func TestSDKTablesMatchTheProtocol(t *testing.T) {
	b, err := fs.ReadFile(Files, strings.TrimPrefix(PathSDK, "/"))
	if err != nil {
		t.Fatal(err)
	}
	sdk := string(b)
	block := func(name string) string {
		m := regexp.MustCompile(`(?s)export const ` + name + ` = Object\.freeze\(\{(.*?)\}\);`).FindStringSubmatch(sdk)
		if m == nil {
			t.Fatalf("the SDK has no %s table", name)
		}
		return m[1]
	}
	errs := map[string]bool{}
	for _, m := range regexp.MustCompile(`(\w+): (true|false),`).FindAllStringSubmatch(block("ERRORS"), -1) {
		errs[m[1]] = m[2] == "true"
	}
	for _, e := range protocol.Errors {
		retry, ok := errs[string(e.Code)]
		if !ok || retry != e.Retry {
			t.Errorf("SDK ERRORS: %s is %v (listed: %v), protocol says retry %v", e.Code, retry, ok, e.Retry)
		}
		delete(errs, string(e.Code))
	}
	for code := range errs {
		t.Errorf("SDK ERRORS lists %s, which the protocol does not have", code)
	}
	closes := map[string]string{}
	for _, m := range regexp.MustCompile(`(\d+): \['(\w+)', (true|false)\],`).FindAllStringSubmatch(block("CLOSES"), -1) {
		closes[m[1]] = m[2] + " " + m[3]
	}
	for _, c := range protocol.Closes {
		want := fmt.Sprintf("%s %v", c.Name, c.Reconnect)
		if got := closes[fmt.Sprint(c.Code)]; got != want {
			t.Errorf("SDK CLOSES: %d is %q, protocol says %q", c.Code, got, want)
		}
		delete(closes, fmt.Sprint(c.Code))
	}
	for code := range closes {
		t.Errorf("SDK CLOSES lists %s, which the protocol does not have", code)
	}
	if !strings.Contains(sdk, `export const SUBPROTOCOL = '`+protocol.Subprotocol+`';`) {
		t.Errorf("the SDK does not speak %s", protocol.Subprotocol)
	}
	if protocol.OutboxSeqFloor != 1<<52 || !strings.Contains(sdk, `const OUTBOX_SEQ_FLOOR = 2 ** 52;`) {
		t.Errorf("the SDK's outbox seqs do not start where the protocol's do (%d)", protocol.OutboxSeqFloor)
	}
}

func TestDevTokens(t *testing.T) {
	var minted []string
	h := DevTokens(func(user, device string) (string, time.Time, error) {
		minted = append(minted, user+"/"+device)
		if user == "broken" {
			return "", time.Time{}, errors.New("no key")
		}
		return "tok-" + user + "-" + device, time.UnixMilli(1795594500000), nil
	})
	js := map[string]string{"Content-Type": "application/json"}
	r := do(h, "POST", PathDevToken, js, `{"user":"alice","device":"laptop"}`)
	var got struct {
		Token, User, Device string
		ExpiresMS           int64 `json:"expires_ms"`
	}
	if err := json.Unmarshal(r.Body(), &got); err != nil || r.StatusCode() != 200 {
		t.Fatalf("POST: %d %s", r.StatusCode(), r.Body())
	}
	if got.Token != "tok-alice-laptop" || got.User != "alice" || got.Device != "laptop" || got.ExpiresMS != 1795594500000 {
		t.Errorf("answer %+v", got)
	}
	if string(r.Header.Peek("Cache-Control")) != "no-store" {
		t.Error("a token answer may be cached")
	}
	// The page's own origin, spelled with or without the default port.
	for _, origin := range []string{"http://chat.example:8080", "HTTP://Chat.Example:8080"} {
		if r := do(h, "POST", PathDevToken, map[string]string{"Content-Type": "application/json", "Origin": origin}, `{"user":"a","device":"b"}`); r.StatusCode() != 200 {
			t.Errorf("Origin %s: %d %s", origin, r.StatusCode(), r.Body())
		}
	}
	minted = nil
	for _, c := range []struct {
		method, path, origin, ctype, body string
		status                            int
		code                              string
	}{
		{"POST", PathDevToken, "http://evil.example", "application/json", `{"user":"a","device":"b"}`, 403, "bad_origin"},
		{"POST", PathDevToken, "http://chat.example:8081", "application/json", `{"user":"a","device":"b"}`, 403, "bad_origin"},
		{"POST", PathDevToken, "https://chat.example:8080", "application/json", `{"user":"a","device":"b"}`, 200, ""},
		{"POST", PathDevToken, "null", "application/json", `{"user":"a","device":"b"}`, 403, "bad_origin"},
		{"POST", PathDevToken, "", "text/plain", `{"user":"a","device":"b"}`, 415, "bad_type"},
		{"POST", PathDevToken, "", "application/x-www-form-urlencoded", `user=a&device=b`, 415, "bad_type"},
		{"POST", PathDevToken, "", "application/json", `{"user":"a.b","device":"b"}`, 400, "bad_request"},
		{"POST", PathDevToken, "", "application/json", `{"user":"a"}`, 400, "bad_request"},
		{"POST", PathDevToken, "", "application/json", `{"user":"a","device":"b","admin":true}`, 400, "bad_request"},
		{"POST", PathDevToken, "", "application/json", `not json`, 400, "bad_request"},
		{"POST", PathDevToken, "", "application/json", `{"user":"a","device":"b"}` + strings.Repeat(" ", 5000), 413, "too_large"},
		{"POST", PathDevToken, "", "application/json", `{"user":"broken","device":"b"}`, 500, "internal"},
		{"GET", PathDevToken, "", "", "", 405, "method_not_allowed"},
		{"POST", PrefixDev + "other", "", "application/json", `{"user":"a","device":"b"}`, 404, "not_found"},
	} {
		hdr := map[string]string{}
		if c.origin != "" {
			hdr["Origin"] = c.origin
		}
		if c.ctype != "" {
			hdr["Content-Type"] = c.ctype
		}
		r := do(h, c.method, c.path, hdr, c.body)
		var e struct{ Code string }
		_ = json.Unmarshal(r.Body(), &e)
		if r.StatusCode() != c.status || (c.code != "" && e.Code != c.code) {
			t.Errorf("%s %s Origin %q %s %s: %d %s, want %d %s", c.method, c.path, c.origin, c.ctype, c.body, r.StatusCode(), r.Body(), c.status, c.code)
		}
		if strings.Contains(string(r.Body()), "tok-") && c.status != 200 {
			t.Errorf("a refusal carries a token: %s", r.Body())
		}
	}
	if want := []string{"a/b", "broken/b"}; fmt.Sprint(minted) != fmt.Sprint(want) {
		t.Errorf("minted for %v, want only %v: nothing refused reaches the key", minted, want)
	}
}
