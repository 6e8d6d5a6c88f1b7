package protocol

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// PROTOCOL.md and the registries must agree: every code has its row with
// the same retry/reconnect flag, and every row has its code.
func TestProtocolDocMatchesRegistry(t *testing.T) {
	b, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	yesNo := map[bool]string{true: "yes", false: "no"}

	errRows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (yes|no) \\|").FindAllStringSubmatch(doc, -1) {
		errRows[m[1]] = true
	}
	for _, e := range Errors {
		row := fmt.Sprintf("| `%s` | %s |", e.Code, yesNo[e.Retry])
		if !strings.Contains(doc, row) {
			t.Errorf("PROTOCOL.md has no row %q", row)
		}
		delete(errRows, string(e.Code))
	}
	for code := range errRows {
		t.Errorf("PROTOCOL.md documents error code %q that the registry lacks", code)
	}

	closeRows := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\| (\d{4}) \| ([a-z_]+) \|`).FindAllStringSubmatch(doc, -1) {
		closeRows[m[1]] = true
	}
	for _, c := range Closes {
		row := fmt.Sprintf("| %d | %s | %s |", c.Code, c.Name, yesNo[c.Reconnect])
		if !strings.Contains(doc, row) {
			t.Errorf("PROTOCOL.md has no row %q", row)
		}
		delete(closeRows, fmt.Sprint(c.Code))
	}
	for code := range closeRows {
		t.Errorf("PROTOCOL.md documents close code %s that the registry lacks", code)
	}

	for _, typ := range []string{TypeSend, TypeAck, TypeRead, TypeWelcome, TypeSent, TypeMsg, TypeReceipt, TypeError, TypeTyping, TypeGroup, TypeReadSync, TypeStatus} {
		if !strings.Contains(doc, "**"+typ+"**") {
			t.Errorf("PROTOCOL.md does not describe frame %q", typ)
		}
	}
}

// Every example of a frame in PROTOCOL.md decodes as a client frame the
// gateway takes or a server frame the SDKs take (typing and group frames
// go both ways).
func TestProtocolDocExamplesDecode(t *testing.T) {
	b, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	client := map[string]bool{}
	for _, typ := range ClientTypes {
		client[typ] = true
	}
	bothWays := map[string]bool{TypeTyping: true, TypeGroup: true, TypeStatus: true}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		m := regexp.MustCompile(`^\{"type":"([a-z_]+)"`).FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n++
		_, cerr := DecodeClient([]byte(line))
		_, serr := DecodeServer([]byte(line))
		switch typ := m[1]; {
		case bothWays[typ] && cerr != nil && serr != nil:
			t.Errorf("PROTOCOL.md's example %s: as a client frame: %v; as a server frame: %v", line, cerr, serr)
		case !bothWays[typ] && client[typ] && cerr != nil:
			t.Errorf("PROTOCOL.md's example %s: %v", line, cerr)
		case !client[typ] && serr != nil:
			t.Errorf("PROTOCOL.md's example %s: %v", line, serr)
		}
	}
	if n < 20 {
		t.Fatalf("PROTOCOL.md has %d examples of frames", n)
	}
}
