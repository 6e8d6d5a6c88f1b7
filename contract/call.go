package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// ErrUnavailable is a function that did not answer: no instance is
// running, or none answered in time. The caller may try again later.
var ErrUnavailable = errors.New("contract: function unavailable")

// FnError is a function's refusal, a micro error: Status is its code (an
// HTTP status), Code the function's own error code when its error data
// carries one ({"code":...,"message":...}), and Message its description.
type FnError struct {
	Status  int
	Code    string
	Message string
}

func (e *FnError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("contract: function refused (%d %s): %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("contract: function refused (%d): %s", e.Status, e.Message)
}

// Call asks a worker function: it sends req as JSON on subject and
// decodes the JSON answer into reply (nil: ignore the body). A refusal is
// a *FnError; a function that is not running or does not answer before
// ctx ends is ErrUnavailable.
func Call(ctx context.Context, nc Requester, subject string, req, reply any) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	m, err := nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: no instance of %s is running", ErrUnavailable, subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: %s did not answer in time", ErrUnavailable, subject)
	case err != nil:
		return fmt.Errorf("contract: request %s: %w", subject, err)
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		e := &FnError{Message: m.Header.Get(micro.ErrorHeader)}
		e.Status, _ = strconv.Atoi(code)
		var body struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(m.Data, &body) == nil && body.Code != "" {
			e.Code, e.Message = body.Code, body.Message
		}
		return e
	}
	if reply == nil {
		return nil
	}
	if err := json.Unmarshal(m.Data, reply); err != nil {
		return fmt.Errorf("contract: answer on %s: %w", subject, err)
	}
	return nil
}
