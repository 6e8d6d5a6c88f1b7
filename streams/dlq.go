package streams

import (
	"context"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers a dead letter carries besides the original's own.
const (
	HdrReason       = "Sb-Reason"        // why the function gave up
	HdrOrigStream   = "Sb-Origin-Stream" // where the message was
	HdrOrigSubject  = "Sb-Origin-Subject"
	HdrOrigSeq      = "Sb-Origin-Seq"
	HdrAttempts     = "Sb-Attempts"
	maxReasonLength = 512
)

// DeadLetter stores a copy of m, body included, on dlq.<function>.<last subject token>,
// with the reason and where it came from, for an operator to inspect with
// `nats stream view DLQ`. Its dedup id is the original's stream and
// sequence, so dead-lettering again after a crash stores one copy. The
// caller terminates m once this returns nil. It is for events and
// notifications, never for chat messages: their bodies must not be copied
// out of INBOX.
func DeadLetter(ctx context.Context, js jetstream.JetStream, function string, m jetstream.Msg, reason string) error {
	h := nats.Header{}
	for k, v := range m.Headers() {
		if k != HdrMsgID {
			h[k] = v
		}
	}
	if len(reason) > maxReasonLength {
		reason = reason[:maxReasonLength]
	}
	h.Set(HdrReason, reason)
	h.Set(HdrOrigSubject, m.Subject())
	dedup := "dlq:" + function + ":" + m.Subject()
	if meta, err := m.Metadata(); err == nil {
		h.Set(HdrOrigStream, meta.Stream)
		h.Set(HdrOrigSeq, strconv.FormatUint(meta.Sequence.Stream, 10))
		h.Set(HdrAttempts, strconv.FormatUint(meta.NumDelivered, 10))
		dedup = "dlq:" + function + ":" + meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	h.Set(HdrMsgID, dedup)
	tail := m.Subject()
	if i := strings.LastIndexByte(tail, '.'); i >= 0 {
		tail = tail[i+1:]
	}
	if tail == "" || strings.ContainsAny(tail, "*> \t\r\n") {
		tail = "unknown"
	}
	_, err := js.PublishMsg(ctx, &nats.Msg{Subject: DLQPrefix + function + "." + tail, Header: h, Data: m.Data()})
	return err
}
