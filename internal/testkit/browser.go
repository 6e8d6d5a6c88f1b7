package testkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// ChromiumTask is the Taskfile task that installs Chromium for the
// browser tests.
const ChromiumTask = "tools:chromium"

// Chromium returns the path of a headless Chromium: $SWITCHBOARD_CHROMIUM,
// else chromium-headless-shell or chromium on the PATH. When there is none
// it fails the test with the command that installs it.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SWITCHBOARD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium-headless-shell", "chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium for the browser tests (chromium-headless-shell or chromium on the PATH, or $SWITCHBOARD_CHROMIUM); "+
		"run `go tool -modfile=tools/go.mod task %s` (the README's test command does this; it installs Debian's "+
		"chromium-headless-shell as root)", ChromiumTask)
	return ""
}

// Browser is one headless Chromium for a test, stopped at its end. Each
// of its pages is an isolated browser context, with its own storage, as if
// each were another person's browser.
type Browser struct {
	ctx context.Context
}

// StartBrowser starts Chromium with its profile and temporary files in
// the test's temp dirs, and none of its own network traffic.
func StartBrowser(t testing.TB) *Browser {
	t.Helper()
	tmp := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		// Chromium writes to $TMPDIR besides its profile.
		chromedp.Env("TMPDIR=" + tmp),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Pages' timers run at full speed whatever else is on screen: the
		// SDK's reconnect waits are timers.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return &Browser{ctx: ctx}
}

// Page is one tab in a browser context of its own.
type Page struct {
	t    testing.TB
	name string
	ctx  context.Context

	mu   sync.Mutex // guards logs
	logs []string
}

// NewPage opens a tab in a new browser context. What the page logs to
// its console, the exceptions it throws and the browser's messages about
// it are printed if the test fails. Scripts, if any, run in every
// document the tab loads, before the page's own.
func (b *Browser) NewPage(t testing.TB, name string, scripts ...string) *Page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("page %s: %v", name, err)
	}
	p := &Page{t: t, name: name, ctx: ctx}
	var wg sync.WaitGroup
	wg.Go(func() {
		for ev, err := range chromedp.Events(ctx, runtime.ConsoleAPICalled) {
			if err != nil {
				return
			}
			var args []string
			for _, a := range ev.Args {
				if a.Value != nil {
					args = append(args, string(a.Value))
				} else {
					args = append(args, a.Description)
				}
			}
			p.log("console.%s: %s", ev.Type, strings.Join(args, " "))
		}
	})
	wg.Go(func() {
		for ev, err := range chromedp.Events(ctx, runtime.ExceptionThrown) {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			text := d.Text
			if d.Exception != nil {
				text += " " + d.Exception.Description
			}
			p.log("exception: %s (%s:%d)", text, d.URL, d.LineNumber)
		}
	})
	wg.Go(func() {
		for ev, err := range chromedp.Events(ctx, log.EntryAdded) {
			if err != nil {
				return
			}
			p.log("browser %s: %s %s", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("page %s logged:\n  %s", name, strings.Join(p.logs, "\n  "))
			p.mu.Unlock()
		}
	})
	for _, s := range scripts {
		if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: s}); err != nil {
			t.Fatalf("page %s: %v", name, err)
		}
	}
	return p
}

func (p *Page) log(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logs = append(p.logs, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

// Logs returns what the page logged so far.
func (p *Page) Logs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.logs...)
}

// Context is the page's chromedp context, for actions of one's own.
func (p *Page) Context() context.Context { return p.ctx }

// Do runs actions on the page, failing the test on an error.
func (p *Page) Do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("page %s: %v", p.name, err)
	}
}

// Navigate loads url and waits for it.
func (p *Page) Navigate(url string) {
	p.t.Helper()
	p.Do(chromedp.Navigate(url))
}

// Eval evaluates a JavaScript expression on the page (awaiting a promise)
// and decodes its value.
func Eval[T any](p *Page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, func(e *runtime.EvaluateParams) {
		e.AwaitPromise = new(true)
	}))
	if err != nil {
		p.t.Fatalf("page %s: evaluating %s: %v", p.name, expr, err)
	}
	return v
}

// WaitFor polls a JavaScript expression on the page until it is truthy,
// failing the test after timeout with what, and what the page shows.
func (p *Page) WaitFor(timeout time.Duration, what, expr string) {
	p.t.Helper()
	// The poll runs in the page; the context is the bound for a page that
	// does not answer at all.
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err == nil {
		return
	}
	if errors.Is(err, chromedp.ErrPollingTimeout) {
		err = fmt.Errorf("not within %s", timeout)
	}
	shown, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ''`))
	p.t.Fatalf("page %s: waiting for %s: %v\n(%s)\npage text:\n%s", p.name, what, err, expr, shown)
}
