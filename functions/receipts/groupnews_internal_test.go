package receipts

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heldMsg records what is done with a change of a group's record.
type heldMsg struct {
	jetstream.Msg
	subject string
	mu      sync.Mutex
	did     []string
}

func (m *heldMsg) Subject() string { return m.subject }
func (m *heldMsg) note(s string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.did = append(m.did, s)
	return nil
}
func (m *heldMsg) Ack() error        { return m.note("ack") }
func (m *heldMsg) Nak() error        { return m.note("nak") }
func (m *heldMsg) InProgress() error { return m.note("wip") }
func (m *heldMsg) done() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.did...)
}

// A change whose settle the stop cuts short is handed back for another
// instance, at its first attempt and at its last: not kept until the ack
// wait, and never acked unsettled.
func TestGroupNewsStopDuringSettleHandsBack(t *testing.T) {
	for _, attempt := range []int{0, groupNewsAttempts - 1} {
		started := make(chan struct{})
		n := newGroupNews(func(ctx context.Context, gid string) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
		m := &heldMsg{subject: "$KV.GROUP_INFO.g1"}
		n.retry("g1", attempt, []jetstream.Msg{m})
		stop := make(chan struct{})
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			n.run(stop, time.Minute, func(string, int, error) {})
		}()
		<-started
		close(stop)
		<-ran
		if got := m.done(); len(got) != 1 || got[0] != "nak" {
			t.Errorf("attempt %d: the change in hand at the stop got %v, want [nak] (handed back)", attempt, got)
		}
	}
}
