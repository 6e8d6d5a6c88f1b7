// Package deploy holds the nats-server configurations Switchboard runs on;
// its test starts a server from each one and runs chat through it.
package deploy

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/internal/embednats"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

func TestEveryConfigRunsChat(t *testing.T) {
	files, err := filepath.Glob("*.conf")
	if err != nil || len(files) == 0 {
		t.Fatalf("no configs: %v", err)
	}
	tk.DeployEnv(t)
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			// The file's own store dir and ports are replaced by temp ones.
			ns, err := embednats.Start(embednats.Options{ConfigFile: f, Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Shutdown()
			nc, err := nats.Connect(ns.ClientURL(), tk.TestKeys(t).Options(natsauth.Operator)...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := streams.Apply(ctx, js, streams.Options{}); err != nil {
				t.Fatal(err)
			}
			n := &tk.NATS{Server: ns, Conn: nc, JS: js, Keys: tk.TestKeys(t)}
			g := tk.StartGateway(t, n, tk.TestConfig())
			alice := tk.Dial(t, g.URL, "alice", "phone")
			bob := tk.Dial(t, g.URL, "bob", "phone")
			if _, err := alice.Send(ctx, "bob", "m1", tk.Body("via "+f)); err != nil {
				t.Fatal(err)
			}
			if m := tk.RecvMsg(t, bob, 10*time.Second); m.ID != "m1" {
				t.Fatalf("bob got %s", m.ID)
			}
		})
	}
}

var update = flag.Bool("update", false, "rewrite permissions.conf from internal/natsauth")

// TestPermissionsFile keeps deploy/permissions.conf, which every config
// here includes, the rendering of the roles the embedded server enforces.
func TestPermissionsFile(t *testing.T) {
	want := natsauth.Conf()
	if *update {
		if err := os.WriteFile(natsauth.ConfFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(natsauth.ConfFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s differs from internal/natsauth; run go test ./deploy -run TestPermissionsFile -update", natsauth.ConfFile)
	}
}
