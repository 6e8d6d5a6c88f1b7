package gateway_test

import (
	"strconv"
	"testing"

	"github.com/switchboard-im/switchboard/gateway/protocol"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A browser fails a connection on a text frame that is not valid UTF-8
// (RFC 6455 §8.1), so one such frame must never reach a recipient: if it
// did, the message would never be acked and would come first again on
// every reconnect. The raw clients here check every frame they read.

// A text frame that is not valid UTF-8 fails its connection with 1007
// before anything in it is acted on: nothing is stored, and the would-be
// recipient's next message is one sent afterwards.
func TestInvalidUTF8FrameClosesWith1007AndStoresNothing(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	victim := connectRaw(t, g, "victim", "browser")
	alice := tk.Dial(t, g.URL, "alice", "phone")

	for i, frame := range []string{
		"{\"type\":\"send\",\"id\":\"bad\",\"to\":\"victim\",\"body\":\"\xff\"}",
		"{\"type\":\"send\",\"id\":\"bad2\",\"to\":\"victim\",\"body\":\"ok\",\"x\":\"\xc3\x28\"}",
	} {
		mallory := connectRaw(t, g, "mallory", "d"+strconv.Itoa(i))
		mallory.write(frame)
		if frames := mallory.expectClose(protocol.CloseInvalidData, "*"); len(frames) != 0 {
			t.Fatalf("frame %d: answered %+v before the close, want nothing", i, *frames[0])
		}
	}
	// The fence: sent after both closes, it must be the first message the
	// victim gets.
	s := send(t, alice, "victim", "fence", "after")
	if f := victim.next(); f.Type != protocol.TypeMsg || f.ID != "fence" || f.Seq != s.Seq {
		t.Fatalf("victim got %+v, want the fence message (seq %d)", *f, s.Seq)
	}
}
