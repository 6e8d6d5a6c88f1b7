package web_test

import (
	"testing"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// A message this user sent from another device is a 'message' event with
// to and sentSeq, whose ticks come as 'receipt' events; a read made on
// another device is a 'read_sync' event. Both are acked.
func TestSDKOwnMessagesAndReadSyncs(t *testing.T) {
	s := newScript(t)
	pg, c := startSDK(t, s, "")
	js(pg, `c.on('read_sync', (d) => log.push(['read_sync', d])); c.on('message', (m) => c.ack(m.seq))`)
	c.write(protocol.AppendOwnMsg(nil, "a1", "alice", "laptop", "bob", 20, 12, 1795582349000, []byte(`"hi"`), nil))
	c.expect(t, protocol.TypeAck, 20)
	c.write(protocol.AppendReceipt(nil, protocol.StatusDelivered, "bob", "phone", 12, 12, 21, 1795582350000))
	c.expect(t, protocol.TypeAck, 21)
	c.write(protocol.AppendReadSync(nil, "bob", "phone", 19, 22, 1795582351000))
	c.expect(t, protocol.TypeAck, 22)
	got := tk.Eval[string](pg, `JSON.stringify(log.filter(([t]) => t !== 'connect').map(([t, d]) =>
		t === 'message' ? ['message', d.id, d.from, d.device, d.to, d.sentSeq, d.seq] :
		t === 'receipt' ? ['receipt', d.id, d.status, d.by, d.seq] : [t, d.peer, d.device, d.seq]))`)
	want := `[["message","a1","alice","laptop","bob",12,20],["receipt","a1","delivered","bob",12],["read_sync","bob","phone",19]]`
	if got != want {
		t.Fatalf("events:\n%s\nwant\n%s", got, want)
	}
}
