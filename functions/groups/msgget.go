package groups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/switchboard-im/switchboard/contract"
)

// msgGetRequest asks GROUPS for one stored message, by sequence or as
// the last on a subject.
type msgGetRequest struct {
	Seq           uint64
	LastBySubject string
}

// storedMsg is a message as GROUPS stored it.
type storedMsg = contract.StoredMsg

var errNoMsg = contract.ErrNoMsg

// getMsg reads a message through the stream's leader (not a direct get,
// which a replica may answer from behind the log): a decision or a
// fan-out must see every event stored before it.
func (s *Service) getMsg(ctx context.Context, req msgGetRequest) (*storedMsg, error) {
	m, err := contract.GetMsg(ctx, s.nc, contract.GroupsStream, req.Seq, req.LastBySubject)
	if err != nil && !errors.Is(err, errNoMsg) {
		return nil, fmt.Errorf("groups: %w", err)
	}
	return m, err
}

// deleteMsg takes the message at seq out of GROUPS (one already gone is
// no error).
func (s *Service) deleteMsg(ctx context.Context, seq uint64) error {
	data, _ := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NoErase bool   `json:"no_erase"`
	}{seq, true})
	m, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.DELETE."+contract.GroupsStream, data)
	if err != nil {
		return fmt.Errorf("groups: delete %d from GROUPS: %w", seq, err)
	}
	var resp struct {
		Success bool               `json:"success"`
		Error   *contract.APIError `json:"error"`
	}
	switch err := json.Unmarshal(m.Data, &resp); {
	case err != nil:
		return fmt.Errorf("groups: delete %d from GROUPS: %w", seq, err)
	case resp.Error != nil:
		// Deleted before (a redelivery, another instance) is done; the
		// server says so in more than one way, so look.
		if _, gerr := s.getMsg(ctx, msgGetRequest{Seq: seq}); errors.Is(gerr, errNoMsg) {
			return nil
		}
		return fmt.Errorf("groups: delete %d from GROUPS: %s (%d)", seq, resp.Error.Desc, resp.Error.ErrCode)
	}
	return nil
}
