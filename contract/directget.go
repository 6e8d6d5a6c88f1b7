package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// DirectAnswer reads one answer to a batched direct get
// ($JS.API.DIRECT.GET.<stream> with "batch"): a stored message, with its
// sequence, or the end. At the end, more reports that the stream holds
// further matching messages (an end of batch whose Nats-Num-Pending is
// above 0); a 404 (nothing stored at or past the sequence asked) ends
// with none. Any other status is an error (503: nats.ErrNoResponders).
func DirectAnswer(m *nats.Msg) (seq uint64, end, more bool, err error) {
	switch m.Header.Get("Status") {
	case "":
	case "404":
		return 0, true, false, nil
	case "204":
		np, _ := strconv.ParseUint(m.Header.Get(HdrNumPend), 10, 64)
		return 0, true, np > 0, nil
	case "503":
		return 0, true, false, nats.ErrNoResponders
	default:
		return 0, true, false, errors.New("direct get: " + m.Header.Get("Status") + " " + m.Header.Get("Description"))
	}
	seq, err = strconv.ParseUint(m.Header.Get(HdrSequence), 10, 64)
	if err != nil {
		return 0, true, false, errors.New("direct get: answer without a sequence")
	}
	return seq, false, false, nil
}

// ErrBatchGap is a batched direct get whose answers came with one
// missing: each answer, and the end of the batch, names the sequence of
// the answer before it (Nats-Last-Sequence, 0 for the first), and one
// named was not received (dropped on the way: a slow subscription).
var ErrBatchGap = errors.New("direct get: an answer of the batch was lost on the way")

// DirectBatchChain checks that answer m of a batch, or its end, follows
// the answer received before it, at sequence prev (0: none yet). A 404
// ends a batch with nothing to name.
func DirectBatchChain(m *nats.Msg, prev uint64) error {
	if m.Header.Get("Status") == "404" {
		return nil
	}
	// The server appends it to the stored headers: the last one is its.
	vals := m.Header.Values(HdrLastSeq)
	if len(vals) == 0 {
		return ErrBatchGap
	}
	named, err := strconv.ParseUint(vals[len(vals)-1], 10, 64)
	if err != nil || named != prev {
		return ErrBatchGap
	}
	return nil
}

// LastPerSubject passes the last message of each subject that subjects
// match in stream, stored at or before upTo when that is not 0, to each:
// one batched direct get (multi_last; at most 1,024 subjects, the
// server's bound, and at most max answers), answered by any replica.
func LastPerSubject(ctx context.Context, nc *nats.Conn, stream string, subjects []string, upTo uint64, max int, each func(*nats.Msg) error) error {
	if len(subjects) == 0 {
		return nil
	}
	sub, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	body, _ := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Batch     int      `json:"batch"`
		UpToSeq   uint64   `json:"up_to_seq,omitempty"`
	}{subjects, max, upTo})
	if err := nc.PublishRequest(DirectGetSubject(stream), sub.Subject, body); err != nil {
		return err
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		switch st := m.Header.Get("Status"); st {
		case "":
			if err := each(m); err != nil {
				return err
			}
		case "204", "404":
			return nil // the end; nothing matched
		case "503":
			return fmt.Errorf("read %s: %w", stream, nats.ErrNoResponders)
		default:
			return fmt.Errorf("read %s: %s %s", stream, st, m.Header.Get("Description"))
		}
	}
}
