package streams

import (
	"context"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// DeadLetter stores a copy of m, body included, on dlq.<function>.<last subject token>,
// with the reason and where it came from, for an operator to inspect with
// `nats stream view DLQ`. Its dedup id is the original's stream and
// sequence, so dead-lettering again after a crash stores one copy. The
// caller terminates m once this returns nil. It is for events and
// notifications, never for chat messages: their bodies must not be copied
// out of INBOX.
// maxReasonLength bounds the reason a dead letter carries.
const maxReasonLength = 512

func DeadLetter(ctx context.Context, js jetstream.JetStream, function string, m jetstream.Msg, reason string) error {
	h := nats.Header{}
	for k, v := range m.Headers() {
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			// A directive to the server (a per-message TTL, an expected
			// last sequence, a rollup, a dedup id): DLQ would obey it
			// or, as for a TTL, refuse the copy. Kept for the operator
			// under another name.
			h["Orig-"+k] = v
			continue
		}
		h[k] = v
	}
	if len(reason) > maxReasonLength {
		reason = reason[:maxReasonLength]
	}
	h.Set(contract.HdrReason, reason)
	h.Set(contract.HdrOrigSubject, m.Subject())
	dedup := "dlq:" + function + ":" + m.Subject()
	if meta, err := m.Metadata(); err == nil {
		h.Set(contract.HdrOrigStream, meta.Stream)
		h.Set(contract.HdrOrigSeq, strconv.FormatUint(meta.Sequence.Stream, 10))
		h.Set(contract.HdrAttempts, strconv.FormatUint(meta.NumDelivered, 10))
		dedup = "dlq:" + function + ":" + meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	h.Set(contract.HdrMsgID, dedup)
	tail := m.Subject()
	if i := strings.LastIndexByte(tail, '.'); i >= 0 {
		tail = tail[i+1:]
	}
	if tail == "" || strings.ContainsAny(tail, "*> \t\r\n") {
		tail = "unknown"
	}
	_, err := js.PublishMsg(ctx, &nats.Msg{Subject: contract.DLQPrefix + function + "." + tail, Header: h, Data: m.Data()})
	return err
}
