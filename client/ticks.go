package client

import (
	"sort"
	"strings"

	"github.com/switchboard-im/switchboard/protocol"
)

// A receipt frame is a position, not a message id: recipient by has the
// sender's messages stored from from_seq to to_seq (delivered), or has read
// every one up to to_seq (read). The SDK knows the seq of each message it
// sent (from its "sent" frame) and turns a frame into one Receipt per
// message it covers, each tick once: a message goes from nothing to
// delivered to read, never back, and a read covers delivered.
//
// A group receipt (with a group) is the same position in the group's log:
// every member but this user has (or has read) this user's messages in
// the group from from_seq to to_seq. The SDK keeps its group sends under
// the group (groupKey), apart from its sends to users.

// maxTracked bounds the sent messages the SDK remembers for its ticks.
// Past it the oldest are forgotten: their ticks are no longer reported
// (the app that needs them older keeps its own record, see Status).
const maxTracked = 100_000

// Tick states of a sent message.
const (
	tickNone uint8 = iota
	tickDelivered
	tickRead
)

type sentMsg struct {
	seq  uint64
	id   string
	tick uint8
}

// recipientTicks are the messages sent to one recipient, by seq.
type recipientTicks struct {
	msgs []sentMsg // sorted by seq
	// read is the index of the first message not known read: reads are
	// positions, so everything before it is.
	read int
	// What the recipient's receipts said, kept for a message whose "sent"
	// comes after its tick (the two travel apart): the highest read
	// position, and the latest delivered ranges.
	readTo    uint64
	delivered []span
	// The devices those receipts named (the latest of each status), for
	// the tick a late "sent" reports.
	readDevice, deliveredDevice string
}

type span struct{ from, to uint64 }

// maxSpans bounds the delivered ranges kept per recipient: only the
// latest matter, for sends still waiting for their "sent".
const maxSpans = 32

// ticks tracks this client's sent messages by recipient. Guarded by
// Client.mu.
type ticks struct {
	to    map[string]*recipientTicks
	count int
	// order is every tracked (recipient, seq), oldest first, to forget the
	// oldest past maxTracked.
	order []trackedKey
}

type trackedKey struct {
	to  string
	seq uint64
}

func newTicks() *ticks { return &ticks{to: map[string]*recipientTicks{}} }

// groupKey is where the ticks of this user's messages in group are kept:
// no user id starts with '#'.
func groupKey(group string) string { return "#" + group }

// tickKey is where a receipt frame's ticks go: its group's, or by's.
func tickKey(f *protocol.Frame) string {
	if f.Group != "" {
		return groupKey(f.Group)
	}
	return f.By
}

// earlyDevice is the device of the receipt that gave the message stored
// at seq to `to` its early tick status (early, sent), "" if unknown.
func (t *ticks) earlyDevice(to string, seq uint64, status string) string {
	r := t.to[to]
	switch {
	case r == nil:
		return ""
	case status == protocol.StatusRead:
		return r.readDevice
	case status == protocol.StatusDelivered:
		return r.deliveredDevice
	}
	return ""
}

// early is the tick a receipt already gave the message stored at seq to
// `to` ("" if none), as sent will return it, changing nothing.
func (t *ticks) early(to string, seq uint64) string {
	r := t.to[to]
	switch {
	case r == nil:
		return ""
	case seq <= r.readTo:
		return protocol.StatusRead
	case r.covered(seq):
		return protocol.StatusDelivered
	}
	return ""
}

// sent records that message id to `to` is stored at seq, and returns the
// tick a receipt already gave it ("" if none).
func (t *ticks) sent(to, id string, seq uint64) (status string) {
	r := t.to[to]
	if r == nil {
		r = &recipientTicks{}
		t.to[to] = r
	}
	i := sort.Search(len(r.msgs), func(i int) bool { return r.msgs[i].seq >= seq })
	if i < len(r.msgs) && r.msgs[i].seq == seq {
		return "" // a duplicate "sent"
	}
	m := sentMsg{seq: seq, id: id}
	switch {
	case seq <= r.readTo:
		m.tick, status = tickRead, protocol.StatusRead
	case r.covered(seq):
		m.tick, status = tickDelivered, protocol.StatusDelivered
	}
	r.msgs = append(r.msgs, sentMsg{})
	copy(r.msgs[i+1:], r.msgs[i:])
	r.msgs[i] = m
	if i < r.read && m.tick < tickRead {
		r.read = i // an older seq confirmed late: not known read yet
	}
	t.order = append(t.order, trackedKey{to, seq})
	t.count++
	for t.count > maxTracked {
		t.forget(t.order[0])
		t.order[0] = trackedKey{}
		t.order = t.order[1:]
	}
	return status
}

func (r *recipientTicks) covered(seq uint64) bool {
	for _, s := range r.delivered {
		if s.from <= seq && seq <= s.to {
			return true
		}
	}
	return false
}

func (t *ticks) forget(k trackedKey) {
	r := t.to[k.to]
	if r == nil {
		return
	}
	i := sort.Search(len(r.msgs), func(i int) bool { return r.msgs[i].seq >= k.seq })
	if i < len(r.msgs) && r.msgs[i].seq == k.seq {
		r.msgs = append(r.msgs[:i], r.msgs[i+1:]...)
		if i < r.read {
			r.read--
		}
		t.count--
	}
	if len(r.msgs) == 0 {
		delete(t.to, k.to)
	}
}

// seqOf returns the seq of message id sent to a user, 0 if unknown.
func (t *ticks) seqOf(id string) uint64 {
	for to, r := range t.to {
		if strings.HasPrefix(to, "#") {
			continue // a group's: see GroupStatus
		}
		for _, m := range r.msgs {
			if m.id == id {
				return m.seq
			}
		}
	}
	return 0
}

// recipientOf is whom the message this client sent at seq went to, ""
// if it is not known or went to a group.
func (t *ticks) recipientOf(seq uint64) string {
	for to, r := range t.to {
		if strings.HasPrefix(to, "#") {
			continue
		}
		i := sort.Search(len(r.msgs), func(i int) bool { return r.msgs[i].seq >= seq })
		if i < len(r.msgs) && r.msgs[i].seq == seq {
			return to
		}
	}
	return ""
}

// apply takes a receipt frame and returns the ids it moves on, each with
// the tick it reached (protocol.StatusDelivered or StatusRead).
func (t *ticks) apply(f *protocol.Frame) (ids []string, seqs []uint64) {
	key := tickKey(f)
	r := t.to[key]
	if r == nil {
		r = &recipientTicks{}
		t.to[key] = r
	}
	switch f.Status {
	case protocol.StatusRead:
		if f.ToSeq >= r.readTo {
			r.readDevice = f.Device
		}
		r.readTo = max(r.readTo, f.ToSeq)
		for ; r.read < len(r.msgs) && r.msgs[r.read].seq <= f.ToSeq; r.read++ {
			if m := &r.msgs[r.read]; m.tick < tickRead {
				m.tick = tickRead
				ids, seqs = append(ids, m.id), append(seqs, m.seq)
			}
		}
	case protocol.StatusDelivered:
		r.delivered = append(r.delivered, span{f.FromSeq, f.ToSeq})
		r.deliveredDevice = f.Device
		if len(r.delivered) > maxSpans {
			r.delivered = r.delivered[1:]
		}
		i := sort.Search(len(r.msgs), func(i int) bool { return r.msgs[i].seq >= f.FromSeq })
		for ; i < len(r.msgs) && r.msgs[i].seq <= f.ToSeq; i++ {
			if m := &r.msgs[i]; m.tick < tickDelivered {
				m.tick = tickDelivered
				ids, seqs = append(ids, m.id), append(seqs, m.seq)
			}
		}
	}
	return ids, seqs
}
