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

	for _, typ := range []string{TypeSend, TypeAck, TypeRead, TypeWelcome, TypeSent, TypeMsg, TypeReceipt, TypeError, TypeTyping, TypeGroup, TypeReadSync} {
		if !strings.Contains(doc, "**"+typ+"**") {
			t.Errorf("PROTOCOL.md does not describe frame %q", typ)
		}
	}
}
