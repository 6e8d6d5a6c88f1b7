package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

func TestMetricsCountWhatHappened(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	alice := tk.Dial(t, g.URL, "alice", "phone")
	bob := tk.Dial(t, g.URL, "bob", "phone")
	send(t, alice, "bob", "m1", "hi")
	m := tk.RecvMsg(t, bob, wait)
	bob.Ack(m.Seq)
	tk.RecvReceipt(t, alice, wait)
	bob.Ack(999)                                         // answered unknown_seq
	resp, err := http.Get("http://" + g.Addr + "/v1/ws") // refused: no token
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	tk.WaitFor(t, wait, func() error {
		resp, err := http.Get("http://" + g.Addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body := string(b)
		for _, want := range []string{
			"switchboard_gateway_sessions 2",
			"switchboard_gateway_sends_stored_total 1",
			`switchboard_gateway_frames_in_total{type="send"} 1`,
			`switchboard_gateway_frames_in_total{type="ack"} 3`, // bob's two, alice's receipt ack
			`switchboard_gateway_error_frames_total{code="unknown_seq"} 1`,
			`switchboard_gateway_error_frames_total{code="bad_json"} 0`,
			`switchboard_gateway_handshakes_refused_total{code="no_token"} 1`,
			"switchboard_gateway_deliveries_total 2",
			"go_goroutines",
		} {
			if !strings.Contains(body, want) {
				return tk.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
}
