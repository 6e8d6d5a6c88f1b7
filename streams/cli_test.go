package streams_test

import (
	"context"
	"strings"
	"testing"
	"time"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// An operator creates the streams with the real nats CLI from the JSON in
// streams/, and a gateway then works against that server.
func TestOperatorAppliesStreamsWithNATSCLI(t *testing.T) {
	cli := tk.NATSCLI(t)
	n := tk.StartBareNATS(t, t.TempDir())
	url := n.Server.ClientURL()

	tk.Run(t, cli, "-s", url, "stream", "add", "--config", "INBOX.json")
	tk.Run(t, cli, "-s", url, "kv", "add", streams.DevicesKV, "--history=1", "--storage=file", "--replicas=1",
		"--description=Switchboard device registry")

	// What the CLI made is what the code would make: applying again is a
	// no-op, not a conflict.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.Apply(ctx, n.JS, streams.Options{}); err != nil {
		t.Fatalf("apply over CLI-made streams: %v", err)
	}

	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("hi")); err != nil {
		t.Fatal(err)
	}
	if m := tk.RecvMsg(t, bob, 10*time.Second); m.ID != "m1" {
		t.Fatalf("bob got %s", m.ID)
	}

	info := tk.Run(t, cli, "-s", url, "stream", "info", streams.Inbox)
	for _, want := range []string{"Subjects: inbox.*", "Maximum Consumers: 100,000", "Duplicate Window: 2m0s", "Messages: 1"} {
		if !strings.Contains(info, want) {
			t.Errorf("nats stream info lacks %q:\n%s", want, info)
		}
	}
	ls := tk.Run(t, cli, "-s", url, "consumer", "ls", streams.Inbox)
	for _, want := range []string{"alice~phone", "bob~phone"} {
		if !strings.Contains(ls, want) {
			t.Errorf("nats consumer ls lacks %q:\n%s", want, ls)
		}
	}
}
