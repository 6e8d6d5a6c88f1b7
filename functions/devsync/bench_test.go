package devsync_test

import (
	"fmt"
	"testing"
	"time"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// BenchmarkCopies is one instance copying a backlog of messages from
// senders with two devices: a stored copy each, and reads of DEVICES
// shared by the messages that wait for one at the same time.
func BenchmarkCopies(b *testing.B) {
	n := tk.StartStreams(b, b.TempDir())
	tk.StartSync(b, n).Stop() // the durable starts from new messages: make it first
	const senders = 64
	for i := range senders {
		register(b, n, fmt.Sprintf("s%d", i), map[string]uint64{"phone": 0, "laptop": 1})
	}
	for i := range b.N {
		store(b, n, fmt.Sprintf("s%d", i%senders), "phone", "bob", fmt.Sprintf("m%d", i))
	}
	s := tk.StartSync(b, n)
	// The stopped instance's pin lapses first: time from the first copy.
	tk.WaitFor(b, time.Minute, func() error {
		if s.Service.Stats().Copied == 0 {
			return tk.Errorf("not pinned yet")
		}
		return nil
	})
	b.ResetTimer()
	start, first := time.Now(), s.Service.Stats().Copied
	tk.WaitFor(b, time.Minute, func() error {
		if c := s.Service.Stats().Copied; c < int64(b.N) {
			return tk.Errorf("%d of %d copied", c, b.N)
		}
		return nil
	})
	b.ReportMetric(float64(int64(b.N)-first)/time.Since(start).Seconds(), "copies/s")
	b.ReportMetric(float64(s.Service.Stats().DeviceReads)/float64(b.N), "device-reads/msg")
}
