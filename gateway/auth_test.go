package gateway_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

func ed25519PEM(t *testing.T) (pubPEM, privPEM []byte) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pb}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: sb})
}

func TestEd25519TokensVerifyAndRefuseAlgorithmConfusion(t *testing.T) {
	pubPEM, privPEM := ed25519PEM(t)
	minter, err := gateway.NewEd25519Keys(nil, privPEM)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := gateway.NewEd25519Keys(pubPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := minter.Mint("alice", "phone", time.Minute, now, gateway.TokenRules{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := verifier.Verify(tok, now, gateway.TokenRules{})
	if err != nil || id.User != "alice" || id.Device != "phone" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	if _, err := verifier.Verify(tok, now.Add(2*time.Minute), gateway.TokenRules{}); !errors.Is(err, gateway.ErrTokenExpired) {
		t.Fatalf("expired token: %v, want ErrTokenExpired", err)
	}
	// An HS256 token must not pass an Ed25519 verifier, whatever its secret.
	if _, err := verifier.Verify(tk.Token(t, "alice", "phone", time.Minute), now, gateway.TokenRules{}); !errors.Is(err, gateway.ErrBadToken) {
		t.Fatalf("HS256 token on an Ed25519 gateway: %v, want ErrBadToken", err)
	}
	// A verifier holds no private key and cannot mint.
	if _, err := verifier.Mint("alice", "phone", time.Minute, now, gateway.TokenRules{}); !errors.Is(err, gateway.ErrNoKey) {
		t.Fatalf("Mint without a private key: %v, want ErrNoKey", err)
	}
	// And an Ed25519 token on an HS256 gateway is refused.
	hs, err := gateway.NewHS256Keys(tk.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hs.Verify(tok, now, gateway.TokenRules{}); !errors.Is(err, gateway.ErrBadToken) {
		t.Fatalf("EdDSA token on an HS256 gateway: %v, want ErrBadToken", err)
	}
}

func TestKeyConfigErrors(t *testing.T) {
	if _, err := gateway.NewHS256Keys([]byte("short")); !errors.Is(err, gateway.ErrConfig) {
		t.Fatalf("short secret: %v", err)
	}
	if _, err := gateway.NewEd25519Keys([]byte("not pem"), nil); !errors.Is(err, gateway.ErrConfig) {
		t.Fatalf("bad PEM: %v", err)
	}
	if _, err := gateway.NewEd25519Keys(nil, nil); !errors.Is(err, gateway.ErrConfig) {
		t.Fatalf("no key: %v", err)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	for field, mod := range map[string]func(*gateway.Config){
		"Listen":         func(c *gateway.Config) { c.Listen = "" },
		"MaxFrameBytes":  func(c *gateway.Config) { c.MaxFrameBytes = 2 << 20 },
		"PongTimeout":    func(c *gateway.Config) { c.PongTimeout = c.PingInterval },
		"AllowedOrigins": func(c *gateway.Config) { c.AllowedOrigins = []string{"ftp://x"} },
		"OutboundQueue":  func(c *gateway.Config) { c.OutboundQueue = 100 },
		"JWTMaxTTL":      func(c *gateway.Config) { c.JWTMaxTTL = 0 },
		"SettingsRate":   func(c *gateway.Config) { c.SettingsBurst = 0 },
		"MetricsListen":  func(c *gateway.Config) { c.MetricsListen = "9090" },
	} {
		c := gateway.DefaultConfig()
		mod(&c)
		err := c.Validate()
		if !errors.Is(err, gateway.ErrConfig) || !containsWord(err.Error(), field) {
			t.Errorf("%s: Validate = %v, want an ErrConfig naming the field", field, err)
		}
	}
	c := gateway.DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig is invalid: %v", err)
	}
}

func containsWord(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i:i+len(w)] == w {
			return true
		}
	}
	return false
}

// Tokens that claim to be issued in the future, or to live longer than
// the gateway allows (30 days by default), are refused at the handshake:
// a leaked long-lived token would otherwise work for as long as it says.
func TestHandshakeRefusesTokensIssuedAheadOrLivingTooLong(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	v1 := []string{protocol.Subprotocol}
	now := time.Now()
	day := 24 * time.Hour
	tok := func(iat time.Time, exp time.Time) string {
		c := jwt.MapClaims{"sub": "mallory", "dev": "d", "exp": exp.Unix()}
		if !iat.IsZero() {
			c["iat"] = iat.Unix()
		}
		return mintRaw(t, jwt.SigningMethodHS256, tk.Secret, c)
	}
	for _, tc := range []struct {
		name string
		tok  string
	}{
		{"issued two minutes ahead", tok(now.Add(2*time.Minute), now.Add(time.Hour))},
		{"issued a day ahead", tok(now.Add(day), now.Add(2*day))},
		{"lives 31 days", tok(now, now.Add(31*day))},
		{"issued long ago, lives a year", tok(now.Add(-300*day), now.Add(65*day))},
		{"no iat, expires in 31 days", tok(time.Time{}, now.Add(31*day))},
	} {
		t.Run(tc.name, func(t *testing.T) { expectRefused(t, g.URL, bearer(tc.tok), v1, 401, "bad_token") })
	}
	for _, tc := range []struct {
		name string
		tok  string
	}{
		{"issued 30 s ahead (clock skew)", tok(now.Add(30*time.Second), now.Add(time.Hour))},
		{"lives exactly 30 days", tok(now, now.Add(30*day))},
		{"no iat, expires in an hour", tok(time.Time{}, now.Add(time.Hour))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, websocket.Dialer{Subprotocols: v1}, g.URL, bearer(tc.tok))
			if r.welcome.User != "mallory" {
				t.Fatalf("welcome %+v", *r.welcome)
			}
		})
	}
}

// Audience and issuer are checked when configured, and a token must then
// carry them; with nothing configured any (or none) passes. The lifetime
// bound counts from iat, or from now for a token without one.
func TestVerifyChecksAudienceIssuerAndLifetime(t *testing.T) {
	keys, err := gateway.NewHS256Keys(tk.Secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	day := 24 * time.Hour
	raw := func(c jwt.MapClaims) string {
		c["sub"], c["dev"] = "alice", "phone"
		if _, ok := c["exp"]; !ok {
			c["exp"] = now.Add(time.Hour).Unix()
		}
		return mintRaw(t, jwt.SigningMethodHS256, tk.Secret, c)
	}
	sb := gateway.TokenRules{Audience: "switchboard", Issuer: "https://auth.example"}
	month := gateway.TokenRules{MaxTTL: 30 * day}
	for _, tc := range []struct {
		name  string
		tok   string
		rules gateway.TokenRules
		ok    bool
	}{
		{"aud and iss as configured", raw(jwt.MapClaims{"aud": "switchboard", "iss": "https://auth.example"}), sb, true},
		{"aud among several", raw(jwt.MapClaims{"aud": []string{"billing", "switchboard"}, "iss": "https://auth.example"}), sb, true},
		{"another aud", raw(jwt.MapClaims{"aud": "billing", "iss": "https://auth.example"}), sb, false},
		{"no aud", raw(jwt.MapClaims{"iss": "https://auth.example"}), sb, false},
		{"another iss", raw(jwt.MapClaims{"aud": "switchboard", "iss": "https://evil.example"}), sb, false},
		{"no iss", raw(jwt.MapClaims{"aud": "switchboard"}), sb, false},
		{"aud and iss not configured", raw(jwt.MapClaims{"aud": "billing", "iss": "anyone"}), gateway.TokenRules{}, true},
		{"iat 59 s ahead", raw(jwt.MapClaims{"iat": now.Add(59 * time.Second).Unix()}), gateway.TokenRules{}, true},
		{"iat 61 s ahead", raw(jwt.MapClaims{"iat": now.Add(61 * time.Second).Unix()}), gateway.TokenRules{}, false},
		{"30 days from iat", raw(jwt.MapClaims{"iat": now.Unix(), "exp": now.Add(30 * day).Unix()}), month, true},
		{"30 days and a second from iat", raw(jwt.MapClaims{"iat": now.Unix(), "exp": now.Add(30*day + time.Second).Unix()}), month, false},
		{"old iat, long life left", raw(jwt.MapClaims{"iat": now.Add(-29 * day).Unix(), "exp": now.Add(2 * day).Unix()}), month, false},
		{"no iat, 30 days left", raw(jwt.MapClaims{"exp": now.Add(30 * day).Unix()}), month, true},
		{"no iat, 31 days left", raw(jwt.MapClaims{"exp": now.Add(31 * day).Unix()}), month, false},
		{"a year, no bound", raw(jwt.MapClaims{"iat": now.Unix(), "exp": now.Add(365 * day).Unix()}), gateway.TokenRules{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := keys.Verify(tc.tok, now, tc.rules)
			switch {
			case tc.ok && (err != nil || id.User != "alice"):
				t.Fatalf("Verify = %+v, %v; want alice", id, err)
			case !tc.ok && !errors.Is(err, gateway.ErrBadToken):
				t.Fatalf("Verify = %+v, %v; want ErrBadToken", id, err)
			}
		})
	}
}

// Mint writes the configured audience and issuer, so the gateway accepts
// what "switchboard token" mints, and refuses a lifetime the gateway
// would refuse.
func TestMintFollowsTheRules(t *testing.T) {
	keys, err := gateway.NewHS256Keys(tk.Secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rules := gateway.TokenRules{Audience: "switchboard", Issuer: "ops", MaxTTL: 24 * time.Hour}
	tok, err := keys.Mint("alice", "phone", 24*time.Hour, now, rules)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := keys.Verify(tok, now, rules); err != nil || id.User != "alice" || id.Device != "phone" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	if _, err := keys.Verify(tok, now, gateway.TokenRules{Audience: "other"}); !errors.Is(err, gateway.ErrBadToken) {
		t.Fatalf("minted for switchboard, checked for other: %v", err)
	}
	if _, err := keys.Mint("alice", "phone", 25*time.Hour, now, rules); !errors.Is(err, gateway.ErrConfig) {
		t.Fatalf("Mint past MaxTTL: %v, want ErrConfig", err)
	}
}

// A gateway configured with an audience and issuer accepts a token minted
// with them and refuses one without either, or with another.
func TestGatewayChecksConfiguredAudienceAndIssuer(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.JWTAudience, cfg.JWTIssuer = "switchboard", "https://auth.example"
	g := tk.StartGateway(t, n, cfg)
	keys, err := gateway.NewHS256Keys(tk.Secret)
	if err != nil {
		t.Fatal(err)
	}
	v1 := []string{protocol.Subprotocol}
	good, err := keys.Mint("alice", "phone", time.Hour, time.Now(), cfg.TokenRules())
	if err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, websocket.Dialer{Subprotocols: v1}, g.URL, bearer(good))
	if r.welcome.User != "alice" {
		t.Fatalf("welcome %+v", *r.welcome)
	}
	for name, rules := range map[string]gateway.TokenRules{
		"neither":        {},
		"no issuer":      {Audience: "switchboard"},
		"wrong issuer":   {Audience: "switchboard", Issuer: "https://evil.example"},
		"wrong audience": {Audience: "billing", Issuer: "https://auth.example"},
	} {
		t.Run(name, func(t *testing.T) {
			tok, err := keys.Mint("mallory", "d", time.Hour, time.Now(), rules)
			if err != nil {
				t.Fatal(err)
			}
			expectRefused(t, g.URL, bearer(tok), v1, 401, "bad_token")
		})
	}
}

// A plain HTTP GET of the WebSocket path is judged like a handshake, up to
// the upgrade: a browser cannot read why a handshake was refused, so the
// SDK asks this way (PROTOCOL.md, Connecting).
func TestPlainGetIsRefusedLikeAHandshake(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	get := func(h http.Header) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+g.Addr+gateway.PathWS, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Code string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("status %d, body not the JSON refusal: %v", resp.StatusCode, err)
		}
		return resp.StatusCode, body.Code
	}
	good := tk.Token(t, "alice", "phone", time.Hour)
	foreign := bearer(good)
	foreign.Set("Origin", "http://evil.example")
	for _, tc := range []struct {
		name   string
		h      http.Header
		status int
		code   string
	}{
		{"no token", http.Header{}, 401, "no_token"},
		{"bad token", bearer(good + "x"), 401, "bad_token"},
		{"foreign origin", foreign, 403, "bad_origin"},
		{"good token", bearer(good), 426, "upgrade_required"},
	} {
		if status, code := get(tc.h); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
}
