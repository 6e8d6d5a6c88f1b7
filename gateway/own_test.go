package gateway

import (
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Own messages and read_sync markers in a user's inbox: those of another
// device go out (msg with to and sent_seq, read_sync), those of this very
// device are settled without a frame and without counting as skipped, one
// naming another user as its sender is skipped as malformed, and none of
// them asks for a tick.
func TestFeedOwnCopiesAndReadSyncs(t *testing.T) {
	fs := &fakeStream{}
	h := func(kind, from, device string, kv ...string) nats.Header {
		hd := nats.Header{contract.HdrKind: {kind}, contract.HdrFrom: {from}, contract.HdrDevice: {device},
			contract.HdrID: {"m1"}, contract.HdrTS: {"1795582349000"}}
		for i := 0; i+1 < len(kv); i += 2 {
			hd.Set(kv[i], kv[i+1])
		}
		return hd
	}
	own := []string{contract.HdrTo, "alice", contract.HdrSentSeq, "7"}
	rs := []string{contract.HdrPeer, "alice", contract.HdrSeqTo, "5"}
	fs.storeRaw("bob", h(contract.KindMsg, "bob", "laptop", own...), []byte(`"hi"`))                      // 1: out
	fs.storeRaw("bob", h(contract.KindMsg, "bob", "phone", own...), []byte(`"hi"`))                       // 2: this device's
	fs.storeRaw("bob", h(contract.KindReadSync, "bob", "laptop", rs...), nil)                             // 3: out
	fs.storeRaw("bob", h(contract.KindReadSync, "bob", "phone", rs...), nil)                              // 4: this device's
	fs.storeRaw("bob", h(contract.KindMsg, "mallory", "laptop", own...), []byte(`"forged"`))              // 5: skipped
	fs.storeRaw("bob", h(contract.KindMsg, "bob", "phone", contract.HdrGroup, "friends"), []byte(`"g"`))  // 6: this device's
	fs.storeRaw("bob", h(contract.KindMsg, "bob", "laptop", contract.HdrGroup, "friends"), []byte(`"g"`)) // 7: out
	fs.store("bob", "alice", "a1")                                                                        // 8: out
	srv := testServer(t, testConfig(), fs, &fakeCursors{})
	s, ft := startedSession(t, srv, "bob", 0)
	waitFor(t, func() error {
		if got := len(ft.sent(t)); got != 4 {
			return fmt.Errorf("%d frames sent, want 4", got)
		}
		return nil
	})
	frames := ft.sent(t)
	var seqs []uint64
	for _, f := range frames {
		seqs = append(seqs, f.Seq)
	}
	if !slices.Equal(seqs, []uint64{1, 3, 7, 8}) {
		t.Fatalf("frames at %v, want 1 3 7 8", seqs)
	}
	if f := frames[0]; f.Type != protocol.TypeMsg || f.From != "bob" || f.Device != "laptop" || f.To != "alice" || f.SentSeq != 7 || string(f.Body) != `"hi"` {
		t.Fatalf("own message %+v", f)
	}
	if f := frames[1]; f.Type != protocol.TypeReadSync || f.Peer != "alice" || f.Device != "laptop" || f.ToSeq != 5 {
		t.Fatalf("read_sync %+v", f)
	}
	if f := frames[2]; f.Group != "friends" || f.Device != "laptop" || f.To != "" {
		t.Fatalf("own group message %+v", f)
	}
	if v := counted(t, srv.metrics, "switchboard_gateway_inbox_skipped_total", skipMalformed); v != 1 {
		t.Fatalf("malformed skips %v, want 1 (the forged copy)", v)
	}
	for _, q := range seqs {
		s.feed.acked(q)
	}
	req, through, ok := s.feed.ackedStretch()
	if !ok || through != 8 || !slices.Equal(req.Senders, []string{"alice"}) {
		t.Fatalf("acked stretch through %d (%v) names %v, want alice alone", through, ok, req.Senders)
	}
}
