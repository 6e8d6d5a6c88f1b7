package client

import (
	"container/list"
	"encoding/json"

	"github.com/switchboard-im/switchboard/protocol"
)

// outgoing is one send not yet confirmed. Its fields other than those set
// at creation are guarded by Client.mu.
type outgoing struct {
	id    string
	seq   uint64 // order of Send calls: send frames go out in this order
	to    string
	group string // a send to a group: to is empty
	body  []byte
	media *protocol.Media
	done  chan result // capacity 1; receives the outcome once

	elem    *list.Element // in outbox.order
	written bool          // its frame went out on the current connection and is unanswered
	retries int           // retryable errors answered to it, for the resend's backoff
	waiters int           // Send calls waiting for it; at zero it is withdrawn
}

// frame is the send frame for this message.
func (o *outgoing) frame() []byte {
	if o.group != "" {
		return protocol.AppendGroupSend(nil, o.id, o.group, o.body)
	}
	if o.media == nil {
		return protocol.AppendSend(nil, o.id, o.to, o.body)
	}
	b, _ := json.Marshal(protocol.Frame{Type: protocol.TypeSend, ID: o.id, To: o.to, Body: o.body, Media: o.media})
	return b
}

type result struct {
	sent Sent
	err  error
}

// outbox holds the unconfirmed sends in their order and decides which of
// them may be written. It does no I/O; Client.mu guards it.
//
// In the normal case every send is written as soon as it is made, many in
// flight at once, up to sendWindow unanswered. A send answered with a
// retryable error becomes the holder: from then on no send newer than it
// is written, and it alone is written again (the probe) once its backoff
// has passed and nothing older is unanswered. The hold ends when the
// holder is stored, refused for good or withdrawn; the sends not on the
// wire then go out, in order, as the window allows. A new
// connection writes the unconfirmed sends in order (up to sendWindow); a
// holder among them keeps newer sends made after that waiting until it is
// answered.
type outbox struct {
	byID    map[string]*outgoing
	order   list.List // of *outgoing, oldest (lowest seq) first
	nextSeq uint64
	// unwritten counts entries whose frame is not on the current
	// connection: new ones, ones waiting behind a holder, failed ones.
	unwritten int
	// holder is the oldest send answered with a retryable error and not
	// yet stored, refused or withdrawn; nil in the normal case.
	holder *outgoing
	// probeDue says the holder's backoff has passed: the head of the
	// order may be written alone.
	probeDue bool
	// probeGen tells a pending backoff wait whether it still applies.
	probeGen uint64
}

func newOutbox() *outbox {
	return &outbox{byID: map[string]*outgoing{}}
}

// add appends a new send, newest of all.
func (b *outbox) add(o *outgoing) {
	b.nextSeq++
	o.seq = b.nextSeq
	o.elem = b.order.PushBack(o)
	b.byID[o.id] = o
	b.unwritten++
}

// remove drops o (stored, refused or withdrawn) and reports whether that
// ended a hold.
func (b *outbox) remove(o *outgoing) (released bool) {
	if b.byID[o.id] != o {
		return false
	}
	delete(b.byID, o.id)
	b.order.Remove(o.elem)
	if !o.written {
		b.unwritten--
	}
	if b.holder == o {
		b.holder, b.probeDue = nil, false
		b.probeGen++
		return true
	}
	return false
}

// failed records a retryable error answered to o, which must be written
// again, and reports whether o is now the holder (whose resend the caller
// schedules).
func (b *outbox) failed(o *outgoing) (holder bool) {
	if o.written {
		o.written = false
		b.unwritten++
	}
	o.retries++
	if b.holder == nil || o.seq <= b.holder.seq {
		b.holder = o
		return true
	}
	return false
}

// writable returns the sends to write now, in order, and counts them as
// written.
func (b *outbox) writable() []*outgoing {
	if b.unwritten == 0 {
		return nil
	}
	if b.holder != nil {
		// Held: only the oldest unconfirmed send, once its backoff has
		// passed and nothing older is waiting for an answer.
		head, _ := b.order.Front().Value.(*outgoing)
		if !b.probeDue || head.written {
			return nil
		}
		b.probeDue = false
		head.written = true
		b.unwritten--
		return []*outgoing{head}
	}
	room := sendWindow - (b.order.Len() - b.unwritten)
	if room <= 0 {
		return nil
	}
	// The oldest unwritten, past at most sendWindow written ones.
	out := make([]*outgoing, 0, min(room, b.unwritten))
	for e := b.order.Front(); e != nil && len(out) < cap(out); e = e.Next() {
		if o := e.Value.(*outgoing); !o.written {
			o.written = true
			out = append(out, o)
		}
	}
	b.unwritten -= len(out)
	return out
}

// waiting reports whether sends wait for room in the window, with no
// hold: an answer lets the next go.
func (b *outbox) waiting() bool { return b.holder == nil && b.unwritten > 0 }

// sendWindow bounds the sends written on a connection and not yet
// answered; the rest go as answers come. The gateway takes a burst of
// 200 sends (its send rate limit) and closes a connection whose frames
// it refused 50 times in a row: a device back with hundreds of sends
// made offline, all written at once, would be refused and closed, come
// back and write them all again, and never get through.
const sendWindow = 64

// rewriteAll returns the unconfirmed sends, oldest first, as many as
// sendWindow lets go, for a new connection, and counts them as written;
// the rest go as answers come. A holder stays the holder until
// it is answered, so sends made after this wait behind it.
func (b *outbox) rewriteAll() []*outgoing {
	out := make([]*outgoing, 0, min(b.order.Len(), sendWindow))
	b.unwritten = 0
	for e := b.order.Front(); e != nil; e = e.Next() {
		o := e.Value.(*outgoing)
		o.written = len(out) < sendWindow
		if o.written {
			out = append(out, o)
		} else {
			b.unwritten++
		}
	}
	b.probeDue = false
	b.probeGen++ // the holder is on the wire: a pending backoff is moot
	return out
}
