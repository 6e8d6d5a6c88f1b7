package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Pinned tool versions; Taskfile.yml builds the same ones.
const NATSCLIVersion = "v0.5.0"

// ToolsDir is where Taskfile.yml's tools task puts the tools: the
// SWITCHBOARD_TOOLS variable, else ~/.cache/switchboard/tools.
func ToolsDir() string {
	if d := os.Getenv("SWITCHBOARD_TOOLS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "switchboard", "tools")
}

// NATSCLI returns the path of the pinned nats CLI, failing the test with
// the command that installs it when it is missing.
func NATSCLI(t testing.TB) string {
	t.Helper()
	p := filepath.Join(ToolsDir(), "nats-"+NATSCLIVersion, "nats")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the nats CLI %s is not installed at %s; run `go tool -modfile=tools/go.mod task tools` "+
			"(the README's test command does this)", NATSCLIVersion, p)
	}
	return p
}

// Run runs a command and returns its combined output, failing the test if
// it exits non-zero.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// RunErr runs a command and returns its standard output, or an error with
// its combined output if it exits non-zero: for commands polled until they
// succeed.
func RunErr(name string, args ...string) (string, error) {
	var stderr strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}
