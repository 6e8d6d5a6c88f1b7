// Package walls holds the test that keeps Switchboard's packages apart:
// gateways and functions meet over NATS and the contract package only,
// and each side's imports, direct or not, are read from `go list -deps`,
// so a later change cannot quietly break a wall.
package walls

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/switchboard-im/switchboard/"

// deps returns every package pkg depends on, itself excluded, by full
// import path.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", mod+pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var all []string
	for _, p := range strings.Fields(string(out)) {
		if p != mod+pkg {
			all = append(all, p)
		}
	}
	return all
}

// project lists the project's packages, each as its path under the module.
func project(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var all []string
	for _, p := range strings.Fields(string(out)) {
		all = append(all, strings.TrimPrefix(p, mod))
	}
	return all
}

// under reports whether the import path pkg is the project's dir or below
// it; a path of the project's own listing (no module prefix) also counts.
func under(pkg, dir string) bool {
	pkg = strings.TrimPrefix(pkg, mod)
	return pkg == dir || strings.HasPrefix(pkg, dir+"/")
}

func isProject(pkg string) bool { return strings.HasPrefix(pkg, mod) }

func TestWalls(t *testing.T) {
	rules := []struct {
		pkg    string
		refuse func(dep string) bool
		why    string
	}{
		{"gateway", func(d string) bool { return under(d, "functions") || under(d, "media") || strings.Contains(d, "minio") },
			"the gateway meets the functions and media over NATS and package contract only, and links no object store"},
		{"contract", isProject, "the contract imports nothing of the project"},
		{"protocol", isProject, "the wire protocol imports nothing of the project"},
		{"client", func(d string) bool { return isProject(d) && d != mod+"protocol" && !under(d, "client") },
			"the SDK speaks the wire protocol only (its local store is its own package)"},
		{"gateway", func(d string) bool { return under(d, "web") },
			"the gateway serves the page only as a route cmd mounts"},
		{"web", func(d string) bool { return isProject(d) && d != mod+"protocol" },
			"the page and the JavaScript SDK speak the wire protocol only"},
	}
	for _, p := range project(t) {
		if under(p, "functions") || under(p, "media") {
			rules = append(rules, struct {
				pkg    string
				refuse func(string) bool
				why    string
			}{p, func(d string) bool { return under(d, "gateway") }, "functions and media meet the gateway over NATS only"})
		}
	}
	for _, r := range rules {
		for _, d := range deps(t, r.pkg) {
			if r.refuse(d) {
				t.Errorf("%s imports %s: %s", r.pkg, strings.TrimPrefix(d, mod), r.why)
			}
		}
	}
}
