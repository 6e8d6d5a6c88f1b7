package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/streams"
)

// clusterFiles are the three nodes of deploy/cluster. They sit in a folder
// of their own because TestEveryConfigRunsChat starts every deploy/*.conf
// as a single server, which a cluster node cannot be on its own.
func clusterFiles(t *testing.T) []string {
	files, err := filepath.Glob("cluster/node-*.conf")
	if err != nil || len(files) != 3 {
		t.Fatalf("want 3 cluster node files, got %v (%v)", files, err)
	}
	return files
}

// `task config:check` covers deploy/*.conf only, so the same check runs
// here for the cluster files, with the settings their comments promise.
func TestClusterConfigsAreValid(t *testing.T) {
	tk.DeployEnv(t)
	for _, f := range clusterFiles(t) {
		o, err := server.ProcessConfigFile(f) // what nats-server -t runs: a warning fails too
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if o.SyncAlways || o.SyncInterval != 2*time.Minute {
			t.Errorf("%s: sync interval %s (always: %v), the comments say 2m", f, o.SyncInterval, o.SyncAlways)
		}
		if o.MaxPayload != 1<<20 {
			t.Errorf("%s: max_payload %d, want 1 MiB as in nats-single.conf", f, o.MaxPayload)
		}
	}
}

// TestClusterStreamLeaderKilled is R3: the node leading INBOX is killed
// (SIGKILL) while a sender streams through one gateway to a recipient on
// another. Every message acked "sent" reaches the recipient once and in
// stored order, and INBOX holds exactly one copy of each on every
// surviving replica.
//
// Both gateways are connected to the other two nodes and keep their NATS
// connections: the fault is the leader change alone, as the gateway's
// publish path and the SDK's resend after store_failed see it.
func TestClusterStreamLeaderKilled(t *testing.T) {
	runLeaderChange(t, leaderChange{do: kill})
}

// TestClusterStreamLeaderSteppedDown is R3 for a planned handover, as
// `nats stream cluster step-down INBOX` makes one.
func TestClusterStreamLeaderSteppedDown(t *testing.T) {
	runLeaderChange(t, leaderChange{do: stepDown})
}

// TestClusterGatewaysNodeKilled kills the INBOX leader while the sender's
// gateway is connected to it: the gateway's NATS connection fails over to
// another node in the middle of the stream, as a third of the gateways do
// whenever one node of three dies.
func TestClusterGatewaysNodeKilled(t *testing.T) {
	runLeaderChange(t, leaderChange{do: kill, senderOnLeader: true})
}

// TestClusterRecipientsNodeKilled kills the INBOX leader while the
// recipient's gateway is connected to it. Live copies republished by the
// dying leader are lost with the connection; the gateway reconnects to
// another node and every session reads its inbox from its position, so
// the messages come in order and once.
func TestClusterRecipientsNodeKilled(t *testing.T) {
	runLeaderChange(t, leaderChange{do: kill, recipientOnLeader: true})
}

func kill(_ *nats.Conn, leader *tk.Node) error {
	leader.Kill()
	return nil
}

func stepDown(admin *nats.Conn, _ *tk.Node) error {
	return tk.StepDown(admin, contract.Inbox, "", nil)
}

const (
	clusterMessages = 300
	clusterWindow   = 16
)

// leaderChange is a fault on the INBOX leader and where things sit when it
// happens.
type leaderChange struct {
	do func(admin *nats.Conn, leader *tk.Node) error
	// senderOnLeader connects the sender's gateway to the INBOX leader,
	// recipientOnLeader the recipient's; otherwise they use the other two
	// nodes.
	senderOnLeader, recipientOnLeader bool
}

// runLeaderChange runs chat on the cluster files and applies the change a
// third of the way into a stream of sends, with a window of them in flight.
func runLeaderChange(t *testing.T, lc leaderChange) {
	start := time.Now()
	c, setupJS := startClusterWithStreams(t)
	t.Logf("cluster up in %s, meta leader %s", time.Since(start).Round(time.Millisecond), c.MetaLeader())
	leader := c.WaitForLeader(t, 10*time.Second, nil, tk.StreamInfo(setupJS, contract.Inbox))
	others := c.Others(leader)
	// Off the node that changes, so its requests never wait on it.
	admin, adminJS := others[0].Connect(t)

	tk.StartFunctionsURL(t, others[1].ClientURL)
	cfg := tk.TestConfig()
	cfg.SendRate, cfg.SendBurst = 10000, 10000
	senderNode := others[0]
	if lc.senderOnLeader {
		senderNode = leader
	}
	recipientNode := others[1]
	if lc.recipientOnLeader {
		recipientNode = leader
	}
	g1 := tk.StartGatewayURL(t, senderNode.ClientURL, cfg)
	g2 := tk.StartGatewayURL(t, recipientNode.ClientURL, cfg)
	alice := tk.Dial(t, g1.URL, "alice", "phone")
	bob := tk.Dial(t, g2.URL, "bob", "phone")

	t.Logf("setup done in %s: INBOX led by %s, alice's gateway on %s, bob's on %s",
		time.Since(start).Round(time.Millisecond), leader.Name, senderNode.Name, recipientNode.Name)

	var changedAt time.Time
	elected := make(chan error, 1)
	acked := tk.SendStream(t, alice, "bob", clusterMessages, clusterWindow, func(i int) {
		if i == clusterMessages/3 {
			// Sends before this one are in flight; later ones wait for
			// the change and then meet whatever it left.
			changedAt = time.Now()
			if err := lc.do(admin, leader); err != nil {
				t.Error(err)
			}
			go func() {
				n, err := c.AwaitNewLeader(20*time.Second, leader, tk.StreamInfo(adminJS, contract.Inbox))
				if err == nil {
					t.Logf("INBOX led by %s %s after the change", n.Name, time.Since(changedAt).Round(time.Millisecond))
				}
				elected <- err
			}()
		}
	})
	if err := <-elected; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	t.Logf("all %d sent %s after the change; alice's gateway answered %s sends with store_failed, alice connected %d times",
		len(acked), time.Since(changedAt).Round(time.Millisecond), storeFailed(g1), alice.Stats().Connects)

	t.Logf("%d of %d stored behind messages sent more than %d sends after them",
		storedBehind(acked, clusterWindow), len(acked), clusterWindow)
	fence := tk.ExpectOnceInOrder(t, bob, acked, alice, "bob")
	acked[fence.ID] = fence.Seq // stored once, like the rest
	t.Logf("all delivered %s after the change", time.Since(changedAt).Round(time.Millisecond))
	expectOneStoredCopy(t, admin, acked)
	expectSameReplicas(t, c)
	t.Logf("done in %s", time.Since(start).Round(time.Millisecond))
}

// storedBehind counts messages stored after one the sender started more
// than window sends later. Sends in flight together have no order among
// them, so only a displacement past the window is a reorder; it comes from
// a send that failed with store_failed and was resent by itself, behind
// newer sends that had got through.
func storedBehind(acked map[string]uint64, window int) int {
	ids := make([]string, 0, len(acked))
	for id := range acked {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return acked[ids[i]] < acked[ids[j]] })
	n, latest := 0, -1
	for _, id := range ids {
		var i int
		fmt.Sscanf(id, "m%d", &i) // SendStream's ids: m0000, m0001, ...
		if latest-i > window {
			n++
		}
		latest = max(latest, i)
	}
	return n
}

// startClusterWithStreams starts the three-node cluster of
// deploy/cluster with the streams applied, and returns it with a
// JetStream handle on its first node, once every bucket answers reads
// (new buckets do only once their replicas are current and every node
// knows where they are).
func startClusterWithStreams(t *testing.T) (*tk.Cluster, jetstream.JetStream) {
	t.Helper()
	c := tk.StartCluster(t, clusterFiles(t)...)
	_, js := c.Nodes[0].Connect(t)
	applyStreams(t, js)
	c.WaitHealthy(t, 20*time.Second)
	c.WaitKVReadable(t, 20*time.Second, contract.DevicesKV, contract.CursorsKV, contract.ReadsKV, contract.PresenceKV,
		contract.SettingsKV, contract.PushKV, contract.GroupInfoKV)
	return c, js
}

// applyStreams applies the streams with three replicas. A JetStream API
// reply can be lost while a new cluster settles its routes, and nothing
// then answers the request again; Apply is idempotent, so it is repeated.
func applyStreams(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	// A cluster just up may still count a peer offline for placement
	// ("no suitable peers") after its meta leader is elected: applied
	// again until every stream has its three replicas.
	tk.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return streams.Apply(ctx, js, streams.Options{Replicas: 3})
	})
}

// expectOneStoredCopy reads bob's inbox through the INBOX leader and checks
// that each acked id is stored exactly once, at the sequence "sent" gave.
// It asks for each message with a plain stream get, which only the leader
// answers (direct gets, which INBOX allows, may come from any replica).
func expectOneStoredCopy(t *testing.T, nc *nats.Conn, acked map[string]uint64) {
	t.Helper()
	subj := contract.InboxSubject("bob")
	copies := map[string][]uint64{}
	for seq := uint64(1); ; seq++ {
		var msg *server.StoredMsg
		// Retried: a cluster that has just lost a node may still answer
		// "temporarily unavailable" for a moment.
		tk.WaitFor(t, 10*time.Second, func() error {
			req, _ := json.Marshal(server.JSApiMsgGetRequest{Seq: seq, NextFor: subj})
			m, err := nc.Request("$JS.API.STREAM.MSG.GET."+contract.Inbox, req, 2*time.Second)
			if err != nil {
				return fmt.Errorf("get %s from %d: %w", subj, seq, err)
			}
			var resp server.JSApiMsgGetResponse
			if err := json.Unmarshal(m.Data, &resp); err != nil {
				return err
			}
			switch {
			case resp.Error != nil && resp.Error.ErrCode == uint16(server.JSNoMessageFoundErr):
				msg = nil
			case resp.Error != nil:
				return fmt.Errorf("get %s from %d: %v", subj, seq, resp.Error)
			default:
				msg = resp.Message
			}
			return nil
		})
		if msg == nil {
			break
		}
		h, err := nats.DecodeHeadersMsg(msg.Header)
		if err != nil {
			t.Fatal(err)
		}
		seq = msg.Sequence
		if h.Get(contract.HdrKind) == contract.KindMsg {
			copies[h.Get(contract.HdrID)] = append(copies[h.Get(contract.HdrID)], seq)
		}
	}
	for id, seq := range acked {
		if got := copies[id]; len(got) != 1 || got[0] != seq {
			t.Errorf("%s: stored at %v, want once at %d", id, got, seq)
		}
	}
	if len(copies) != len(acked) {
		t.Errorf("%d ids stored for bob, %d acked", len(copies), len(acked))
	}
}

// expectSameReplicas checks that every running node's INBOX replica
// reaches the same state: a copy the leader holds and a follower lacks, or
// the reverse, would surface on the next leader change.
func expectSameReplicas(t *testing.T, c *tk.Cluster) {
	t.Helper()
	tk.WaitFor(t, 10*time.Second, func() error {
		var first *server.StreamState
		var firstNode string
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			st, ok := n.StreamState(contract.Inbox)
			if !ok {
				return tk.Errorf("%s has no INBOX replica", n.Name)
			}
			if first == nil {
				first, firstNode = &st, n.Name
				continue
			}
			if st.Msgs != first.Msgs || st.FirstSeq != first.FirstSeq || st.LastSeq != first.LastSeq || st.NumDeleted != first.NumDeleted {
				return tk.Errorf("INBOX on %s: %d msgs, seq %d..%d, %d deleted; on %s: %d msgs, seq %d..%d, %d deleted",
					n.Name, st.Msgs, st.FirstSeq, st.LastSeq, st.NumDeleted,
					firstNode, first.Msgs, first.FirstSeq, first.LastSeq, first.NumDeleted)
			}
		}
		return nil
	})
}

var storeFailedRE = regexp.MustCompile(`(?m)^switchboard_gateway_error_frames_total\{code="store_failed"\} (\S+)$`)

// storeFailed reads from a gateway's metrics how many sends it answered
// with store_failed, each of which the SDK resent.
func storeFailed(g *tk.Gateway) string {
	b, err := g.Metrics()
	if err != nil {
		return fmt.Sprint(err)
	}
	if m := storeFailedRE.FindStringSubmatch(b); m != nil {
		return m[1]
	}
	return "?"
}
