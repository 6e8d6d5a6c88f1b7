package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

// Group is a group as the server answered a group operation: as it is
// after the operation.
type Group struct {
	ID        string
	Name      string
	CreatedBy string
	Created   time.Time
	// Members are in the order they joined, the longest-standing first.
	Members []protocol.GroupMember
	// History is how many of the group's latest messages a member added
	// gets (SetGroupHistory; 0: none).
	History int
}

// IsMember reports whether user is one of g's members.
func (g Group) IsMember(user string) bool {
	for _, m := range g.Members {
		if m.User == user {
			return true
		}
	}
	return false
}

// IsAdmin reports whether user is one of g's admins.
func (g Group) IsAdmin(user string) bool {
	for _, m := range g.Members {
		if m.User == user {
			return m.Admin
		}
	}
	return false
}

// ErrNoAnswer ends the wait of a group operation whose connection was
// lost before its answer came; GroupOp then asks again on the next
// connection, under the same request id.
var ErrNoAnswer = errors.New("client: the connection was lost before the answer; the operation may have been applied")

// groupResult is the answer to a request asked by id (request): a group
// operation's, a list's or a settings change's.
type groupResult struct {
	g        Group
	list     []GroupEntry // a list's answer
	settings Settings     // a settings change's
	err      error
	// retry is how long the server asked to wait before asking again
	// (retry_ms of a retryable refusal; 0: the client's backoff).
	retry time.Duration
}

// GroupOp asks for group operation op (protocol.GroupCreate, ...) on
// group, with the name and users that op takes, and returns the group as
// it is after it. A refusal is a *ServerError whose Code says why
// (protocol.ErrNotAdmin, protocol.ErrUnknownGroup, ...). An operation
// whose connection is lost before its answer, or that is answered with a
// retryable code (unavailable, rate_limited), is asked again, under the
// same request id, until it is answered or ctx ends: the server answers
// a repeat of a change it stored with the group and applies it once, so
// a lost answer never turns into already_member or group_exists. Asked
// while the client is reconnecting, it waits for the connection (or ctx).
// A frame larger than the gateway takes (more than 256 users, or past its
// max_frame) fails with ErrTooLarge, unwritten; Close ends it with the
// close's error.
func (c *Client) GroupOp(ctx context.Context, op, group, name string, users []string) (Group, error) {
	if !protocol.ValidID(group) {
		return Group{}, ErrBadID
	}
	for _, u := range users {
		if !protocol.ValidID(u) {
			return Group{}, ErrBadID
		}
	}
	if len(users) > protocol.MaxGroupUsersPerFrame {
		return Group{}, ErrTooLarge
	}
	r, err := c.request(ctx, protocol.Frame{Type: protocol.TypeGroup, Op: op, Group: group, Name: name, Users: users})
	if err != nil {
		return Group{}, err
	}
	return r.g, r.err
}

// GroupEntry is one of this user's groups, as Groups lists them.
type GroupEntry = protocol.GroupEntry

// Groups lists the groups this user is in, by id, with each one's name
// and Since, the place in the group's log where the user joined: what a
// device added later needs to show the user's groups before any of them
// says anything. It is asked again like GroupOp's operations. A group
// joined or left a moment ago may be missing or still listed, for as long
// as its change takes to reach the members (the change's system message
// comes after it is listed).
func (c *Client) Groups(ctx context.Context) ([]GroupEntry, error) {
	r, err := c.request(ctx, protocol.Frame{Type: protocol.TypeGroup, Op: protocol.GroupList})
	if err != nil {
		return nil, err
	}
	return r.list, r.err
}

// requestID is a new request id of this client's.
func (c *Client) requestID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groupWait == nil {
		c.groupWait = map[string]chan groupResult{}
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.groupPrefix = "q" + hex.EncodeToString(b[:]) + "-"
	}
	c.groupNext++
	return c.groupPrefix + strconv.FormatUint(c.groupNext, 10)
}

// request asks frame f (a group or settings frame; its id set here
// unless it has one) until it is answered, as GroupOp says.
func (c *Client) request(ctx context.Context, f protocol.Frame) (groupResult, error) {
	// Stop asking when the client closes, even while waiting to ask again.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.ctx, cancel)()
	if f.ID == "" {
		f.ID = c.requestID()
	}
	id := f.ID
	b, _ := json.Marshal(f)
	// ended is why asking stopped: the client's close, else err (ctx's).
	ended := func(err error) (groupResult, error) {
		if c.ctx.Err() != nil {
			return groupResult{}, c.closedErr()
		}
		return groupResult{}, err
	}
	for n := 1; ; n++ {
		r, err := c.groupAsk(ctx, id, b)
		if err != nil {
			return ended(err)
		}
		var se *ServerError
		switch {
		case errors.Is(r.err, ErrNoAnswer):
			continue // asked again on the next connection
		case errors.As(r.err, &se) && retryable(se.Code):
			d := r.retry
			if d <= 0 {
				d = retryWait(n, c.opts.MinBackoff, c.opts.MaxBackoff)
			}
			if !c.hooks.wait(ctx, d) {
				return ended(ctx.Err())
			}
			continue
		}
		return r, nil
	}
}

// groupAsk writes group frame b, request id, on the connection (waiting
// for one while reconnecting) and waits for its answer, or ErrNoAnswer if
// the connection goes first. The error is ctx's, or the client's close.
func (c *Client) groupAsk(ctx context.Context, id string, b []byte) (groupResult, error) {
	ch := make(chan groupResult, 1)
	c.mu.Lock()
	for c.conn == nil && c.closeErr == nil {
		// Reconnecting: wait for the next connection.
		down := c.down
		c.mu.Unlock()
		select {
		case <-down:
		case <-ctx.Done():
			return groupResult{}, ctx.Err()
		case <-c.ctx.Done():
		}
		c.mu.Lock()
	}
	if c.closeErr != nil {
		err := c.closeErr
		c.mu.Unlock()
		return groupResult{}, err
	}
	conn := c.conn
	if len(b) > c.maxFrame {
		// Written, it would close the connection (1009), and be asked
		// again on every new one.
		c.mu.Unlock()
		return groupResult{}, ErrTooLarge
	}
	c.groupWait[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.groupWait[id] == ch {
			delete(c.groupWait, id)
		}
		c.mu.Unlock()
	}()
	if err := c.write(conn, b); err != nil {
		// The read loop sees the close, detaches the connection and
		// ends this wait with ErrNoAnswer.
		conn.Close()
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return groupResult{}, ctx.Err()
	case <-c.ctx.Done():
		return groupResult{}, ErrClosed
	}
}

// CreateGroup makes group, named name, with this user as its first member
// and admin and users as the other members.
func (c *Client) CreateGroup(ctx context.Context, group, name string, users ...string) (Group, error) {
	return c.GroupOp(ctx, protocol.GroupCreate, group, name, users)
}

// RenameGroup renames group (admins only).
func (c *Client) RenameGroup(ctx context.Context, group, name string) (Group, error) {
	return c.GroupOp(ctx, protocol.GroupRename, group, name, nil)
}

// SetGroupHistory sets how many of group's latest messages a member
// added from now on gets, 0 to protocol.MaxGroupHistory (admins only; 0,
// a new group's setting, gives none, as a new device gets none). The
// change is a system message in the group. It is asked again like
// GroupOp's operations.
func (c *Client) SetGroupHistory(ctx context.Context, group string, n int) (Group, error) {
	if !protocol.ValidID(group) {
		return Group{}, ErrBadID
	}
	r, err := c.request(ctx, protocol.Frame{Type: protocol.TypeGroup, Op: protocol.GroupHistory, Group: group, History: &n})
	if err != nil {
		return Group{}, err
	}
	return r.g, r.err
}

// AddMembers adds users to group (admins only).
func (c *Client) AddMembers(ctx context.Context, group string, users ...string) (Group, error) {
	return c.GroupOp(ctx, protocol.GroupAdd, group, "", users)
}

// RemoveMembers removes users from group (admins only).
func (c *Client) RemoveMembers(ctx context.Context, group string, users ...string) (Group, error) {
	return c.GroupOp(ctx, protocol.GroupRemove, group, "", users)
}

// PromoteMembers makes members of group admins (admins only).
func (c *Client) PromoteMembers(ctx context.Context, group string, users ...string) (Group, error) {
	return c.GroupOp(ctx, protocol.GroupPromote, group, "", users)
}

// DemoteMembers makes admins of group plain members (admins only).
func (c *Client) DemoteMembers(ctx context.Context, group string, users ...string) (Group, error) {
	return c.GroupOp(ctx, protocol.GroupDemote, group, "", users)
}

// LeaveGroup takes this user out of group.
func (c *Client) LeaveGroup(ctx context.Context, group string) (Group, error) {
	return c.GroupOp(ctx, protocol.GroupLeave, group, "", nil)
}

// GroupInfo returns group as it is (members only).
func (c *Client) GroupInfo(ctx context.Context, group string) (Group, error) {
	return c.GroupOp(ctx, protocol.GroupInfo, group, "", nil)
}

// SendGroup stores body for group's members, under the client message id,
// and returns once the server confirms it is stored in the group's log
// (Sent.Seq is its place there). It shares Send's order, outbox and
// resends: a group send and a send to a user made after it are stored
// after it. A refusal is a *ServerError (protocol.ErrNotMember,
// protocol.ErrUnknownGroup). Its receipts are the group's (Receipt.Group
// set): delivered once every other member has it, read once every one
// read it; GroupStatus gives each member's ticks.
func (c *Client) SendGroup(ctx context.Context, group, id string, body json.RawMessage) (Sent, error) {
	if !protocol.ValidID(group) || !protocol.ValidID(id) {
		return Sent{}, ErrBadID
	}
	if !protocol.ValidJSON(body) || !validUTF8(body) {
		return Sent{}, ErrBadBody
	}
	if err := ctx.Err(); err != nil {
		return Sent{}, err
	}
	o, err := c.enqueueTo(dest{group: group}, id, body, nil)
	if err != nil {
		return Sent{}, err
	}
	return c.await(ctx, o)
}

// SendTypingGroup tells the online devices of group's other members that
// this user is typing there. Like SendTyping, nothing is stored or
// answered (but a not_member or unknown_group error, to OnError).
func (c *Client) SendTypingGroup(group string) error {
	if !protocol.ValidID(group) {
		return ErrBadID
	}
	c.writeCurrent(protocol.AppendTypingGroup(nil, group))
	return nil
}

// onGroup resolves the group operation a group frame answers.
func (c *Client) onGroup(f *protocol.Frame) {
	if f.Op == protocol.GroupList {
		list := f.Groups
		if list == nil {
			list = []GroupEntry{}
		}
		c.resolveGroup(f.ID, groupResult{list: list})
		return
	}
	g := Group{ID: f.Group, Name: f.Name, CreatedBy: f.CreatedBy, Created: time.UnixMilli(f.Created), Members: f.Members}
	if f.History != nil {
		g.History = *f.History
	}
	c.resolveGroup(f.ID, groupResult{g: g})
}

// resolveGroup hands r to the group operation id waits on, and reports
// whether one did.
func (c *Client) resolveGroup(id string, r groupResult) bool {
	c.mu.Lock()
	ch, ok := c.groupWait[id]
	if ok {
		delete(c.groupWait, id)
	}
	c.mu.Unlock()
	if ok {
		ch <- r
	}
	return ok
}

// failGroups ends every group operation waiting for its answer: the
// connection it was asked on is gone.
//
// c.mu must be held.
func (c *Client) failGroupsLocked() {
	for id, ch := range c.groupWait {
		delete(c.groupWait, id)
		ch <- groupResult{err: ErrNoAnswer}
	}
}

// closedErr is why the client closed.
func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil {
		return c.closeErr
	}
	return ErrClosed
}
