package main_test

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// The chat keeps a local store under the user's config directory by
// default. The chats these tests start use none unless a test gives one
// (the flag, or this variable in the chat's own environment), so none
// writes to the home directory or finds another's store.
func init() { os.Setenv("SWITCHBOARD_STORE", "off") }

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

// The chat's local store, in the default place: a line typed while the
// connection is down is kept; the chat killed with kill -9 before the
// server confirmed it, and started again, shows the conversation as it
// was (bob's message, alice's lines with their ticks, the one not yet
// sent) and sends that line: bob gets it exactly once, before the next
// line typed. A third start shows the same conversation again.
func TestChatStoreKeepsHistoryAndTypedLinesAcrossKill9(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	gw, err := url.Parse(p.WSURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := tk.StartProxy(t, gw.Host)
	bob := tk.DialToken(t, p.WSURL, token(t, data, "bob", "phone"))
	aliceTok := token(t, data, "alice", "phone")
	config := t.TempDir() // the chat's default store goes under it
	run := func() (*exec.Cmd, io.WriteCloser, *lockedBuffer) {
		t.Helper()
		out := &lockedBuffer{}
		cmd := exec.Command(binary, "chat", "--url", "ws://"+proxy.Addr+gw.Path, "--token", aliceTok, "--to", "bob")
		cmd.Env = append(os.Environ(), "SWITCHBOARD_STORE=", "XDG_CONFIG_HOME="+config, "HOME="+config)
		cmd.Stdout, cmd.Stderr = out, out
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitTerminal(t, out, "connected as alice/phone")
		return cmd, in, out
	}
	const wait = 15 * time.Second
	bobGets := func(text string) {
		t.Helper()
		m := tk.RecvMsg(t, bob, wait)
		if m.From != "alice" || string(m.Body) != `"`+text+`"` {
			t.Fatalf("bob got %+v, want alice's %q", m, text)
		}
		bob.Ack(m.Seq)
	}

	chat, in, out := run()
	if _, err := bob.Send(t.Context(), "alice", "b1", tk.Body("hi alice")); err != nil {
		t.Fatal(err)
	}
	waitTerminal(t, out, "bob/phone: hi alice")
	typeLine(t, in, "first line")
	waitTerminal(t, out, "sent, seq")
	bobGets("first line")

	// The connection goes and stays away; a line typed now is kept.
	proxy.SetTarget("127.0.0.1:1")
	proxy.DropAll()
	waitTerminal(t, out, "[disconnected")
	typeLine(t, in, "typed offline")
	waitTerminal(t, out, "not sent yet: kept, and sent once connected]")
	if err := chat.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := chat.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("chat ended with %v, want killed", err)
	}

	proxy.SetTarget(gw.Host)
	history := []string{"-- with bob --", "bob/phone: hi alice", "you: first line  [", "you: typed offline  [not sent yet]",
		"-- end of history; 1 typed line(s) not sent yet, sent once connected --", "connected as alice/phone"}
	chat, in, out = run()
	inOrder(t, out.String(), history...)
	bobGets("typed offline") // sent from the store, once: the next line comes next
	typeLine(t, in, "after restart")
	bobGets("after restart")
	if d := bob.Stats().DuplicatesDropped; d != 0 {
		t.Fatalf("bob's SDK dropped %d duplicates: a line was stored twice", d)
	}
	in.Close() // Ctrl-D: the chat ends once its lines are sent
	if err := chat.Wait(); err != nil {
		t.Fatalf("chat ended with %v after Ctrl-D:\n%s", err, out.String())
	}
	store := fmt.Sprintf("%s/switchboard/chat/%s/alice-phone.db", config, strings.ReplaceAll(proxy.Addr, ":", "_"))
	if _, err := os.Stat(store); err != nil {
		t.Fatalf("no store in the default place: %v", err)
	}

	_, _, out = run()
	inOrder(t, out.String(), "-- with bob --", "bob/phone: hi alice", "you: first line  [", "you: typed offline  [",
		"you: after restart  [", "-- end of history; 0 typed line(s) not sent yet")
	if strings.Contains(out.String(), "[not sent yet]") {
		t.Fatalf("a line shows as not sent after it was: %q", out.String())
	}
}

// inOrder fails unless s holds each of want, in that order.
func inOrder(t *testing.T, s string, want ...string) {
	t.Helper()
	rest := s
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("terminal lacks %q after what came before it:\n%s", w, s)
		}
		rest = rest[i+len(w):]
	}
}
