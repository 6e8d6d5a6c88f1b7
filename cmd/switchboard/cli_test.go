package main_test

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

// run runs the binary to completion and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	return string(out), err
}

// The CLI guides a newcomer: help lists the commands, each function shows
// only its own flags, and a missing key or a taken port is named at once.
func TestCLIGuides(t *testing.T) {
	if out, _ := run(t, "-h"); !strings.Contains(out, "nats-keys") || !strings.Contains(out, "version") || !strings.Contains(out, "function") {
		t.Errorf("switchboard -h does not list the commands:\n%s", out)
	}
	if out, err := run(t, "version"); err != nil || !strings.Contains(out, "nats-server 2.") {
		t.Errorf("version: %v\n%s", err, out)
	}
	if out, _ := run(t, "function", "-h"); !strings.Contains(out, "receipts") || !strings.Contains(out, "presence") {
		t.Errorf("function -h does not list the functions:\n%s", out)
	}
	out, _ := run(t, "function", "presence", "-h")
	if strings.Contains(out, "push-webhook") || strings.Contains(out, "media-s3") || !strings.Contains(out, "-nats") {
		t.Errorf("function presence -h shows other functions' flags:\n%s", out)
	}
	if out, _ := run(t, "function", "push", "-h"); !strings.Contains(out, "push-webhook") || strings.Contains(out, "media-s3") {
		t.Errorf("function push -h:\n%s", out)
	}

	// Without the server's secret, token and a gateway refuse, naming it,
	// rather than make a new one nobody else accepts.
	empty := t.TempDir()
	if out, err := run(t, "token", "--data", empty, "--user", "bob", "--device", "phone"); err == nil || !strings.Contains(out, "jwt.secret") {
		t.Errorf("token without a secret: %v\n%s", err, out)
	}
	if out, err := run(t, "gateway", "--data", empty, "--nats", "nats://127.0.0.1:1", "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(out, "same key") {
		t.Errorf("gateway without a secret: %v\n%s", err, out)
	}

	// A taken NATS port is named at once, not after a wait.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, err = run(t, "--data", t.TempDir(), "--nats-listen", ln.Addr().String(), "--listen", "127.0.0.1:0", "--metrics-listen", "")
	if err == nil || !strings.Contains(out, ln.Addr().String()) || !strings.Contains(out, "address already in use") {
		t.Errorf("a taken NATS port: %v\n%s", err, out)
	}
}
