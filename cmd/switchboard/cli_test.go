package main_test

import (
	"fmt"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
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
	if out, _ := run(t, "function", "groups", "-h"); !strings.Contains(out, "group-max-members") || strings.Contains(out, "push-webhook") {
		t.Errorf("function groups -h does not show its own flags only:\n%s", out)
	}
	out, _ := run(t, "function", "presence", "-h")
	if strings.Contains(out, "push-webhook") || strings.Contains(out, "media-s3") || !strings.Contains(out, "-nats") {
		t.Errorf("function presence -h shows other functions' flags:\n%s", out)
	}
	if out, _ := run(t, "function", "push", "-h"); !strings.Contains(out, "push-webhook") || strings.Contains(out, "media-s3") {
		t.Errorf("function push -h:\n%s", out)
	}
	// A deployment still naming the retired sync function is told why.
	for _, args := range [][]string{{"function", "sync", "--nats", "nats://127.0.0.1:1"}, {"serve", "--functions", "receipts,sync"}} {
		if out, err := run(t, args...); err == nil || !strings.Contains(out, "retired") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
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

// The terminal chat guides: a banner names who is connected, a line with
// no recipient says how to pick one, /to picks one and shows their
// presence, and a session replaced by the same device elsewhere exits
// saying so.
func TestChatGuides(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	bobTok := token(t, data, "bob", "phone")
	bobOut := &lockedBuffer{}
	bob := exec.Command(binary, "chat", "--url", p.WSURL, "--token", bobTok)
	bob.Stdout, bob.Stderr = bobOut, bobOut
	bobIn, err := bob.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bob.Process.Kill(); _ = bob.Wait() })
	defer bobIn.Close()
	waitOut := func(b *lockedBuffer, want string) {
		t.Helper()
		tk.WaitFor(t, 15*time.Second, func() error {
			if !strings.Contains(b.String(), want) {
				return fmt.Errorf("terminal lacks %q: %q", want, b.String())
			}
			return nil
		})
	}
	waitOut(bobOut, "connected as bob/phone")

	aliceOut := &lockedBuffer{}
	alice := exec.Command(binary, "chat", "--url", p.WSURL, "--token", token(t, data, "alice", "phone"))
	alice.Stdout, alice.Stderr = aliceOut, aliceOut
	aliceIn, err := alice.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alice.Process.Kill(); _ = alice.Wait() })
	defer aliceIn.Close()
	waitOut(aliceOut, "connected as alice/phone")
	_, _ = io.WriteString(aliceIn, "hello?\n")
	waitOut(aliceOut, "pick a recipient first")
	_, _ = io.WriteString(aliceIn, "/to bob\nhi bob\n")
	waitOut(aliceOut, "[bob is online]")
	waitOut(bobOut, "alice/phone: hi bob")
	waitOut(aliceOut, "read by bob/phone")

	// The same device connects again: the first session ends, and says why.
	second := exec.Command(binary, "chat", "--url", p.WSURL, "--token", bobTok)
	secondOut := &lockedBuffer{}
	second.Stdout, second.Stderr = secondOut, secondOut
	secondIn, err := second.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer secondIn.Close()
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Process.Kill(); _ = second.Wait() })
	waitOut(bobOut, "connected again elsewhere")
}

// An operator sees what waits for each of a user's devices: the count
// past its position and the oldest one's age.
func TestInspectShowsWhatWaits(t *testing.T) {
	data := t.TempDir()
	p := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	phone := tk.DialToken(t, p.WSURL, token(t, data, "bob", "phone"))
	laptop := tk.DialToken(t, p.WSURL, token(t, data, "bob", "laptop"))
	alice := tk.DialToken(t, p.WSURL, token(t, data, "alice", "phone"))
	for _, id := range []string{"m1", "m2", "m3"} {
		if _, err := alice.Send(t.Context(), "bob", id, tk.Body(id)); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 { // the phone acks all three; the laptop none
		phone.Ack(tk.RecvMsg(t, phone, 10*time.Second).Seq)
	}
	tk.RecvMsg(t, laptop, 10*time.Second)
	_ = phone.Close()
	_ = laptop.Close()
	tk.WaitFor(t, 15*time.Second, func() error {
		out, err := run(t, "inspect", "--nats", p.NATSURL, "--data", data, "--user", "bob")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.Contains(out, "WAITING") {
			return fmt.Errorf("inspect: %s", out)
		}
		laptopRow, phoneRow := strings.Fields(lines[1]), strings.Fields(lines[2])
		if laptopRow[0] != "laptop" || laptopRow[2] != "3" || phoneRow[0] != "phone" || phoneRow[2] != "0" {
			return fmt.Errorf("inspect: want 3 waiting for the laptop, none for the phone:\n%s", out)
		}
		return nil
	})

	// Every device of every user: alice's phone, bob's two. What waits
	// for alice is her delivered ticks (one or more, as the phone's acks
	// were gathered), so the total is checked against the rows.
	out, err := run(t, "inspect", "--nats", p.NATSURL, "--data", data, "--all")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	totals := strings.Fields(lines[1])
	if len(totals) != 3 || totals[0] != "3" {
		t.Fatalf("inspect --all: want 3 devices:\n%s", out)
	}
	var sum, rows int
	var laptopSeen bool
	for _, l := range lines[4:] {
		f := strings.Fields(l)
		n, _ := strconv.Atoi(f[2])
		sum += n
		rows++
		laptopSeen = laptopSeen || (f[0] == "bob" && f[1] == "laptop" && n == 3)
	}
	if !laptopSeen || strconv.Itoa(sum) != totals[2] || strconv.Itoa(rows) != totals[1] {
		t.Fatalf("inspect --all: want bob's laptop with 3, rows adding up to the totals:\n%s", out)
	}
	if out, err := run(t, "inspect", "--nats", p.NATSURL, "--data", data); err == nil || !strings.Contains(out+err.Error(), "--user ID or --all") {
		t.Fatalf("inspect without --user or --all: %v %s", err, out)
	}
}
