package client

import (
	"context"
	"slices"

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

type groupSeq struct {
	group string
	seq   uint64
}

type groupStatusResult struct {
	st  GroupStatus
	err error
}

// GroupStatus asks for the status of the message this user sent in group
// that is stored at seq in the group's log (its Sent.Seq). Only the
// sender is answered: anyone else gets a *ServerError with code
// unknown_seq.
func (c *Client) GroupStatus(ctx context.Context, group string, seq uint64) (GroupStatus, error) {
	if !protocol.ValidID(group) {
		return GroupStatus{}, ErrBadID
	}
	k := groupSeq{group, seq}
	ch := make(chan groupStatusResult, 1)
	c.mu.Lock()
	c.groupStatusWait[k] = append(c.groupStatusWait[k], ch)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.groupStatusWait[k] = slices.DeleteFunc(c.groupStatusWait[k], func(w chan groupStatusResult) bool { return w == ch })
		if len(c.groupStatusWait[k]) == 0 {
			delete(c.groupStatusWait, k)
		}
		c.mu.Unlock()
	}()
	c.writeCurrent(protocol.AppendStatusGroup(nil, group, seq))
	select {
	case r := <-ch:
		return r.st, r.err
	case <-ctx.Done():
		return GroupStatus{}, ctx.Err()
	case <-c.ctx.Done():
		return GroupStatus{}, ErrClosed
	}
}

// resolveGroupStatus hands a group status answer to the calls waiting
// for it.
func (c *Client) resolveGroupStatus(group string, seq uint64, r groupStatusResult) {
	k := groupSeq{group, seq}
	c.mu.Lock()
	waiting := c.groupStatusWait[k]
	delete(c.groupStatusWait, k)
	c.mu.Unlock()
	for _, ch := range waiting {
		ch <- r
	}
}

// failGroupStatus hands an error frame about seq to the GroupStatus
// calls for seq in group ("": in any group, for an error frame from a
// gateway that names none), and reports whether there were any.
func (c *Client) failGroupStatus(group string, seq uint64, err error) bool {
	c.mu.Lock()
	var waiting []chan groupStatusResult
	for k, ws := range c.groupStatusWait {
		if k.seq == seq && (group == "" || k.group == group) {
			waiting = append(waiting, ws...)
			delete(c.groupStatusWait, k)
		}
	}
	c.mu.Unlock()
	for _, ch := range waiting {
		ch <- groupStatusResult{err: err}
	}
	return len(waiting) > 0
}
