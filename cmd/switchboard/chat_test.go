package main_test

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// chatTerminal runs the terminal chat as user and returns what to type
// into it and what it printed so far, once it is connected.
func chatTerminal(t *testing.T, p *proc, data, user string) (io.Writer, *lockedBuffer) {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(binary, "chat", "--url", p.WSURL, "--token", token(t, data, user, "phone"))
	cmd.Stdout, cmd.Stderr = out, out
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitTerminal(t, out, "connected as "+user+"/phone")
	return in, out
}

func waitTerminal(t *testing.T, out *lockedBuffer, want string) {
	t.Helper()
	tk.WaitFor(t, 15*time.Second, func() error {
		if !strings.Contains(out.String(), want) {
			return fmt.Errorf("terminal lacks %q: %q", want, out.String())
		}
		return nil
	})
}

func typeLine(t *testing.T, in io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(in, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// Three terminals chat in a group one of them creates: the members see
// its creation and its messages as "[group] from: body", its changes as
// "[group] * ..."; a member who leaves is a notice to the others; the
// admin adds and removes members.
func TestChatGroups(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	aliceIn, alice := chatTerminal(t, p, data, "alice")
	_, bob := chatTerminal(t, p, data, "bob")
	carolIn, carol := chatTerminal(t, p, data, "carol")

	// The commands are listed; one about a group asks for a group first;
	// a line that merely starts with a slash is no command.
	typeLine(t, aliceIn, "/help")
	waitTerminal(t, alice, "/create ID NAME USER,USER")
	typeLine(t, aliceIn, "/members")
	waitTerminal(t, alice, "[no group picked: /group ID picks one]")
	typeLine(t, aliceIn, "/usr/bin is a path")
	waitTerminal(t, alice, "[not sent: pick a recipient first")

	typeLine(t, aliceIn, "/create friends Old Friends bob,carol")
	tk.WaitFor(t, 15*time.Second, func() error {
		if s := alice.String(); !strings.Contains(s, "[created") {
			return fmt.Errorf("no answer to the create: %q", s)
		}
		return nil
	})
	if s := alice.String(); strings.Contains(s, "[created failed:") {
		t.Fatalf("the create failed: %q", s)
	}
	waitTerminal(t, alice, `[created: friends "Old Friends": alice (admin), bob, carol]`)
	waitTerminal(t, alice, "[now sending to the group friends]")
	waitTerminal(t, bob, `[friends] * alice created the group "Old Friends" with you and carol`)
	waitTerminal(t, carol, `[friends] * alice created the group "Old Friends" with bob and you`)

	typeLine(t, aliceIn, "hi all")
	waitTerminal(t, bob, "[friends] alice: hi all")
	waitTerminal(t, carol, "[friends] alice: hi all")

	// Carol picks the group, answers, and leaves.
	typeLine(t, carolIn, "/group friends")
	waitTerminal(t, carol, "[now sending to the group friends]")
	typeLine(t, carolIn, "hi alice")
	waitTerminal(t, alice, "[friends] carol: hi alice")
	waitTerminal(t, bob, "[friends] carol: hi alice")
	typeLine(t, carolIn, "/leave")
	waitTerminal(t, carol, `[left: friends "Old Friends": alice (admin), bob]`)
	waitTerminal(t, bob, "[friends] * carol left")
	waitTerminal(t, alice, "[friends] * carol left")

	// The admin adds a member, asks for the members, and removes one.
	typeLine(t, aliceIn, "/add dave")
	waitTerminal(t, bob, "[friends] * alice added dave")
	typeLine(t, aliceIn, "/members")
	waitTerminal(t, alice, `[members: friends "Old Friends": alice (admin), bob, dave]`)
	typeLine(t, aliceIn, "/remove dave")
	waitTerminal(t, bob, "[friends] * alice removed dave")
	waitTerminal(t, alice, `[removed: friends "Old Friends": alice (admin), bob]`)
}
