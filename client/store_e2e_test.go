package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// The app process of TestStoreResumesSendsAfterKill9: the test runs this
// binary again with these set.
const (
	envApp   = "SB_STORE_TEST_APP" // "first" or "restart"
	envURL   = "SB_STORE_TEST_URL"
	envToken = "SB_STORE_TEST_TOKEN"
	envPath  = "SB_STORE_TEST_PATH"
	envUntil = "SB_STORE_TEST_UNTIL"
	envAck   = "SB_STORE_TEST_ACK"
	envExit  = "SB_STORE_TEST_EXIT"
	envGroup = "SB_STORE_TEST_GROUP" // set: the app sends in this group, not to bob
)

// Directions of a pipe in mutingProxy.
const (
	forward int32 = iota
	discard       // read and throw away: the other end never sees it
	hold          // stop reading: it stays in the socket buffers (what a read under way got is dropped)
)

// mutingProxy forwards TCP to a gateway, and can throw away what flows
// in one direction or stop it, for every connection at once.
type mutingProxy struct {
	addr     string
	up, down atomic.Int32 // client to server, server to client; hold is for good
	closed   chan struct{}
}

func startMutingProxy(t *testing.T, target string) *mutingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &mutingProxy{addr: ln.Addr().String(), closed: make(chan struct{})}
	var conns sync.Map
	t.Cleanup(func() {
		close(p.closed)
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, true)
			conns.Store(u, true)
			go p.pipe(u, c, &p.up)
			go p.pipe(c, u, &p.down)
		}
	}()
	return p
}

func (p *mutingProxy) pipe(dst, src net.Conn, mode *atomic.Int32) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		if mode.Load() == hold {
			<-p.closed // held until the proxy closes
			return
		}
		n, err := src.Read(buf)
		switch m := mode.Load(); {
		case m == hold:
			// Set while the read was blocked: what it read is held too.
			<-p.closed
			return
		case n > 0 && m != discard:
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestMain runs this binary as the app process (storeApp) when runApp
// started it, and as the tests otherwise.
func TestMain(m *testing.M) {
	if role := os.Getenv(envApp); role != "" {
		storeApp(role)
		fmt.Printf("FAIL unknown app role %q\n", role)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// storeApp is the app process the kill tests start (runApp): it never
// returns from a role it knows.
func storeApp(role string) {
	fail := func(format string, args ...any) {
		fmt.Printf("FAIL "+format+"\n", args...)
		os.Exit(1)
	}
	st, err := localstore.Open(os.Getenv(envPath))
	if err != nil {
		fail("open store: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		URL: os.Getenv(envURL), Token: client.WithToken(os.Getenv(envToken)),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Store: st,
	})
	if err != nil {
		fail("dial: %v", err)
	}
	sendTo := func(id string) (client.Sent, error) {
		if g := os.Getenv(envGroup); g != "" {
			return c.SendGroup(ctx, g, id, tk.Body(id))
		}
		return c.Send(ctx, "bob", id, tk.Body(id))
	}
	send := func(id string) {
		if _, err := sendTo(id); err != nil {
			fail("send %s: %v", id, err)
		}
	}
	// waitOutbox polls the store's outbox until ok, within ctx.
	waitOutbox := func(what string, ok func([]localstore.Outgoing) bool) {
		for {
			ob, err := st.Outbox()
			if err != nil {
				fail("outbox: %v", err)
			}
			if ok(ob) {
				return
			}
			select {
			case <-ctx.Done():
				fail("%s: outbox still %v", what, ob)
			case <-time.After(time.Millisecond): // no event says the store changed: look again
			}
		}
	}
	// queue starts Sends of ids without waiting for their "sent", one at
	// a time once the one before is in the store's outbox.
	queue := func(ids ...string) {
		for _, id := range ids {
			go func() { _, _ = sendTo(id) }()
			waitOutbox("queueing "+id, func(ob []localstore.Outgoing) bool { return len(ob) > 0 && ob[len(ob)-1].ID == id })
		}
		ob, _ := st.Outbox()
		var got []string
		for _, o := range ob {
			got = append(got, o.ID)
		}
		fmt.Println("queued", strings.Join(got, ","))
	}
	in := bufio.NewScanner(os.Stdin)
	next := func(want string) {
		if !in.Scan() || in.Text() != want {
			fail("expected %q on stdin, got %q", want, in.Text())
		}
	}
	switch role {
	case "first":
		for _, id := range []string{"m01", "m02", "m03", "m04"} {
			send(id)
		}
		fmt.Println("confirmed")
		next("down-muted") // "sent" frames are thrown away from now on
		queue("m05", "m06", "m07", "m08")
		next("up-held") // nothing reaches the gateway from now on
		queue("m09", "m10", "m11")
		select {} // killed here
	case "receiver":
		// Takes messages until the id in envUntil, acking only those in
		// envAck, prints them, and waits to be killed or, with envExit,
		// closes and exits.
		until, ack := os.Getenv(envUntil), ","+os.Getenv(envAck)+","
		fmt.Println("ready")
		var got []string
		for {
			var m client.Message
			select {
			case m = <-c.Messages():
			case <-ctx.Done():
				fail("no %s; got %v", until, got)
			}
			got = append(got, m.ID)
			if strings.Contains(ack, ","+m.ID+",") {
				c.Ack(m.Seq)
			}
			if m.ID == until {
				break
			}
		}
		fmt.Println("got", strings.Join(got, ","), "dups", c.Stats().DuplicatesDropped)
		if os.Getenv(envExit) == "" {
			select {} // killed here
		}
		c.Close()
		if err := st.Close(); err != nil {
			fail("close store: %v", err)
		}
		os.Exit(0)
	case "restart":
		send("m12") // the restored sends go first, then this one
		waitOutbox("resending", func(ob []localstore.Outgoing) bool { return len(ob) == 0 })
		c.Close()
		if err := st.Close(); err != nil {
			fail("close store: %v", err)
		}
		fmt.Println("done")
		os.Exit(0)
	}
}

// A Go app killed with kill -9 after Send was called and before "sent"
// came back, with some of those sends stored by the server and some
// never written, resends them after a restart on the same store, in
// order and under the same ids, before its new sends: bob gets every
// message once, in order.
func TestStoreResumesSendsAfterKill9(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	p := startMutingProxy(t, g.Addr)
	bob := tk.Dial(t, g.URL, "bob", "phone")
	path := t.TempDir() + "/alice.db"

	start := func(role string) (*exec.Cmd, io.Writer, func(string) string) {
		return runApp(t, envApp+"="+role, envURL+"=ws://"+p.addr+gateway.PathWS,
			envToken+"="+tk.Token(t, "alice", "laptop", time.Hour), envPath+"="+path)
	}
	var got []string
	recv := func(until string) {
		t.Helper()
		for {
			m := tk.RecvMsg(t, bob, 15*time.Second)
			got = append(got, m.ID)
			bob.Ack(m.Seq)
			if m.ID == until {
				return
			}
		}
	}

	app, stdin, line := start("first")
	line("confirmed")
	recv("m04")
	p.down.Store(discard)
	fmt.Fprintln(stdin, "down-muted")
	if got := line("queued"); got != "queued m05,m06,m07,m08" {
		t.Fatalf("app: %s", got)
	}
	recv("m08") // stored and delivered; alice never heard "sent"
	p.up.Store(hold)
	fmt.Fprintln(stdin, "up-held")
	if got := line("queued"); got != "queued m05,m06,m07,m08,m09,m10,m11" {
		t.Fatalf("app: %s", got)
	}
	if err := app.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := app.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("app ended with %v, want killed", err)
	}
	p.up.Store(forward)
	p.down.Store(forward)

	app, _, line = start("restart")
	line("done")
	if err := app.Wait(); err != nil {
		t.Fatalf("restarted app: %v", err)
	}
	recv("m12")
	want := "m01 m02 m03 m04 m05 m06 m07 m08 m09 m10 m11 m12"
	if strings.Join(got, " ") != want {
		t.Fatalf("bob got %v, want %s", got, want)
	}
	// A second stored copy would have reached bob before m12 and been
	// dropped by his SDK.
	if d := bob.Stats().DuplicatesDropped; d != 0 {
		t.Fatalf("bob's SDK dropped %d duplicates: a message was stored twice", d)
	}

	st, err := localstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ob, err := st.Outbox(); err != nil || len(ob) != 0 {
		t.Fatalf("outbox after the restart: %v %v", ob, err)
	}
	ms, err := st.Messages("bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	var last uint64
	for _, m := range ms {
		ids = append(ids, m.ID)
		if m.Status < localstore.Sent || m.Seq <= last {
			t.Errorf("%s: status %d seq %d (previous seq %d)", m.ID, m.Status, m.Seq, last)
		}
		last = m.Seq
	}
	if strings.Join(ids, " ") != want {
		t.Fatalf("alice's store has %v, want %s", ids, want)
	}
}

// A second client cannot open a store another process holds, and a Send
// whose store write fails is not sent.
func TestStoreErrorsReachTheApp(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	st, err := localstore.Open(t.TempDir() + "/alice.db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := localstore.Open(st.Path()); !errors.Is(err, localstore.ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	alice := tk.Dial(t, g.URL, "alice", "laptop", func(o *client.Options) { o.Store = st })
	bob := tk.Dial(t, g.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("m1")); err != nil {
		t.Fatal(err)
	}
	alice.Close()
	st.Close()
	// Reopened, then closed under a running client: the send fails
	// before anything is written.
	st, err = localstore.Open(st.Path())
	if err != nil {
		t.Fatal(err)
	}
	alice2 := tk.Dial(t, g.URL, "alice", "laptop", func(o *client.Options) { o.Store = st })
	st.Close()
	if _, err := alice2.Send(ctx, "bob", "m2", tk.Body("m2")); !errors.Is(err, localstore.ErrClosed) {
		t.Fatalf("Send with a closed store: %v", err)
	}
	if m := tk.RecvMsg(t, bob, 10*time.Second); m.ID != "m1" {
		t.Fatalf("bob got %s first", m.ID)
	}
	// m2 was never written: the next thing bob gets is a fence.
	carol := tk.Dial(t, g.URL, "carol", "phone")
	if _, err := carol.Send(ctx, "bob", "fence", tk.Body("fence")); err != nil {
		t.Fatal(err)
	}
	tk.NextMsgIs(t, bob, "carol", "fence", 10*time.Second)
}

// runApp starts this binary as the app process with env, and returns
// it, its stdin, and a func that returns its next output line starting
// with prefix.
func runApp(t *testing.T, env ...string) (*exec.Cmd, io.Writer, func(prefix string) string) {
	cmd := exec.Command(os.Args[0], "-test.run=^$") // TestMain runs the app
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	out := bufio.NewScanner(stdout)
	return cmd, stdin, func(prefix string) string {
		t.Helper()
		for out.Scan() {
			line := out.Text()
			if strings.HasPrefix(line, "FAIL") {
				t.Fatalf("app: %s", line)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		}
		t.Fatalf("app ended before printing %q", prefix)
		return ""
	}
}

// A Go app killed with kill -9 after it received messages, some acked
// and some not, is shown each message once after a restart on its
// store: the ones it had are dropped (and acked by the SDK), the new
// ones come, and nothing comes a third time.
func TestStoreReceiverKilledBeforeAckShowsEachMessageOnce(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "laptop")
	path := t.TempDir() + "/bob.db"
	env := []string{
		envApp + "=receiver", envURL + "=" + g.URL, envPath + "=" + path,
		envToken + "=" + tk.Token(t, "bob", "phone", time.Hour),
	}
	send := func(id string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := alice.Send(ctx, "bob", id, tk.Body(id)); err != nil {
			t.Fatal(err)
		}
	}

	app, _, line := runApp(t, append(env, envUntil+"=m5", envAck+"=m1,m2,m3")...)
	line("ready")
	for _, id := range []string{"m1", "m2", "m3", "m4", "m5"} {
		send(id)
	}
	if got := line("got"); got != "got m1,m2,m3,m4,m5 dups 0" {
		t.Fatalf("first run: %s", got)
	}
	if err := app.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = app.Wait()

	// m4 and m5 come again (never acked): the store has them, so the
	// app is not shown them, and the SDK acks them.
	app, _, line = runApp(t, append(env, envUntil+"=m6", envAck+"=m6", envExit+"=1")...)
	line("ready")
	send("m6")
	// Acks the app made just before the kill may not have left (acks
	// made together wait to go out together): any of m1-m3 may come
	// again too, and be dropped.
	if got := line("got"); got != "got m6 dups 2" && got != "got m6 dups 3" && got != "got m6 dups 4" && got != "got m6 dups 5" {
		t.Fatalf("after the restart: %s, want only m6 (m4 and m5, maybe some of m1-m3, dropped)", got)
	} else {
		t.Logf("after the restart: %s", got)
	}
	if err := app.Wait(); err != nil {
		t.Fatal(err)
	}
	app, _, line = runApp(t, append(env, envUntil+"=m7", envAck+"=m7", envExit+"=1")...)
	line("ready")
	send("m7")
	if got := line("got"); got != "got m7 dups 0" {
		t.Fatalf("third run: %s, want m7 alone and nothing redelivered", got)
	}
	if err := app.Wait(); err != nil {
		t.Fatal(err)
	}

	st, err := localstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ms, err := st.Messages("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
		if !m.Acked {
			t.Errorf("%s not marked acked", m.ID)
		}
	}
	if strings.Join(ids, " ") != "m1 m2 m3 m4 m5 m6 m7" {
		t.Fatalf("bob's store has %v", ids)
	}
}
