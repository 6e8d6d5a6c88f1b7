package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// --jwt-secret is "never logged", and the children get it through the
// environment so no other process reads it: the JSON report, a file
// written 0644 to be shared and compared, must not hold it either.
func TestBenchReportHoldsNoSecret(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	out := filepath.Join(t.TempDir(), "report.json")
	err := runBench([]string{"--scenario", "idle", "--devices", "1", "--url", g.URL,
		"--jwt-secret", string(tk.Secret), "--no-baseline", "--settle", "10ms", "--quiet", "--json", out},
		io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), string(tk.Secret)) {
		t.Fatalf("the report holds the token secret:\n%s", b[:min(len(b), 400)])
	}
}
