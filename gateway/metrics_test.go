package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
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
	carol := connectRaw(t, g, "carol", "phone")
	carol.write(`{"type":"ack","seq":999}`)
	if f := carol.expectError(protocol.ErrUnknownSeq, "", 999); f.For != protocol.TypeAck {
		t.Fatalf("refusal for %q, want ack", f.For)
	}
	_ = carol.ws.Close()
	resp, err := http.Get("http://" + g.Addr + "/v1/ws") // refused: no token
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	tk.WaitFor(t, wait, func() error {
		body, err := g.Metrics()
		if err != nil {
			return err
		}
		for _, want := range []string{
			"switchboard_gateway_sessions 2",
			"switchboard_gateway_sends_stored_total 1",
			`switchboard_gateway_frames_in_total{type="send"} 1`,
			`switchboard_gateway_frames_in_total{type="ack"} 3`, // bob's, carol's, alice's receipt ack
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

// Metrics are served on their own listener only: the public WebSocket
// listener answers 404 for them, and the metrics listener serves nothing
// else.
func TestMetricsAreNotOnThePublicListener(t *testing.T) {
	n := tk.StartNATS(t)
	g := tk.StartGateway(t, n, tk.TestConfig())
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + g.Addr + gateway.PathMetrics); code != http.StatusNotFound || strings.Contains(body, "switchboard_gateway") {
		t.Fatalf("GET /metrics on the WebSocket listener: %d %.80q, want 404 and no metrics", code, body)
	}
	if code, body := get(g.MetricsURL); code != http.StatusOK || !strings.Contains(body, "switchboard_gateway_sessions 0") {
		t.Fatalf("GET %s: %d %.80q, want the metrics", g.MetricsURL, code, body)
	}
	base := strings.TrimSuffix(g.MetricsURL, gateway.PathMetrics)
	for _, path := range []string{gateway.PathWS, gateway.PathHealthz, "/"} {
		if code, _ := get(base + path); code != http.StatusNotFound {
			t.Errorf("GET %s on the metrics listener: %d, want 404", path, code)
		}
	}
}
