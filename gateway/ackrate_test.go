package gateway_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// A device draining a burst acks each message as it comes, faster than
// the frame rate limit allows other frames: the acks of what it was
// delivered are taken all the same. (Dropped, each would have left its
// message unacked for the rest of the session, and once max-inflight of
// them were unsettled, delivery would have stopped: the SDK does not
// resend an ack.) A backlog after a partition between regions arrives
// as such a burst.
func TestAcksOfDeliveredMessagesAreNotRateLimited(t *testing.T) {
	n := tk.StartNATS(t)
	tk.StartFunctions(t, n)
	cfg := tk.TestConfig()
	cfg.FrameRate, cfg.FrameBurst, cfg.FloodStrikes = 1, 5, 10_000
	g := tk.StartGateway(t, n, cfg)
	bob := tk.Dial(t, g.URL, "bob", "phone")
	const total = 1000
	for i := range total {
		id := "alice-" + strconv.Itoa(i)
		_, err := n.JS.PublishMsgAsync(&nats.Msg{Subject: contract.InboxSubject("bob"), Data: []byte(`"` + id + `"`),
			Header: nats.Header{contract.HdrMsgID: {contract.MsgDedupID("alice", id)}, contract.HdrKind: {contract.KindMsg},
				contract.HdrFrom: {"alice"}, contract.HdrDevice: {"phone"}, contract.HdrID: {id}, contract.HdrTS: {"1"}}},
			jetstream.WithStallWait(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
	}
	<-n.JS.PublishAsyncComplete()
	for i := range total {
		bob.Ack(tk.NextMsgIs(t, bob, "alice", "alice-"+strconv.Itoa(i), 15*time.Second).Seq)
	}
	// Acks of nothing delivered are still limited: past the burst they
	// are answered rate_limited, not unknown_seq. (Written raw: the SDK
	// writes no ack of a seq its connection did not deliver.)
	raw := connectRaw(t, g, "bob", "tablet")
	for range 20 {
		raw.write(`{"type":"ack","seq":1099511627776}`)
	}
	for {
		if f := raw.next(); f.Code == protocol.ErrRateLimited {
			if f.Seq != 1<<40 || f.For != protocol.TypeAck {
				t.Fatalf("refusal %+v, want it to name the ack of %d", *f, uint64(1)<<40)
			}
			break
		}
	}
}
