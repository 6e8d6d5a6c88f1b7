package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/client/localstore"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// A device's store keeps what its user sent from another device in the
// right conversation, as the user's own with its ticks, and takes a read
// made on another device as the conversation's read watermark.
func TestStoreKeepsOwnMessagesAndReadsFromOtherDevices(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	st, err := localstore.Open(t.TempDir() + "/laptop.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	phone := tk.Dial(t, g.URL, "alice", "phone")
	laptop := tk.Dial(t, g.URL, "alice", "laptop", func(o *client.Options) { o.Store = st })
	bob := tk.Dial(t, g.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const wait = 10 * time.Second
	next := func(c *client.Client, from, id string) client.Message {
		t.Helper()
		m := tk.NextMsgIs(t, c, from, id, wait)
		c.Ack(m.Seq)
		return m
	}

	for _, id := range []string{"b1", "b2"} {
		if _, err := bob.Send(ctx, "alice", id, tk.Body(id)); err != nil {
			t.Fatal(err)
		}
	}
	next(laptop, "bob", "b1")
	next(phone, "bob", "b1")
	next(laptop, "bob", "b2")
	b2 := next(phone, "bob", "b2")
	a1, err := phone.Send(ctx, "bob", "a1", tk.Body("a1"))
	if err != nil {
		t.Fatal(err)
	}
	next(bob, "alice", "a1")
	if m := next(laptop, "alice", "a1"); m.To != "bob" || m.SentSeq != a1.Seq {
		t.Fatalf("laptop got %+v, want alice's a1 to bob at %d", m, a1.Seq)
	}
	for {
		r := tk.RecvReceipt(t, laptop, wait)
		if r.ID == "a1" && r.Status == protocol.StatusDelivered && r.Seq == a1.Seq {
			break
		}
	}
	phone.Read(b2.Seq)
	select {
	case rs := <-laptop.ReadSyncs():
		if rs.Peer != "bob" || rs.Seq != b2.Seq || rs.Device != "phone" {
			t.Fatalf("read_sync %+v, want bob's chat read to %d on the phone", rs, b2.Seq)
		}
	case <-time.After(wait):
		t.Fatal("no read_sync on the laptop")
	}

	convs, err := st.Conversations()
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 1 || convs[0].Conv != "bob" || convs[0].Messages != 3 || convs[0].Unread != 0 || convs[0].ReadSeq != b2.Seq {
		t.Fatalf("conversations %+v, want bob's with 3 messages, read to %d", convs, b2.Seq)
	}
	ms, err := st.Messages("bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.From+":"+m.ID)
	}
	if strings.Join(got, " ") != "bob:b1 bob:b2 :a1" {
		t.Fatalf("laptop's store has %v", got)
	}
	if own := ms[2]; own.Seq != a1.Seq || own.Status != localstore.Delivered || own.Device != "phone" {
		t.Fatalf("own message stored as %+v, want at %d, delivered, from the phone", own, a1.Seq)
	}
}
