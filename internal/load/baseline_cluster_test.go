package load

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// On a cluster whose INBOX keeps three replicas, the raw baseline stores
// with three too: an R1 baseline would set R3 stores against R1 ones and
// make every ratio look worse than it is.
func TestBaselineKeepsAsManyReplicasAsINBOX(t *testing.T) {
	files, err := filepath.Glob("../../deploy/cluster/node-*.conf")
	if err != nil || len(files) != 3 {
		t.Fatalf("want 3 cluster node files, got %v (%v)", files, err)
	}
	c := tk.StartCluster(t, files...)
	_, js := c.Nodes[0].Connect(t)
	// Stream creates go through the meta leader, which a loaded machine
	// may still be settling: wait for a healthy cluster and for INBOX's
	// leader, as the cluster tests in deploy do.
	c.WaitHealthy(t, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Asked again while routes still settle: a create whose answer was
	// lost with a route (the stream made, the reply gone) is answered by
	// the next ask, which finds it made.
	cfg := jetstream.StreamConfig{Name: contract.Inbox, Subjects: []string{"inbox.>"}, Replicas: 3}
	for {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := js.CreateOrUpdateStream(actx, cfg)
		acancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(err)
		case <-time.After(100 * time.Millisecond): // a retry's backoff
		}
	}
	c.WaitForLeader(t, 30*time.Second, nil, tk.StreamInfo(js, contract.Inbox))
	target := Target{NATSURL: c.Nodes[1].ClientURL, NATSOptions: tk.TestKeys(t).Options(natsauth.Operator)}
	r, err := openRaw(ctx, target, "replicas")
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	info, err := r.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.replicas != 3 || info.Config.Replicas != 3 {
		t.Fatalf("baseline stream has %d replicas (reported %d); INBOX has 3", info.Config.Replicas, r.replicas)
	}
}
