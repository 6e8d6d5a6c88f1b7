package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StoredMsg is one message as a stream's leader holds it.
type StoredMsg struct {
	Subject  string    `json:"subject"`
	Sequence uint64    `json:"seq"`
	Header   []byte    `json:"hdrs"` // as stored, NATS/1.0 form
	Data     []byte    `json:"data"`
	Time     time.Time `json:"time"` // when it was stored
}

// APIError is the error of a JetStream API answer.
type APIError struct {
	Code    int    `json:"code"`
	ErrCode int    `json:"err_code"`
	Desc    string `json:"description"`
}

// ErrNoMsg is a stream holding no message where GetMsg looked. A stream
// that does not exist is another error.
var ErrNoMsg = errors.New("no such message")

// GetMsg reads one message of stream through the stream's leader
// ($JS.API.STREAM.MSG.GET): the one at seq, or with seq 0 the last on
// subject. Not a direct get, which any replica may answer, from a step
// behind the leader: a reader that decides from what it reads must see
// every write stored before it.
func GetMsg(ctx context.Context, nc *nats.Conn, stream string, seq uint64, subject string) (*StoredMsg, error) {
	req, _ := json.Marshal(struct {
		Seq           uint64 `json:"seq,omitempty"`
		LastBySubject string `json:"last_by_subj,omitempty"`
	}{seq, subject})
	m, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	var resp struct {
		Message *StoredMsg `json:"message"`
		Error   *APIError  `json:"error"`
	}
	switch err := json.Unmarshal(m.Data, &resp); {
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", stream, err)
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound),
		resp.Error == nil && resp.Message == nil:
		return nil, ErrNoMsg
	case resp.Error != nil:
		return nil, fmt.Errorf("read %s: %s (%d)", stream, resp.Error.Desc, resp.Error.ErrCode)
	}
	return resp.Message, nil
}
