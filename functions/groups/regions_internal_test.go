package groups

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// A member with no home yet gets their copies where the group is, and
// that is not remembered: once they are given a home elsewhere (or the
// HOMES mirror catches up after a cut), their copies go there.
func TestAMemberWithNoHomeIsAskedAgain(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Port: -1, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: contract.HomesKV})
	if err != nil {
		t.Fatal(err)
	}
	r := &regions{self: "eu", homes: kv, home: map[string]string{}}
	subj, _, err := r.inboxOf(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if subj != contract.InboxSubject("carol") {
		t.Fatalf("carol with no home yet: %s, want her inbox here", subj)
	}
	if _, err := kv.PutString(ctx, "carol", "us"); err != nil { // the operator homes her (or the mirror catches up)
		t.Fatal(err)
	}
	subj, origin, err := r.inboxOf(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if subj != contract.OutboxSubject("us", "carol") {
		t.Fatalf("carol homed in us: her group copies still go to %q (origin %q), this region's inbox", subj, origin)
	}
}
