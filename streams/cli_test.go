package streams_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// An operator creates the streams with the real nats CLI from the JSON in
// streams/, and a gateway then works against that server.
func TestOperatorAppliesStreamsWithNATSCLI(t *testing.T) {
	cli := tk.NATSCLI(t)
	n := tk.StartBareNATS(t, t.TempDir())
	flags := n.CLIFlags(t)

	tk.Run(t, cli, append(flags, "stream", "add", "--config", "INBOX.json")...)
	tk.Run(t, cli, append(flags, "kv", "add", contract.DevicesKV, "--history=1", "--storage=file", "--replicas=1",
		"--description=Switchboard device registry")...)

	// What the CLI made is what the code would make: applying again is a
	// no-op, not a conflict.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil {
		t.Fatalf("apply over CLI-made streams: %v", err)
	}

	// Acks settle once their delivered ticks are stored: by the receipts
	// function.
	tk.StartFunctions(t, n)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("hi")); err != nil {
		t.Fatal(err)
	}
	m := tk.RecvMsg(t, bob, 10*time.Second)
	if m.ID != "m1" {
		t.Fatalf("bob got %s", m.ID)
	}
	bob.Ack(m.Seq)

	info := tk.Run(t, cli, append(flags, "stream", "info", contract.Inbox)...)
	for _, want := range []string{"Subjects: inbox.*", "Republishing: inbox.* to sb.live.{{wildcard(1)}}",
		"Duplicate Window: 2m0s"} {
		if !strings.Contains(info, want) {
			t.Errorf("nats stream info lacks %q:\n%s", want, info)
		}
	}
	// Devices are not consumers: each has a cursor, readable with the CLI
	// once it has acked something.
	if ls := tk.Run(t, cli, append(flags, "consumer", "ls", contract.Inbox)...); !strings.Contains(ls, "No Consumers") {
		t.Errorf("devices made consumers:\n%s", ls)
	}
	tk.WaitFor(t, 10*time.Second, func() error {
		out, err := tk.RunErr(cli, append(flags, "kv", "get", contract.CursorsKV, contract.CursorKey("bob", "phone"), "--raw")...)
		if err != nil {
			return err
		}
		if floor, _, _ := strings.Cut(strings.TrimSpace(out), " "); floor != strconv.FormatUint(m.Seq, 10) {
			return tk.Errorf("bob's cursor reads %q, want floor %d", out, m.Seq)
		}
		return nil
	})
}
