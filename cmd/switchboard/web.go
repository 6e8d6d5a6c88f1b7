package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/web"
)

// devTokenTTL is how long a development token lives (less if
// --jwt-max-ttl says so); the page asks for a new one as it runs out.
const devTokenTTL = 24 * time.Hour

// mountWeb serves the chat page and the JavaScript SDK on the gateway's
// listener, and with --dev-tokens the development token route. Mount it
// after every other route: the page's prefix, /, matches every path.
func mountWeb(gw *gateway.Server, c *appConfig, keys *gateway.Keys, allInOne bool, log *slog.Logger) error {
	dev := c.devTokens(allInOne)
	if dev {
		rules := c.Gateway.TokenRules()
		ttl := devTokenTTL
		if rules.MaxTTL > 0 {
			ttl = min(ttl, rules.MaxTTL)
		}
		mint := func(user, device string) (string, time.Time, error) {
			now := time.Now()
			tok, err := keys.Mint(user, device, ttl, now, rules)
			return tok, now.Add(ttl), err
		}
		if _, _, err := mint("check", "check"); errors.Is(err, gateway.ErrNoKey) {
			return fmt.Errorf("--dev-tokens: the token key cannot sign (an Ed25519 public key alone); give --jwt-private-key too, or turn dev tokens off")
		} else if err != nil {
			return fmt.Errorf("--dev-tokens: %w", err)
		}
		gw.Mount(gateway.Route{Prefix: web.PrefixDev, Handle: web.DevTokens(mint)})
		log.Warn("development tokens on: anyone who reaches the listener can sign in as any user; for development only",
			"route", "POST "+web.PathDevToken, "off", "--dev-tokens=false")
	}
	gw.Mount(gateway.Route{Prefix: web.PathPage, Handle: web.Handler(web.Options{DevTokens: dev, MediaOrigins: mediaOrigins(c)})})
	return nil
}

// mediaOrigins are where the page uploads and downloads media when that
// is not the page's own origin: S3, or this binary under another name.
func mediaOrigins(c *appConfig) []string {
	m := c.Functions.Media
	if m.S3.Endpoint == "" {
		return []string{m.BaseURL}
	}
	host := m.S3.PublicEndpoint
	if host == "" {
		host = m.S3.Endpoint
	}
	if m.S3.TLS {
		return []string{"https://" + host}
	}
	return []string{"http://" + host}
}
