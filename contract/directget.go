package contract

import (
	"errors"
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
