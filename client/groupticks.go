package client

import (
	"context"

	"github.com/switchboard-im/switchboard/protocol"
)

// GroupStatus is a group message's "message info": each member's ticks
// (this user left out), and whether every one of them has it, and has
// read it.
type GroupStatus struct {
	Members      map[string]protocol.Ticks
	AllDelivered bool
	AllRead      bool
}

// GroupStatus asks for the status of the message this user sent in group
// that is stored at seq in the group's log (its Sent.Seq). Only the
// sender is answered: anyone else gets a *ServerError with code
// unknown_seq. A refusal for now is asked again, as for Status.
func (c *Client) GroupStatus(ctx context.Context, group string, seq uint64) (GroupStatus, error) {
	if !protocol.ValidID(group) {
		return GroupStatus{}, ErrBadID
	}
	r, err := c.askStatus(ctx, statusKey{group, seq}, protocol.AppendStatusGroup(nil, group, seq))
	if err != nil {
		return GroupStatus{}, err
	}
	return GroupStatus{Members: r.recipients, AllDelivered: r.allDelivered, AllRead: r.allRead}, nil
}
