package client_test

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/groups"
	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// startGroups starts a groups function against n on its own connection
// in its own role, stopped at the end of the test.
func startGroups(t *testing.T, n *tk.NATS) {
	t.Helper()
	nc := n.Connect(t, natsauth.Groups)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := groups.Start(context.Background(), nc, js, groups.DefaultConfig(), tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
}

// A Go app killed with kill -9 with group sends unconfirmed, some stored
// by the server and some never written, resends them after a restart on
// the same store, in order and under the same ids, before its new ones:
// every member gets each once, in order, and the store has them all in
// the group's conversation at their places in the group's log.
func TestStoreResumesGroupSendsAfterKill9(t *testing.T) {
	n := tk.StartNATS(t)
	startGroups(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	p := startMutingProxy(t, g.Addr)
	bob := tk.Dial(t, g.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := bob.CreateGroup(ctx, "club", "Club", "alice"); err != nil {
		t.Fatal(err)
	}
	if m := tk.RecvMsg(t, bob, 15*time.Second); m.Event == nil || m.Event.Op != protocol.GroupCreate {
		t.Fatalf("bob got %+v, want the create", m)
	} else {
		bob.Ack(m.Seq)
	}
	path := t.TempDir() + "/alice.db"
	start := func(role string) (*exec.Cmd, io.Writer, func(string) string) {
		return runApp(t, envApp+"="+role, envURL+"=ws://"+p.addr+gateway.PathWS, envGroup+"=club",
			envToken+"="+tk.Token(t, "alice", "laptop", time.Hour), envPath+"="+path)
	}
	var got []string
	recv := func(until string) {
		t.Helper()
		for {
			m := tk.RecvMsg(t, bob, 15*time.Second)
			if m.Group != "club" || m.From != "alice" {
				t.Fatalf("bob got %+v, want alice's in club", m)
			}
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
	ms, err := st.GroupMessages("club", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	var last uint64
	for _, m := range ms {
		if m.Event != nil {
			continue // the create, as alice's laptop received it
		}
		ids = append(ids, m.ID)
		if m.Status < localstore.Sent || m.Seq <= last || m.From != "" {
			t.Errorf("%s: from %q status %d seq %d (previous seq %d)", m.ID, m.From, m.Status, m.Seq, last)
		}
		last = m.Seq
	}
	if strings.Join(ids, " ") != want {
		t.Fatalf("alice's store has %v in club, want %s", ids, want)
	}
}

// A device's store keeps a group's traffic: others' messages and system
// messages, its user's messages sent from another device (with their
// place in the group's log, ticked by the group's receipts), its own
// group sends with their ticks; and a client started again on the store
// knows those sends, so a group read receipt that comes while it was away
// ticks them.
func TestStoreKeepsGroupTraffic(t *testing.T) {
	n := tk.StartNATS(t)
	startGroups(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	path := t.TempDir() + "/laptop.db"
	st, err := localstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	phone := tk.Dial(t, g.URL, "alice", "phone")
	laptop := tk.Dial(t, g.URL, "alice", "laptop", func(o *client.Options) { o.Store = st })
	bob := tk.Dial(t, g.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const wait = 15 * time.Second
	next := func(c *client.Client, from, id string) client.Message {
		t.Helper()
		m := tk.NextMsgIs(t, c, from, id, wait)
		c.Ack(m.Seq)
		return m
	}
	if _, err := bob.CreateGroup(ctx, "club", "Club", "alice"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, phone, laptop} {
		next(c, "bob", "ev-1")
	}
	if _, err := bob.SendGroup(ctx, "club", "b1", tk.Body("b1")); err != nil {
		t.Fatal(err)
	}
	next(phone, "bob", "b1")
	lb1 := next(laptop, "bob", "b1")
	p1, err := phone.SendGroup(ctx, "club", "p1", tk.Body("p1"))
	if err != nil {
		t.Fatal(err)
	}
	next(bob, "alice", "p1")
	if m := next(laptop, "alice", "p1"); m.Group != "club" || m.SentSeq != p1.Seq {
		t.Fatalf("laptop got %+v, want alice's p1 in club at %d", m, p1.Seq)
	}
	l1, err := laptop.SendGroup(ctx, "club", "l1", tk.Body("l1"))
	if err != nil {
		t.Fatal(err)
	}
	bl1 := next(bob, "alice", "l1")
	// bob acked p1 and l1: the group's delivered tick reaches both on
	// the laptop, whichever device sent them.
	ticked := map[string]bool{}
	for len(ticked) < 2 {
		r := tk.RecvReceipt(t, laptop, wait)
		if r.Group == "club" && r.Status == protocol.StatusDelivered {
			ticked[r.ID] = true
		}
	}
	if !ticked["p1"] || !ticked["l1"] {
		t.Fatalf("delivered ticks for %v, want p1 and l1", ticked)
	}
	laptop.Read(lb1.Seq)

	tk.WaitFor(t, wait, func() error {
		ms, err := st.GroupMessages("club", 0)
		if err != nil {
			return err
		}
		var got []string
		for _, m := range ms {
			got = append(got, fmt.Sprintf("%s:%s=%d", m.From, m.ID, m.Status))
		}
		if want := fmt.Sprintf("bob:ev-1=%d bob:b1=%d :p1=%d :l1=%d", localstore.Sent, localstore.Sent, localstore.Delivered, localstore.Delivered); strings.Join(got, " ") != want {
			return fmt.Errorf("club holds %s, want %s", strings.Join(got, " "), want)
		}
		return nil
	})
	if m, _, _ := st.GroupMessage("club", "", "p1"); m.Seq != p1.Seq || m.Device != "phone" {
		t.Fatalf("p1 stored as %+v, want at %d from the phone", m, p1.Seq)
	}
	if m, _, _ := st.GroupMessage("club", "", "l1"); m.Seq != l1.Seq {
		t.Fatalf("l1 stored as %+v, want at %d", m, l1.Seq)
	}
	if w, _ := st.GroupReadWatermark("club"); w != lb1.Seq {
		t.Fatalf("club read to %d, want %d", w, lb1.Seq)
	}

	// Away, the laptop's sends are read; started again, it ticks them.
	if err := laptop.Close(); err != nil {
		t.Fatal(err)
	}
	bob.Read(bl1.Seq)
	laptop = tk.Dial(t, g.URL, "alice", "laptop", func(o *client.Options) { o.Store = st })
	read := map[string]uint64{}
	for len(read) < 2 {
		r := tk.RecvReceipt(t, laptop, wait)
		if r.Group != "club" || r.Status != protocol.StatusRead {
			t.Fatalf("receipt %+v, want club's read", r)
		}
		read[r.ID] = r.Seq
	}
	if read["p1"] != p1.Seq || read["l1"] != l1.Seq {
		t.Fatalf("read ticks %v, want p1 at %d and l1 at %d", read, p1.Seq, l1.Seq)
	}
	for _, id := range []string{"p1", "l1"} {
		if m, _, _ := st.GroupMessage("club", "", id); m.Status != localstore.Read {
			t.Fatalf("%s stored as %+v, want read", id, m)
		}
	}
}

// Reading a group on one device marks it read up to there on the user's
// other device, on another gateway, as a watermark (read_sync with the
// group), and the sender gets one group read receipt: a read on the
// other device that raises nothing sends nothing, to either. Each
// absence is proven by what must come next.
func TestGroupReadSyncAcrossDevices(t *testing.T) {
	n := tk.StartNATS(t)
	startGroups(t, n)
	g1 := tk.StartGateway(t, n, tk.TestConfig())
	g2 := tk.StartGateway(t, n, tk.TestConfig())
	st, err := localstore.Open(t.TempDir() + "/laptop.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bob := tk.Dial(t, g1.URL, "bob", "phone")
	phone := tk.Dial(t, g1.URL, "alice", "phone")
	laptop := tk.Dial(t, g2.URL, "alice", "laptop", func(o *client.Options) { o.Store = st })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const wait = 15 * time.Second
	next := func(c *client.Client, from, id string) client.Message {
		t.Helper()
		m := tk.NextMsgIs(t, c, from, id, wait)
		c.Ack(m.Seq)
		return m
	}
	readSync := func(c *client.Client) client.ReadSync {
		t.Helper()
		select {
		case rs := <-c.ReadSyncs():
			return rs
		case <-time.After(wait):
			t.Fatal("no read_sync")
		}
		return client.ReadSync{}
	}
	readTicks := func(ids ...string) {
		t.Helper()
		for _, id := range ids {
			r := tk.RecvReceipt(t, bob, wait)
			for r.Status != protocol.StatusRead {
				r = tk.RecvReceipt(t, bob, wait) // the delivered ticks come first
			}
			// By names the member whose position request made the
			// receipts function recompute, which may be either member's
			// when their requests cross (as for delivered ticks).
			if r.ID != id || r.Group != "club" || (r.By != "alice" && r.By != "bob") {
				t.Fatalf("bob's read tick %+v, want %s in club by a member", r, id)
			}
		}
	}

	if _, err := bob.CreateGroup(ctx, "club", "Club", "alice"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{bob, phone, laptop} {
		next(c, "bob", "ev-1")
	}
	for _, id := range []string{"b1", "b2"} {
		if _, err := bob.SendGroup(ctx, "club", id, tk.Body(id)); err != nil {
			t.Fatal(err)
		}
	}
	next(phone, "bob", "b1")
	p2 := next(phone, "bob", "b2")
	next(laptop, "bob", "b1")
	l2 := next(laptop, "bob", "b2")
	if p2.Seq != l2.Seq {
		t.Fatalf("b2 at %d on the phone, %d on the laptop: one inbox", p2.Seq, l2.Seq)
	}

	phone.Read(p2.Seq)
	if rs := readSync(laptop); rs.Group != "club" || rs.Peer != "" || rs.Seq != p2.Seq || rs.Device != "phone" {
		t.Fatalf("laptop's read_sync %+v, want club read to %d on the phone", rs, p2.Seq)
	}
	readTicks("b1", "b2")
	if w, _ := st.GroupReadWatermark("club"); w != p2.Seq {
		t.Fatalf("laptop's store has club read to %d, want %d", w, p2.Seq)
	}
	convs, err := st.Conversations()
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 1 || convs[0].Group != "club" || convs[0].Unread != 0 {
		t.Fatalf("laptop's conversations %+v, want club with nothing unread", convs)
	}

	// The laptop reads b2 too: nothing rises. Then b3, read on the
	// laptop: the phone's next read_sync and bob's next read tick are
	// b3's.
	laptop.Read(l2.Seq)
	if _, err := bob.SendGroup(ctx, "club", "b3", tk.Body("b3")); err != nil {
		t.Fatal(err)
	}
	next(phone, "bob", "b3")
	l3 := next(laptop, "bob", "b3")
	laptop.Read(l3.Seq)
	if rs := readSync(phone); rs.Group != "club" || rs.Seq != l3.Seq || rs.Device != "laptop" {
		t.Fatalf("phone's read_sync %+v, want club read to %d on the laptop", rs, l3.Seq)
	}
	readTicks("b3")
	reads := tk.CountInbox(t, n.JS, "bob", func(h nats.Header) bool {
		return h.Get(contract.HdrKind) == contract.KindReceipt && h.Get(contract.HdrStatus) == protocol.StatusRead
	})
	if reads != 2 {
		t.Fatalf("%d read receipts stored for bob, want 2 (b1..b2, b3)", reads)
	}
}
