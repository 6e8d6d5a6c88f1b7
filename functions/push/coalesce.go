package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// claim is the value of key <user> in the PUSH bucket: which message holds
// the user's window and which devices it has finished with. Sent and Dead
// are written after each device, so an attempt taken over by another
// instance (crash, stop, retry) skips what is done.
type claim struct {
	Seq uint64 `json:"seq"`
	// Group is set for a message of a group read from its log: Seq is
	// then its place in GROUPS, not in INBOX.
	Group string   `json:"group,omitempty"`
	Sent  []string `json:"sent"`
	// Dead lists devices whose notification was dead-lettered, so a later
	// attempt does not post it again.
	Dead []string `json:"dead,omitempty"`
}

// ref names the message a claim is for: its INBOX sequence, or its
// group and place in GROUPS.
type ref struct {
	group string
	seq   uint64
}

func (c *claim) ref() ref { return ref{c.Group, c.Seq} }

func (c *claim) done(device string) bool {
	return slices.Contains(c.Sent, device) || slices.Contains(c.Dead, device)
}

// ticket is one message's hold on a user's window. It is used by one
// goroutine at a time.
type ticket struct {
	kv   jetstream.KeyValue
	js   jetstream.JetStream
	user string
	st   claim
	rev  uint64
	// lost is set when the key turned out to belong to another message:
	// the window was taken over, and this attempt no longer records.
	lost bool
}

// ttlSeconds rounds d up to whole seconds, the server's TTL unit, so a
// hold is never shorter than asked.
func ttlSeconds(d time.Duration) time.Duration {
	return max(time.Second, (d + time.Second - 1).Truncate(time.Second))
}

// errHeld says another message holds the user's window and has woken no
// device yet: whether this one is coalesced depends on how that ends.
var errHeld = errors.New("push: the window is held by a message that has woken no device yet")

// acquire tries to open the user's window for message r. It returns the
// ticket and true when this message holds the window (new, or an earlier
// attempt of the same message), false when another message holds it and
// has woken a device, or errHeld when another holds it and has not.
// hold is the TTL of a fresh key; stale is the age past which a key with
// no TTL left (written by hand, or by a crashed writer) is taken over
// rather than blocking the user's pushes forever.
func acquire(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, user string, r ref, hold, stale time.Duration) (*ticket, bool, error) {
	t := &ticket{kv: kv, js: js, user: user}
	for range 5 {
		t.st = claim{Seq: r.seq, Group: r.group, Sent: []string{}}
		b, _ := json.Marshal(t.st)
		rev, err := kv.Create(ctx, user, b, jetstream.KeyTTL(ttlSeconds(hold)))
		if err == nil {
			t.rev = rev
			return t, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, false, fmt.Errorf("push: coalescing key: %w", err)
		}
		e, err := kv.Get(ctx, user)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired between the two calls
		}
		if err != nil {
			return nil, false, fmt.Errorf("push: coalescing key: %w", err)
		}
		var cur claim
		if json.Unmarshal(e.Value(), &cur) != nil || time.Since(e.Created()) > stale {
			// Unreadable or stale: take it over, keeping nothing from it.
			t.rev = e.Revision()
			if err := t.save(ctx, hold); err != nil {
				return nil, false, err
			}
			return t, !t.lost, nil
		}
		if cur.ref() != r {
			if len(cur.Sent) == 0 {
				// The holder has woken no device yet and may end having
				// woken none (each had it, or was dead-lettered), taking
				// its claim away: this message cannot count on its push.
				return nil, false, errHeld
			}
			return nil, false, nil
		}
		t.st, t.rev = cur, e.Revision()
		if t.st.Sent == nil {
			t.st.Sent = []string{}
		}
		return t, true, nil
	}
	return nil, false, errors.New("push: coalescing key too contended")
}

// close ends the message's part of the window: the claim lives window
// from now if the message woke a device, and is taken away if it woke
// none (every device had it, or what was tried was dead-lettered), so
// the next message for the user opens a window of its own and is pushed:
// a window is "at most one push", not "none after a message nobody was
// woken for".
func (t *ticket) close(ctx context.Context, window time.Duration) error {
	if len(t.st.Sent) > 0 {
		return t.save(ctx, window)
	}
	return release(ctx, t.kv, t.user, t.rev)
}

// release deletes the user's claim if it is still at revision rev;
// another message's claim, or none, is left as it is.
func release(ctx context.Context, kv jetstream.KeyValue, user string, rev uint64) error {
	err := kv.Delete(ctx, user, jetstream.LastRevision(rev))
	if err != nil && !contract.IsConflict(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("push: coalescing key: %w", err)
	}
	return nil
}

// releaseIdle releases the user's claim if message r holds it and has
// woken no device: a delivery that finds the user online again ends its
// window that way.
func releaseIdle(ctx context.Context, kv jetstream.KeyValue, user string, r ref) error {
	e, err := kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("push: coalescing key: %w", err)
	}
	var cur claim
	if json.Unmarshal(e.Value(), &cur) != nil || cur.ref() != r || len(cur.Sent) > 0 {
		return nil
	}
	return release(ctx, kv, user, e.Revision())
}

// save writes the claim with a fresh TTL, if the key is still at the
// revision read. KeyValue.Update cannot set a TTL, and a value written
// without one would never expire (the TTL belongs to each revision, not
// to the key), so it is a raw publish on the bucket's subject with the
// same compare-and-set header Update uses.
func (t *ticket) save(ctx context.Context, ttl time.Duration) error {
	if t.lost {
		return nil
	}
	for range 5 {
		b, _ := json.Marshal(t.st)
		m := &nats.Msg{Subject: contract.KVSubject(contract.PushKV, t.user), Data: b}
		// Through a reconnect: a device pushed and not recorded would be
		// pushed again when the message comes again.
		var ack *jetstream.PubAck
		err := contract.ThroughReconnect(ctx, func() (err error) {
			ack, err = t.js.PublishMsg(ctx, m,
				jetstream.WithExpectLastSequencePerSubject(t.rev), jetstream.WithMsgTTL(ttlSeconds(ttl)))
			return err
		})
		if err == nil {
			t.rev = ack.Sequence
			return nil
		}
		if !contract.IsConflict(err) {
			return fmt.Errorf("push: coalescing key: %w", err)
		}
		// Someone else wrote the key. The same message on another instance
		// (its ack wait ran out while this one worked) merges; a missing
		// key is recreated; another message's key means the window moved on.
		e, err := t.kv.Get(ctx, t.user)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Create, not a publish expecting nothing: an expired key
			// leaves a marker that a raw compare-and-set would trip on.
			rev, err := t.kv.Create(ctx, t.user, b, jetstream.KeyTTL(ttlSeconds(ttl)))
			if err == nil {
				t.rev = rev
				return nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return fmt.Errorf("push: coalescing key: %w", err)
			}
			continue
		case err != nil:
			return fmt.Errorf("push: coalescing key: %w", err)
		}
		var cur claim
		if json.Unmarshal(e.Value(), &cur) != nil || cur.ref() != t.st.ref() {
			t.lost = true
			return nil
		}
		for _, d := range cur.Sent {
			if !slices.Contains(t.st.Sent, d) {
				t.st.Sent = append(t.st.Sent, d)
			}
		}
		for _, d := range cur.Dead {
			if !slices.Contains(t.st.Dead, d) {
				t.st.Dead = append(t.st.Dead, d)
			}
		}
		t.rev = e.Revision()
	}
	return errors.New("push: coalescing key too contended")
}
