package receipts_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// markers returns the read_sync markers in user's inbox, in order.
func (e *env) markers(t testing.TB, user string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := e.n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(contract.InboxSubject(user)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(contract.HdrKind) == contract.KindReadSync {
			out = append(out, m)
		}
		seq = m.Sequence + 1
	}
}

func (e *env) devices(t testing.TB, user string, names ...string) {
	t.Helper()
	ctx := context.Background()
	kv, err := e.n.JS.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		t.Fatal(err)
	}
	rec := contract.Devices{Devices: map[string]*contract.Device{}}
	for _, d := range names {
		rec.Devices[d] = &contract.Device{}
	}
	b, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, user, b); err != nil {
		t.Fatal(err)
	}
}

// A read that raises the position leaves one read_sync marker in the
// reader's inbox for a reader with another device; asked again, or a read
// that raises nothing, leaves none more; a reader with one device gets
// none.
func TestReadSyncMarkers(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	e.devices(t, "bob", "phone", "laptop")
	e.devices(t, "carol", "phone")
	read := func(reader string, seq uint64) {
		t.Helper()
		if err := e.call(t, contract.ReadSubject, contract.ReadRequest{Reader: reader, Device: "phone", Sender: "alice", Seq: seq}, nil); err != nil {
			t.Fatal(err)
		}
	}
	read("bob", 10)
	read("bob", 10) // asked again
	read("bob", 7)  // lower: the position stays
	read("bob", 12)
	read("carol", 10)
	ms := e.markers(t, "bob")
	if len(ms) != 2 {
		t.Fatalf("%d markers for bob, want 2 (to 10, to 12)", len(ms))
	}
	for i, want := range []string{"10", "12"} {
		h := ms[i].Header
		if h.Get(contract.HdrSeqTo) != want || h.Get(contract.HdrPeer) != "alice" || h.Get(contract.HdrFrom) != "bob" || h.Get(contract.HdrDevice) != "phone" {
			t.Fatalf("marker %d: %v, want alice's chat read to %s on bob's phone", i, h, want)
		}
	}
	if ms := e.markers(t, "carol"); len(ms) != 0 {
		t.Fatalf("%d markers for carol, who has one device", len(ms))
	}
	if ts := e.ticks(t, "alice"); len(ts) != 3 {
		t.Fatalf("%d read receipts for alice, want 3 (bob to 10 and 12, carol to 10)", len(ts))
	}
}

// A read in a group that raises the member's read position leaves one
// read_sync marker, with the group and the copy read, in the member's
// inbox when they have another device; asked again, or lower, or as a
// delivered position, none more; a member with one device gets none. The
// sender gets one group read receipt per rise of the group's lowest read
// position, the markers ticking nothing.
func TestGroupReadSyncMarkers(t *testing.T) {
	e := newEnv(t)
	e.instance(t)
	e.devices(t, "bob", "phone", "laptop")
	e.devices(t, "carol", "phone")
	makeGroup(t, e, "club", "alice", "bob", "carol")
	g1 := sendGroup(t, e, "club", "alice")
	g2 := sendGroup(t, e, "club", "alice")
	read := func(member string, seq, inbox uint64) {
		t.Helper()
		req := contract.GroupPositionRequest{Group: "club", Member: member, Device: "phone", Status: "read", Seq: seq, InboxSeq: inbox}
		if err := e.call(t, contract.GroupPositionSubject, req, nil); err != nil {
			t.Fatal(err)
		}
	}
	position(t, e, "club", "bob", "delivered", g2) // delivered: no marker
	read("bob", g1, 101)
	read("bob", g1, 101) // asked again
	read("carol", g2, 201)
	read("bob", g2, 102)
	read("bob", g1, 101) // lower: the position stays
	ms := e.markers(t, "bob")
	if len(ms) != 2 {
		t.Fatalf("%d markers for bob, want 2 (to 101, to 102)", len(ms))
	}
	for i, want := range []struct{ inbox, at uint64 }{{101, g1}, {102, g2}} {
		h := ms[i].Header
		if h.Get(contract.HdrGroup) != "club" || h.Get(contract.HdrPeer) != "" || h.Get(contract.HdrSeqTo) != fmt.Sprint(want.inbox) ||
			h.Get(contract.HdrGroupSeq) != fmt.Sprint(want.at) || h.Get(contract.HdrFrom) != "bob" || h.Get(contract.HdrDevice) != "phone" {
			t.Fatalf("marker %d: %v, want club read to %d (%d in the log) on bob's phone", i, h, want.inbox, want.at)
		}
	}
	if ms := e.markers(t, "carol"); len(ms) != 0 {
		t.Fatalf("%d markers for carol, who has one device", len(ms))
	}
	// carol read to g2 first, then bob to g1 and g2: two rises of the
	// group's lowest read position, and two receipts for alice.
	if got := fmt.Sprint(groupTicks(t, e, "alice")); got != fmt.Sprintf("[delivered %d..%d read %d..%d read %d..%d]", g1, g2, g1, g1, g2, g2) {
		t.Fatalf("alice's group receipts %s", got)
	}
}
