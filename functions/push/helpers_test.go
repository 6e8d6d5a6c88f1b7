package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// secretBody is every test message's body: it must never reach a webhook
// or a dead letter.
const secretBody = `"secret-body"`

// testTS is the Sb-Ts of test messages.
const testTS = 1795582349000

// call is one request the recording webhook received.
type call struct {
	N      Notification
	Raw    string
	Method string
	Auth   string
	CT     string
	Status int
}

// hook is a real HTTP server on loopback that records every request and
// answers with respond(n, prior), prior being how many calls for the same
// user and device came before this one. respond may block.
type hook struct {
	URL     string
	mu      sync.Mutex
	calls   []call
	respond func(n Notification, prior int) int
	arrived chan Notification // receives each notification as it arrives, when set
}

func newHook(t testing.TB, respond func(n Notification, prior int) int) *hook {
	t.Helper()
	h := &hook{respond: respond}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var n Notification
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&n); err != nil {
			t.Errorf("webhook got a body that is not a notification: %v: %s", err, raw)
		}
		h.mu.Lock()
		prior := 0
		for _, c := range h.calls {
			if c.N.User == n.User && c.N.Device == n.Device {
				prior++
			}
		}
		respond, arrived := h.respond, h.arrived
		h.mu.Unlock()
		if arrived != nil {
			arrived <- n
		}
		status := http.StatusOK
		if respond != nil {
			status = respond(n, prior)
		}
		h.mu.Lock()
		h.calls = append(h.calls, call{N: n, Raw: string(raw), Method: r.Method, Auth: r.Header.Get("Authorization"),
			CT: r.Header.Get("Content-Type"), Status: status})
		h.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

// Calls returns a copy of the calls so far.
func (h *hook) Calls() []call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]call(nil), h.calls...)
}

// count is how many calls user/device got, and how many were answered 2xx.
func (h *hook) count(user, device string) (all, ok int) {
	for _, c := range h.Calls() {
		if c.N.User == user && c.N.Device == device {
			all++
			if c.Status < 300 {
				ok++
			}
		}
	}
	return all, ok
}

// testConfig is a config with fast retries.
func testConfig(url string) Config {
	return Config{
		WebhookURL:    url,
		WebhookSecret: "hook-secret",
		Window:        2 * time.Second,
		Timeout:       5 * time.Second,
		BaseBackoff:   20 * time.Millisecond,
		MaxBackoff:    100 * time.Millisecond,
		MaxAttempts:   8,
	}
}

func startPush(t testing.TB, n *tk.NATS, cfg Config) *Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Start(ctx, n.Conn, n.JS, cfg, tk.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func kv(t testing.TB, js jetstream.JetStream, bucket string) jetstream.KeyValue {
	t.Helper()
	b, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// putDevices writes the user's DEVICES record as the gateway does.
func putDevices(t testing.TB, js jetstream.JetStream, user string, devices ...string) {
	t.Helper()
	type dev struct {
		Joined time.Time `json:"joined"`
		Start  uint64    `json:"start"`
		Stream time.Time `json:"stream"`
	}
	rec := struct {
		Devices map[string]dev `json:"devices"`
	}{map[string]dev{}}
	for _, d := range devices {
		rec.Devices[d] = dev{Joined: time.Now().UTC(), Stream: time.Now().UTC()}
	}
	b, _ := json.Marshal(rec)
	if _, err := kv(t, js, contract.DevicesKV).Put(context.Background(), user, b); err != nil {
		t.Fatal(err)
	}
}

// setOnline writes the device's lease as a gateway does and the user's
// PRESENCE record as the presence function does.
func setOnline(t testing.TB, js jetstream.JetStream, user, device string) {
	t.Helper()
	lease := fmt.Sprintf(`{"gateway":"gw","session":"s","since":%d}`, time.Now().UnixMilli())
	if _, err := kv(t, js, contract.PresenceKV).Put(context.Background(), "lease."+user+"."+device, []byte(lease)); err != nil {
		t.Fatal(err)
	}
	b := fmt.Sprintf(`{"devices":{%q:%d},"last_seen":%d}`, device, time.Now().UnixMilli(), time.Now().UnixMilli())
	if _, err := kv(t, js, contract.PresenceKV).Put(context.Background(), "user."+user, []byte(b)); err != nil {
		t.Fatal(err)
	}
}

// publish stores a chat message from→to as the gateway does and returns
// its stream sequence.
func publish(t testing.TB, js jetstream.JetStream, to, from, id string) uint64 {
	t.Helper()
	m := &nats.Msg{
		Subject: contract.InboxSubject(to),
		Header: nats.Header{
			contract.HdrMsgID:  {contract.MsgDedupID(from, id)},
			contract.HdrKind:   {contract.KindMsg},
			contract.HdrFrom:   {from},
			contract.HdrDevice: {"laptop"},
			contract.HdrID:     {id},
			contract.HdrTS:     {strconv.FormatInt(testTS, 10)},
		},
		Data: []byte(secretBody),
	}
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// waitDrained waits until the push consumer has settled every message
// stored in INBOX so far: none undelivered, none awaiting ack or retry.
func waitDrained(t testing.TB, js jetstream.JetStream, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	tk.WaitFor(t, timeout, func() error {
		s, err := js.Stream(ctx, contract.Inbox)
		if err != nil {
			return err
		}
		last := s.CachedInfo().State.LastSeq
		c, err := js.Consumer(ctx, contract.Inbox, "push")
		if err != nil {
			return err
		}
		ci := c.CachedInfo()
		if ci.NumPending != 0 || ci.NumAckPending != 0 || ci.AckFloor.Stream < last {
			return tk.Errorf("push consumer: pending %d, ack pending %d, ack floor %d of %d",
				ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, last)
		}
		return nil
	})
}

// deadLetters returns the DLQ stream's messages in order.
func deadLetters(t testing.TB, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, contract.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func wantJSON(n Notification) string {
	b, _ := json.Marshal(n)
	return string(b)
}
