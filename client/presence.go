package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

// Presence is another user's online state as this user may see it.
type Presence struct {
	User   string
	Online bool
	// LastSeen is when the user was last online; zero if unknown.
	LastSeen time.Time
	// Hidden means the user's privacy setting hides their presence from
	// this user.
	Hidden bool
}

// Settings are this user's privacy settings.
type Settings struct {
	ReadReceipts bool
	// LastSeenPrivacy is who sees this user online and their last seen:
	// protocol.PrivacyEveryone, PrivacyContacts or PrivacyNobody.
	LastSeenPrivacy string
	Contacts        []string
}

// SettingsChange names the settings to change; nil or empty fields stay.
type SettingsChange struct {
	ReadReceipts    *bool
	LastSeenPrivacy string
	// Contacts, when not nil, replaces the contact list.
	Contacts *[]string
}

// PresenceEvents delivers presence answers and changes for the users this
// client follows. Like typing, they are dropped rather than block the
// connection when the app does not keep up; SubscribePresence again to get
// the current state.
func (c *Client) PresenceEvents() <-chan Presence { return c.presence }

// SubscribePresence follows users' presence: their current state comes at
// once, then every change. The client follows them again after each
// reconnect.
func (c *Client) SubscribePresence(users ...string) error {
	if err := checkUsers(users); err != nil {
		return err
	}
	c.mu.Lock()
	for _, u := range users {
		c.following[u] = true
	}
	c.mu.Unlock()
	c.writeCurrent(encodeUsers(protocol.TypePresenceSub, users))
	return nil
}

// UnsubscribePresence stops following users.
func (c *Client) UnsubscribePresence(users ...string) error {
	if err := checkUsers(users); err != nil {
		return err
	}
	c.mu.Lock()
	for _, u := range users {
		delete(c.following, u)
	}
	c.mu.Unlock()
	c.writeCurrent(encodeUsers(protocol.TypePresenceUnsub, users))
	return nil
}

func checkUsers(users []string) error {
	if len(users) == 0 || len(users) > protocol.MaxUsersPerFrame {
		return ErrBadID
	}
	for _, u := range users {
		if !protocol.ValidID(u) {
			return ErrBadID
		}
	}
	return nil
}

func encodeUsers(typ string, users []string) []byte {
	b, _ := json.Marshal(protocol.Frame{Type: typ, Users: users})
	return b
}

// SubscribePresenceGroup follows the presence of every other member of
// group gid, as the group is at the time, with one frame however large
// the group: each one's state comes at once (PresenceEvents), then their
// changes. Members who join later are followed when it is called again,
// and after each reconnect, when it is sent again. A group this user is
// not in comes back as an error event (not_member, unknown_group).
func (c *Client) SubscribePresenceGroup(gid string) error {
	if !protocol.ValidID(gid) {
		return ErrBadID
	}
	c.mu.Lock()
	if c.followingGroups == nil {
		c.followingGroups = map[string]bool{}
	}
	c.followingGroups[gid] = true
	c.mu.Unlock()
	c.writeCurrent(encodeGroupPresence(protocol.TypePresenceSub, gid))
	return nil
}

// UnsubscribePresenceGroup stops following group gid's members (as the
// group is at the time), those also followed by name included: follow
// them again with SubscribePresence (a reconnect does so too).
func (c *Client) UnsubscribePresenceGroup(gid string) error {
	if !protocol.ValidID(gid) {
		return ErrBadID
	}
	c.mu.Lock()
	delete(c.followingGroups, gid)
	c.mu.Unlock()
	c.writeCurrent(encodeGroupPresence(protocol.TypePresenceUnsub, gid))
	return nil
}

func encodeGroupPresence(typ, gid string) []byte {
	b, _ := json.Marshal(protocol.Frame{Type: typ, Group: gid})
	return b
}

// resubscribe follows again, on a new connection, every user and group
// followed.
func (c *Client) resubscribe() {
	c.mu.Lock()
	users := make([]string, 0, len(c.following))
	for u := range c.following {
		users = append(users, u)
	}
	groups := make([]string, 0, len(c.followingGroups))
	for g := range c.followingGroups {
		groups = append(groups, g)
	}
	c.mu.Unlock()
	slices.Sort(users)
	for chunk := range slices.Chunk(users, protocol.MaxUsersPerFrame) {
		c.writeCurrent(encodeUsers(protocol.TypePresenceSub, chunk))
	}
	slices.Sort(groups)
	for _, g := range groups {
		c.writeCurrent(encodeGroupPresence(protocol.TypePresenceSub, g))
	}
}

// Settings changes this user's settings (an empty change just reads them)
// and returns them as stored. Calls take turns, in the order they are
// made; each is asked like GroupOp's operations: under an id of its own,
// which the answer and a refusal carry, again on the next connection when
// the answer is lost with this one, and again after a refusal for now
// (rate_limited, store_failed); the server applies a change asked again
// once. A change the gateway would refuse (an unknown
// LastSeenPrivacy, a contact that is not a valid id, more than
// protocol.MaxContacts) fails with ErrBadSettings, unwritten.
func (c *Client) Settings(ctx context.Context, change SettingsChange) (Settings, error) {
	if code, _ := protocol.CheckSettings(change.LastSeenPrivacy, change.Contacts); code != "" {
		return Settings{}, ErrBadSettings
	}
	// One change at a time, in the order of the calls: one asked again
	// (refused for now, its connection lost) must not land after a later
	// one. A call that gives up while waiting its turn leaves the queue.
	select {
	case c.settingsTurn <- struct{}{}:
	case <-ctx.Done():
		return Settings{}, ctx.Err()
	case <-c.ctx.Done():
		return Settings{}, c.closedErr()
	}
	defer func() { <-c.settingsTurn }()
	id := c.requestID()
	c.mu.Lock()
	c.settingsAsked = id
	c.mu.Unlock()
	r, err := c.request(ctx, protocol.Frame{Type: protocol.TypeSettings, ID: id, ReadReceipts: change.ReadReceipts,
		LastSeenPrivacy: change.LastSeenPrivacy, Contacts: change.Contacts})
	if err != nil {
		return Settings{}, err
	}
	return r.settings, r.err
}

// ErrBadSettings is a settings change the gateway would refuse.
var ErrBadSettings = errors.New("client: last_seen_privacy must be everyone, contacts or nobody, and contacts valid ids, at most protocol.MaxContacts")

// ErrUnknownMessage is a Status call about a message this client did not
// send, or sent so long ago that it no longer remembers its seq; or a
// StatusOf call about a message sent to another region whose recipient
// it does not know (StatusTo names it).
var ErrUnknownMessage = errors.New("client: no message sent with this id")

// Status returns each recipient's ticks for message id that this client
// sent: whether any of their devices has it, and whether they read it.
// Calls asking about one message at once share its answer. A question
// the gateway refuses for now (rate_limited, unavailable) is asked again
// after the wait the refusal names, or a backoff, while a call waits for
// it, up to five times in a row; then, or refused with any other code,
// the calls get the refusal, a *ServerError.
func (c *Client) Status(ctx context.Context, id string) (map[string]protocol.Ticks, error) {
	c.mu.Lock()
	seq := c.ticks.seqOf(id)
	c.mu.Unlock()
	if seq == 0 {
		return nil, ErrUnknownMessage
	}
	return c.StatusOf(ctx, seq)
}

// StatusOf is Status for the message stored at seq (its Sent.Seq): the
// server answers only the message's sender. A message to a user homed in
// another region is asked about with its recipient, which the client
// names when it remembers the message (sent from this device, or seen
// from another of this user's, since it started); otherwise it returns
// ErrUnknownMessage, and StatusTo names the recipient.
func (c *Client) StatusOf(ctx context.Context, seq uint64) (map[string]protocol.Ticks, error) {
	return c.StatusTo(ctx, "", seq)
}

// StatusTo is StatusOf naming the message's recipient, to: needed for a
// message to a user homed in another region that this client does not
// remember (sent before it started, say); "" is StatusOf.
func (c *Client) StatusTo(ctx context.Context, to string, seq uint64) (map[string]protocol.Ticks, error) {
	if to != "" && !protocol.ValidID(to) {
		return nil, fmt.Errorf("client: to %q: %w", to, protocol.ErrInvalidID)
	}
	if to == "" && seq >= protocol.OutboxSeqFloor {
		c.mu.Lock()
		to = c.ticks.recipientOf(seq)
		c.mu.Unlock()
		if to == "" && c.opts.Store != nil {
			// One already read, from before this client started: the
			// local store knows whom it went to.
			if u, ok, err := c.opts.Store.RecipientOf(seq); err == nil && ok {
				to = u
			}
		}
		if to == "" {
			// The gateway could only refuse it, and its refusal would
			// also answer a StatusTo about the same seq under way.
			return nil, ErrUnknownMessage
		}
	}
	r, err := c.askStatus(ctx, statusKey{seq: seq}, protocol.AppendStatusFrame(nil, seq, to))
	return r.recipients, err
}

// statusKey names a status question: about the message at seq sent to a
// user (group ""), or at seq in group's log.
type statusKey struct {
	group string
	seq   uint64
}

// statusAsk is a status question and the calls waiting for its answer.
// Each call writes its own frame; one answer, or one refusal for good,
// ends them all.
type statusAsk struct {
	waiting []statusWaiter
	refused int  // refusals for now so far, each written again
	again   bool // written again soon: refusals meanwhile wait for it
}

// statusWaiter is one call waiting for a status answer, and the frame it
// wrote: a question written again is a waiting call's (StatusTo calls
// about one seq may name different recipients).
type statusWaiter struct {
	ch    chan statusResult
	frame []byte
}

// frameLocked is the frame that asks a again: the oldest waiting call's.
//
// Lock (mu) should be held.
func (a *statusAsk) frameLocked() []byte {
	if len(a.waiting) == 0 {
		return nil
	}
	return a.waiting[0].frame
}

// statusResult is a status answer: each recipient's (member's) ticks,
// and for a group's whether all have it, and have read it; or the error.
type statusResult struct {
	recipients   map[string]protocol.Ticks
	allDelivered bool
	allRead      bool
	err          error
}

// askStatus writes frame, status question k, and waits for its answer,
// or for ctx or the client to end. Calls asking k at once share the
// answer.
func (c *Client) askStatus(ctx context.Context, k statusKey, frame []byte) (statusResult, error) {
	ch := make(chan statusResult, 1)
	c.mu.Lock()
	a := c.statusWait[k]
	if a == nil {
		a = &statusAsk{}
		c.statusWait[k] = a
	}
	a.waiting = append(a.waiting, statusWaiter{ch, frame})
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		a.waiting = slices.DeleteFunc(a.waiting, func(w statusWaiter) bool { return w.ch == ch })
		if len(a.waiting) == 0 && c.statusWait[k] == a {
			delete(c.statusWait, k) // nobody waits: never written again
		}
		c.mu.Unlock()
	}()
	c.writeCurrent(frame)
	select {
	case r := <-ch:
		return r, r.err
	case <-ctx.Done():
		return statusResult{}, ctx.Err()
	case <-c.ctx.Done():
		return statusResult{}, ErrClosed
	}
}

// answerStatus hands a status answer to the calls waiting for it.
func (c *Client) answerStatus(k statusKey, r statusResult) {
	c.mu.Lock()
	var waiting []statusWaiter
	if a := c.statusWait[k]; a != nil {
		waiting, a.waiting = a.waiting, nil
		delete(c.statusWait, k)
	}
	c.mu.Unlock()
	for _, w := range waiting {
		w.ch <- r
	}
}

// statusRefused hands error frame f to the status questions it refuses,
// and reports whether there were any. f names one (For "status", and
// Group for a group's); from a gateway that names none, it refuses the
// status of a message to a user at f.Seq, if one is asked, else those
// of group messages at f.Seq in any group.
//
// A refusal for now (a retryable code: rate_limited, unavailable) writes
// the question again after the wait f names, or a backoff, and its calls
// go on waiting, up to maxRetries times in a row; any other refusal, or
// one past those, ends them with the error.
func (c *Client) statusRefused(f *protocol.Frame) bool {
	type redo struct {
		k statusKey
		a *statusAsk
		n int // its refusals for now in a row
	}
	var (
		found   bool
		failing []statusWaiter
		again   []redo
	)
	c.mu.Lock()
	keys := []statusKey{{f.Group, f.Seq}}
	if f.For == "" && c.statusWait[keys[0]] == nil {
		keys = keys[:0]
		for k := range c.statusWait {
			if k.seq == f.Seq {
				keys = append(keys, k)
			}
		}
	}
	for _, k := range keys {
		a := c.statusWait[k]
		if a == nil {
			continue
		}
		found = true
		switch {
		case retryable(f.Code) && a.again:
			// Another call's frame refused too: the write again
			// already due answers for it.
		case retryable(f.Code) && a.refused < maxRetries:
			a.refused++
			a.again = true
			again = append(again, redo{k, a, a.refused})
		default:
			failing = append(failing, a.waiting...)
			a.waiting = nil
			delete(c.statusWait, k)
		}
	}
	c.mu.Unlock()
	for _, w := range failing {
		w.ch <- statusResult{err: &ServerError{Code: f.Code, Message: f.Message}}
	}
	for _, r := range again {
		c.retryLater(f, r.n, func() { c.askAgain(r.k, r.a) })
	}
	return found
}

// askAgain writes status question a, k, again, unless it was answered,
// or nobody waits for it, meanwhile. Without a connection nothing is
// written: the reconnect asks every question still waiting
// (statusesToAskLocked).
func (c *Client) askAgain(k statusKey, a *statusAsk) {
	c.mu.Lock()
	var frame []byte
	if c.statusWait[k] == a {
		frame = a.frameLocked()
	}
	a.again = false
	c.mu.Unlock()
	if frame != nil {
		c.writeCurrent(frame)
	}
}

// statusesToAskLocked is a frame for each status question still waiting,
// for a new connection to ask again: an answer, or a write again after a
// refusal for now, that the last connection lost would otherwise leave
// its calls waiting until their contexts end.
//
// Lock (mu) should be held.
func (c *Client) statusesToAskLocked() [][]byte {
	var frames [][]byte
	for _, a := range c.statusWait {
		if f := a.frameLocked(); f != nil {
			frames = append(frames, f)
		}
	}
	return frames
}

func (c *Client) onPresence(f *protocol.Frame) {
	p := Presence{User: f.User, Online: f.Online, Hidden: f.Hidden}
	if f.LastSeen > 0 {
		p.LastSeen = time.UnixMilli(f.LastSeen)
	}
	select {
	case c.presence <- p:
	default:
	}
}

func (c *Client) onSettings(f *protocol.Frame) {
	s := Settings{LastSeenPrivacy: f.LastSeenPrivacy}
	if f.ReadReceipts != nil {
		s.ReadReceipts = *f.ReadReceipts
	}
	if f.Contacts != nil {
		s.Contacts = *f.Contacts
	}
	id := f.ID
	if id == "" {
		// A gateway from before settings frames had ids answers without
		// one: the change asked (one at a time) is the one it answers.
		c.mu.Lock()
		id = c.settingsAsked
		c.mu.Unlock()
	}
	if id != "" {
		c.resolveGroup(id, groupResult{settings: s})
	}
}
