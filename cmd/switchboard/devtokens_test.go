package main_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// devToken asks the server for a development token: the status, and the
// token when there is one.
func devToken(t *testing.T, p *proc, user, device string) (int, string) {
	t.Helper()
	status, b := httpDo(t, "POST", p.HTTP+"/v1/dev/token", http.Header{"Content-Type": {"application/json"}},
		[]byte(`{"user":"`+user+`","device":"`+device+`"}`))
	var a struct{ Token string }
	_ = json.Unmarshal(b, &a)
	return status, a.Token
}

// offersDevTokens says whether the chat page offers to sign in by name.
func offersDevTokens(t *testing.T, p *proc) bool {
	t.Helper()
	_, b := httpDo(t, "GET", p.HTTP+"/", nil, nil)
	return strings.Contains(string(b), `<meta name="switchboard-dev-tokens" content="on">`)
}

// Development tokens are on by default only for an all-in-one that signs
// with its own secret (nothing configured); --dev-tokens says otherwise
// either way, and needs a key that can sign.
func TestDevTokensOnlyWhenNothingIsConfigured(t *testing.T) {
	p := start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0")
	status, tok := devToken(t, p, "alice", "browser")
	if status != http.StatusOK || !offersDevTokens(t, p) {
		t.Fatalf("all-in-one with its own secret: %d, page offers them: %v", status, offersDevTokens(t, p))
	}
	tk.DialToken(t, p.WSURL, tok)
	if !strings.Contains(p.Logs(), `"msg":"development tokens on`) {
		t.Error("no warning that development tokens are on")
	}

	secret := []string{"--jwt-secret", "a-configured-secret-0123456789abcdef-0123"}
	p = start(t, append([]string{"--data", t.TempDir(), "--nats-listen", "127.0.0.1:0"}, secret...)...)
	if status, _ := devToken(t, p, "alice", "browser"); status != http.StatusNotFound || offersDevTokens(t, p) {
		t.Fatalf("with --jwt-secret: %d, page offers them: %v; want none", status, offersDevTokens(t, p))
	}
	p = start(t, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0", "--dev-tokens=false")
	if status, _ := devToken(t, p, "alice", "browser"); status != http.StatusNotFound || offersDevTokens(t, p) {
		t.Fatalf("with --dev-tokens=false: %d; want none", status)
	}
	p = start(t, append([]string{"--data", t.TempDir(), "--nats-listen", "127.0.0.1:0", "--dev-tokens"}, secret...)...)
	status, tok = devToken(t, p, "alice", "browser")
	if status != http.StatusOK {
		t.Fatalf("--dev-tokens with --jwt-secret: %d", status)
	}
	tk.DialToken(t, p.WSURL, tok)

	// An Ed25519 public key alone cannot sign.
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "--data", t.TempDir(), "--nats-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
		"--metrics-listen", "", "--jwt-public-key", pemFile, "--dev-tokens").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--jwt-private-key") {
		t.Fatalf("--dev-tokens with a public key alone: want a refusal naming --jwt-private-key, got %v:\n%s", err, out)
	}
}
