package gateway_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// What group receipts cost in stored writes, for a group of 10 whose
// members each ack and read every message on its own (no acks or reads
// coinciding, the worst case): members' positions, the group's
// aggregate, and the receipts into the sender's inbox, counted from the
// streams' sequences. The members' copies (the fan-out's, written here
// as it writes them) are not counted.
func TestStoredWritesPerGroupMessage(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	groups, err := jetstream.New(n.Connect(t, natsauth.Groups))
	if err != nil {
		t.Fatal(err)
	}
	const recipients, msgs = 9, 20
	members := []string{"alice"}
	for i := range recipients {
		members = append(members, fmt.Sprintf("u%d", i))
	}
	putGroup(t, n, "club", members...)
	alice := tk.Dial(t, g.URL, "alice", "phone")
	devs := make([]*client.Client, recipients)
	for i := range devs {
		devs[i] = tk.Dial(t, g.URL, members[i+1], "phone")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	defer cancel()
	counted := []string{contract.Inbox, contract.TicksStream, "KV_" + contract.GroupTicksKV}
	before := storedWrites(t, n, counted...)
	for i := range msgs {
		id := fmt.Sprintf("g%02d", i)
		s, err := alice.SendGroup(ctx, "club", id, tk.Body("hi"))
		if err != nil {
			t.Fatal(err)
		}
		for j, d := range devs {
			copyInto(t, groups, members[j+1], contract.KindMsg, "alice", "phone", id, "club", s.Seq, []byte(`"hi"`))
			m := tk.RecvMsg(t, d, wait)
			d.Ack(m.Seq)
			d.Read(m.Seq)
		}
		for _, st := range []string{protocol.StatusDelivered, protocol.StatusRead} {
			if r := tk.RecvReceipt(t, alice, wait); r.ID != id || r.Status != st || r.Group != "club" {
				t.Fatalf("alice's receipt %+v, want %s %s", r, id, st)
			}
		}
	}
	writes := storedWrites(t, n, counted...) - before - recipients*msgs // less the copies
	per := float64(writes) / msgs
	t.Logf("group of %d: %.2f stored writes per message for its receipts (%.2f per recipient)", recipients+1, per, per/recipients)
	if max := float64(2*recipients + 2 + recipients); per > max {
		t.Fatalf("%.2f stored writes per message, want at most %.0f", per, max)
	}
}
