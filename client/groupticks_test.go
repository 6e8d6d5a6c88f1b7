package client

import (
	"fmt"
	"testing"

	"github.com/switchboard-im/switchboard/protocol"
)

// A group receipt ticks this client's messages in that group's range,
// each once, never back, and none of its messages to users with the
// same seqs.
func TestGroupReceiptTicksOwnGroupMessages(t *testing.T) {
	tk := newTicks()
	tk.sent(groupKey("club"), "g1", 10)
	tk.sent(groupKey("club"), "g2", 12)
	tk.sent(groupKey("other"), "o1", 11)
	tk.sent("bob", "u1", 11)
	apply := func(status string, from, to uint64) string {
		ids, _ := tk.apply(&protocol.Frame{Type: protocol.TypeReceipt, Status: status, Group: "club", By: "carol", FromSeq: from, ToSeq: to})
		return fmt.Sprint(ids)
	}
	if got := apply(protocol.StatusDelivered, 9, 11); got != "[g1]" {
		t.Fatalf("delivered 9..11 ticked %s, want [g1]", got)
	}
	if got := apply(protocol.StatusDelivered, 9, 12); got != "[g2]" {
		t.Fatalf("delivered 9..12 ticked %s, want [g2] (g1 once)", got)
	}
	if got := apply(protocol.StatusRead, 10, 12); got != "[g1 g2]" {
		t.Fatalf("read ..12 ticked %s, want [g1 g2]", got)
	}
	if got := apply(protocol.StatusDelivered, 1, 12); got != "[]" {
		t.Fatalf("a delivered after read ticked %s", got)
	}
	// A receipt that came before its "sent": the tick is handed over then.
	apply(protocol.StatusRead, 13, 20)
	if st := tk.sent(groupKey("club"), "g3", 15); st != protocol.StatusRead {
		t.Fatalf("g3 sent after its read: %q", st)
	}
	if tk.seqOf("g1") != 0 || tk.seqOf("u1") != 11 {
		t.Fatal("Status by id must know sends to users only")
	}
}
