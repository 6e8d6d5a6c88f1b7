package push

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A message that woke nobody holds no window. bob is offline; his phone
// settled m1 (read it, then left, before the function came to m1), so m1
// rightly wakes nobody. m2 then lands and the phone lacks it: it is woken,
// not coalesced behind m1.
func TestMessageThatWokeNobodyOpensNoWindow(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	cfg := testConfig(h.URL)
	cfg.Window = 30 * time.Second
	putDevices(t, n.JS, "bob", "phone")
	startPush(t, n, cfg).Stop() // the durable exists; the function lags behind

	seq1 := publish(t, n.JS, "bob", "alice", "m1")
	st, err := n.JS.Stream(context.Background(), contract.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	// The phone's cursor is past m1, as a gateway saves it when the session ends.
	cur := contract.Cursor{Floor: seq1, Stream: st.CachedInfo().Created.UnixNano()}
	if _, err := kv(t, n.JS, contract.CursorsKV).Put(context.Background(), contract.CursorKey("bob", "phone"), cur.Encode()); err != nil {
		t.Fatal(err)
	}
	svc := startPush(t, n, cfg)
	waitDrained(t, n.JS, 10*time.Second)
	if all, _ := h.count("bob", "phone"); all != 0 {
		t.Fatalf("phone woken for m1 it had: %d", all)
	}

	seq2 := publish(t, n.JS, "bob", "alice", "m2")
	waitDrained(t, n.JS, 10*time.Second)
	if all, _ := h.count("bob", "phone"); all != 1 {
		e, _ := kv(t, n.JS, contract.PushKV).Get(context.Background(), "bob")
		var claim string
		if e != nil {
			claim = string(e.Value())
		}
		t.Fatalf("phone lacks m2 (seq %d) and got %d pushes; stats %+v; claim %s", seq2, all, svc.Stats(), claim)
	}
}
