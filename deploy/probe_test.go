package deploy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// wrongLastMsgID is JetStream's error code for a publish whose expected
// last msg id is not the stream's (JSStreamWrongLastMsgIDErrF).
const wrongLastMsgID = 10070

// A gateway asks the store whether a send it is about to refuse for good
// was stored already (gateway/pubqueue.go, probeLocked): the send's own
// Nats-Msg-Id with an expected last id no message has. That rests on
// JetStream looking for the duplicate first, which on a cluster happens
// on the leader before the proposal, and on the expected id being checked
// after it, when each replica applies. Checked here on deploy/cluster's
// R3 streams: a stored send is found, with its seq, and a probe for one
// never stored stores nothing.
func TestClusterProbeFindsOnlyAStoredSend(t *testing.T) {
	c := tk.StartCluster(t, clusterFiles(t)...)
	_, setupJS := c.Nodes[0].Connect(t)
	applyStreams(t, setupJS)
	c.WaitHealthy(t, 20*time.Second)
	leader := c.WaitForLeader(t, 10*time.Second, nil, tk.StreamInfo(setupJS, contract.GroupsStream))
	_, js := c.Others(leader)[0].Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	subject := contract.GroupMsgSubject("friends")
	stored := &nats.Msg{Subject: subject, Data: []byte(`"hi"`), Header: nats.Header{
		contract.HdrMsgID: {contract.MsgDedupID("alice", "m1")}}}
	ack, err := js.PublishMsg(ctx, stored)
	if err != nil {
		t.Fatal(err)
	}
	probe := func(id string) (*jetstream.PubAck, error) {
		return js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: []byte(`"hi"`), Header: nats.Header{
			contract.HdrMsgID:         {contract.MsgDedupID("alice", id)},
			nats.ExpectedLastMsgIdHdr: {"!probe"},
		}})
	}
	found, err := probe("m1")
	if err != nil || !found.Duplicate || found.Sequence != ack.Sequence {
		t.Fatalf("probe of a stored send: %+v, %v; want a duplicate of seq %d", found, err, ack.Sequence)
	}
	_, err = probe("m2")
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != wrongLastMsgID {
		t.Fatalf("probe of a send never stored: %v, want wrong last msg id", err)
	}
	info, err := js.Stream(ctx, contract.GroupsStream)
	if err != nil {
		t.Fatal(err)
	}
	if st := info.CachedInfo().State; st.Msgs != 1 || st.LastSeq != ack.Sequence {
		t.Fatalf("GROUPS holds %d messages up to seq %d after the probes, want 1 up to %d", st.Msgs, st.LastSeq, ack.Sequence)
	}
}
