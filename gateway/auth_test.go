package gateway_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
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
	tok, err := minter.Mint("alice", "phone", time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := verifier.Verify(tok, now)
	if err != nil || id.User != "alice" || id.Device != "phone" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	if _, err := verifier.Verify(tok, now.Add(2*time.Minute)); !errors.Is(err, gateway.ErrTokenExpired) {
		t.Fatalf("expired token: %v, want ErrTokenExpired", err)
	}
	// An HS256 token must not pass an Ed25519 verifier, whatever its secret.
	if _, err := verifier.Verify(tk.Token(t, "alice", "phone", time.Minute), now); !errors.Is(err, gateway.ErrBadToken) {
		t.Fatalf("HS256 token on an Ed25519 gateway: %v, want ErrBadToken", err)
	}
	// A verifier holds no private key and cannot mint.
	if _, err := verifier.Mint("alice", "phone", time.Minute, now); !errors.Is(err, gateway.ErrNoKey) {
		t.Fatalf("Mint without a private key: %v, want ErrNoKey", err)
	}
	// And an Ed25519 token on an HS256 gateway is refused.
	hs, err := gateway.NewHS256Keys(tk.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hs.Verify(tok, now); !errors.Is(err, gateway.ErrBadToken) {
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
