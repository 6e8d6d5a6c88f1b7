package deploy

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// TestClusterSendOrderThroughStepDown streams sends from one session,
// many in flight at once, while the INBOX leader hands over. Sends whose
// PubAck the old leader never gave are stored again by the gateway, under
// the same dedup id, as soon as the new leader is known; the session
// publishes nothing newer until they are stored. So every send is answered
// "sent", the sequences "sent" gives rise in the order the frames were
// sent, and no send waits for the gateway to give up on a lost PubAck.
func TestClusterSendOrderThroughStepDown(t *testing.T) {
	c, setupJS := startClusterWithStreams(t)
	leader := c.WaitForLeader(t, 10*time.Second, nil, tk.StreamInfo(setupJS, contract.Inbox))
	others := c.Others(leader)
	admin, adminJS := others[0].Connect(t)
	tk.StartFunctionsURL(t, others[1].ClientURL)

	cfg := tk.TestConfig()
	cfg.SendRate, cfg.SendBurst = 100000, 100000
	// Long beside any PubAck on a busy machine (0.3–0.7 s seen), and
	// short of the 10 s a send has before it is given up, so a send
	// published again as overdue can only be one whose PubAck the
	// handover lost and the leader's election did not recover.
	cfg.PubAckWait = 4 * time.Second
	g := tk.StartGatewayURL(t, others[0].ClientURL, cfg)
	p := dialPipelined(t, g.URL, "alice", "phone")

	const total, window = 3000, 200
	var changedAt time.Time
	elected := make(chan error, 1)
	answers := p.sendAll(t, "bob", total, window, func(i int) {
		if i != total/3 {
			return
		}
		changedAt = time.Now()
		if err := tk.StepDown(admin, contract.Inbox, "", nil); err != nil {
			t.Error(err)
		}
		go func() {
			n, err := c.AwaitNewLeader(20*time.Second, leader, tk.StreamInfo(adminJS, contract.Inbox))
			if err == nil {
				t.Logf("INBOX led by %s %s after the step-down", n.Name, time.Since(changedAt).Round(time.Millisecond))
			}
			elected <- err
		}()
	})
	if err := <-elected; err != nil {
		t.Fatal(err)
	}
	var slowest time.Duration
	var prev uint64
	for i, a := range answers {
		if a.frame.Type != protocol.TypeSent {
			t.Fatalf("send %d answered %+v, want sent", i, *a.frame)
		}
		if a.frame.Seq <= prev {
			t.Fatalf("send %d stored at %d, after send %d at %d: out of send order", i, a.frame.Seq, i-1, prev)
		}
		prev = a.frame.Seq
		slowest = max(slowest, a.after)
	}
	m, err := g.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slowest send answered after %s; republished: %s", slowest.Round(time.Millisecond), republished(m))
	// A PubAck lost in the handover is recovered when the new leader is
	// known, not when a send's wait for it runs out.
	if n := metricValue(m, `switchboard_gateway_republished_total{reason="overdue"}`); n != 0 {
		t.Errorf("%v sends republished only after their PubAck was overdue", n)
	}
}

var republishedRE = regexp.MustCompile(`(?m)^switchboard_gateway_republished_total\{reason="(\w+)"\} (\S+)$`)

func republished(metrics string) string {
	out := ""
	for _, m := range republishedRE.FindAllStringSubmatch(metrics, -1) {
		out += m[1] + "=" + m[2] + " "
	}
	if out == "" {
		return "(not counted)"
	}
	return out
}

// metricValue is the value of the sample named exactly, or -1 when absent.
func metricValue(metrics, sample string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	m := re.FindStringSubmatch(metrics)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// pipelined is a client that speaks the wire protocol by hand and keeps
// many sends in flight, in an order it knows: the SDK resends on its own,
// and its callers' sends race each other.
type pipelined struct {
	ws *websocket.Conn
}

func dialPipelined(t *testing.T, url, user, device string) *pipelined {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(ctx, url, http.Header{"Authorization": {"Bearer " + tk.Token(t, user, device, time.Hour)}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if f, err := protocol.DecodeServer(data); err != nil || f.Type != protocol.TypeWelcome {
		t.Fatalf("first frame %q, want welcome", data)
	}
	return &pipelined{ws: ws}
}

// answer is how the gateway answered one send, and how long after it was
// written.
type answer struct {
	frame *protocol.Frame
	after time.Duration
}

// sendAll writes total sends to user `to` (ids m0000, m0001, ...) with at
// most window unanswered, calling before(i) ahead of the i-th, and returns
// the answers in send order.
func (p *pipelined) sendAll(t *testing.T, to string, total, window int, before func(i int)) []answer {
	t.Helper()
	answers := make([]answer, total)
	var mu sync.Mutex // guards written: the network orders it, the race detector cannot see that
	written := make([]time.Time, total)
	slots := make(chan struct{}, window)
	read := make(chan error, 1)
	go func() {
		got := 0
		for got < total {
			_ = p.ws.SetReadDeadline(time.Now().Add(60 * time.Second))
			_, data, err := p.ws.ReadMessage()
			if err != nil {
				read <- err
				return
			}
			f, err := protocol.DecodeServer(data)
			if err != nil || (f.Type != protocol.TypeSent && f.Type != protocol.TypeError) {
				continue // receipts, presence: not what this counts
			}
			var i int
			if _, err := fmt.Sscanf(f.ID, "m%d", &i); err != nil || i >= total || answers[i].frame != nil {
				read <- fmt.Errorf("unexpected answer %q", data)
				return
			}
			mu.Lock()
			answers[i] = answer{frame: f, after: time.Since(written[i])}
			mu.Unlock()
			got++
			<-slots
		}
		read <- nil
	}()
	for i := range total {
		if before != nil {
			before(i)
		}
		select {
		case slots <- struct{}{}:
		case err := <-read:
			t.Fatalf("after %d sends: %v", i, err)
		}
		id := fmt.Sprintf("m%04d", i)
		mu.Lock()
		written[i] = time.Now()
		mu.Unlock()
		_ = p.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := p.ws.WriteMessage(websocket.TextMessage, protocol.AppendSend(nil, id, to, tk.Body(id))); err != nil {
			t.Fatalf("write %s: %v", id, err)
		}
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	return answers
}
