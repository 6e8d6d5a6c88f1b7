package push

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A user's own messages in their inbox, copied there for their other
// devices (a 1:1 copy, and their own copy of a group message), wake
// nobody; a message from someone else after them does.
func TestOwnCopiesWakeNobody(t *testing.T) {
	n := tk.StartNATS(t)
	h := newHook(t, nil)
	svc := startPush(t, n, testConfig(h.URL))
	putDevices(t, n.JS, "alice", "phone", "laptop")
	for _, extra := range []nats.Header{{contract.HdrTo: {"bob"}, contract.HdrSentSeq: {"1"}}, {contract.HdrGroup: {"friends"}}} {
		hd := nats.Header{
			contract.HdrKind:   {contract.KindMsg},
			contract.HdrFrom:   {"alice"},
			contract.HdrDevice: {"phone"},
			contract.HdrID:     {"own"},
			contract.HdrTS:     {strconv.FormatInt(testTS, 10)},
		}
		for k, v := range extra {
			hd[k] = v
		}
		if _, err := n.JS.PublishMsg(context.Background(), &nats.Msg{Subject: contract.InboxSubject("alice"), Header: hd, Data: []byte(`"x"`)}); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, n.JS, "alice", "bob", "m1")
	waitDrained(t, n.JS, 10*time.Second)
	calls := h.Calls()
	if len(calls) != 2 || calls[0].N.MessageID != "m1" {
		t.Fatalf("calls %+v, want m1 to each of alice's devices", calls)
	}
	if st := svc.Stats(); st.Ignored != 2 || st.Pushed != 2 {
		t.Errorf("stats %+v, want the 2 own copies ignored", st)
	}
}
