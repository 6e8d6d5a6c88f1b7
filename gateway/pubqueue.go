package gateway

import (
	"cmp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// The PubAck queue: a session's writes to JetStream, and what to do once
// each is stored.
//
// Sends. A device's sends are stored in the order its frames arrived, and
// the session has one send published at a time: the next is published
// when the one before is stored (its PubAck) or given up. JetStream keeps
// one connection's publishes in order only while the stream's leader
// stays put: across a leader change, a publish the old leader never took
// is refused or lost while one sent just after it reaches the new leader
// and is stored first (measured with sends pipelined: 19 of 3,000 sends
// of one session, 200 in flight, stored out of order through one
// step-down). So a send whose publish fails, or
// whose PubAck does not come, is published again by the session itself
// under the same Nats-Msg-Id (a copy already stored is not stored twice:
// the PubAck says duplicate and gives its sequence), and the sends after
// it wait:
//   - refused for now (no leader, 503): again after 50 ms, doubling to 1 s;
//   - no PubAck: again as soon as INBOX has a new leader (the advisory) or
//     the gateway's NATS connection is restored, else after pubAckWait,
//     doubling;
//   - refused for good (too large, say): answered store_failed at once.
//
// A group send is stored in GROUPS the same way, under the same rules;
// only INBOX's leader changes are watched (the gateway's role may not
// listen to GROUPS' advisories), so a group send whose PubAck a GROUPS
// leader change lost goes again after pubAckWait. Its store is
// conditional on the group's last change (session.checkGroupSend): one
// refused because a change came after the record it was checked against
// is checked again against the group's log (up to maxRechecks times) and
// published again or refused; one a replicated GROUPS refused because
// another conditional store to the group was in flight goes again after
// contract.BusyWait, as the groups function's changes do. Busy refusals
// and refusals of the stream's (unavailable) count apart, each from the
// first in a row: an answer of any other kind starts a count afresh, so
// a send that waited out a burst of busy refusals does not then wait a
// second for a stream that answered 503 once.
//
// A send not stored within pubGiveUp of arriving is given up: it is
// answered store_failed. A send answered with any code the client resends
// on (store_failed, given up or refused for good; unavailable from a media
// grant or a group send's check) takes every send queued behind it along:
// none of them was published, each is answered store_failed, and the
// client resends them all, in order, with the same ids. Nothing newer of
// a session is stored before an older send is stored or answered.
//
// Sends still on the wire when that answer goes out would otherwise be
// stored ahead of the resend (a client writes up to 64 sends before the
// first is answered). So such an answer, here or on arrival (rate_limited,
// a region's directory unavailable), starts a hold: every send that
// arrives after it is answered store_failed unqueued, until one the hold
// refused arrives again, which is the client resending the oldest it
// holds (both SDKs write nothing else while they hold). A hold lasts for
// the connection at most.
//
// Receipts are not written here: delivered ticks are asked of the
// receipts function once a stretch of the device's messages is acked
// (ticks.go), and a read is a request of its own (calls.go).
const (
	// pubAckWait is how long a PubAck may take before the write is
	// published again (doubling per attempt), when nothing said the
	// stream changed leader, unless Config.PubAckWait says otherwise.
	pubAckWait = time.Second
	// pubRetryMin is the first wait after a write was refused for now,
	// doubling up to pubRetryMax.
	pubRetryMin = 50 * time.Millisecond
	pubRetryMax = time.Second
	// pubGiveUp is how long a write may go unstored from when it arrived
	// before it is given up.
	pubGiveUp = 10 * time.Second
	// pubStopWait bounds how long a session that ends waits for its
	// queue to be stored before it drops the rest (see close).
	pubStopWait = 2 * time.Second
)

// Why a write was published again (the republished_total metric's
// reason label).
const (
	republishRefused   = "refused"   // the stream answered 503 or had no responders, or its group was busy
	republishOverdue   = "overdue"   // its PubAck did not come within pubAckWait
	republishLeader    = "leader"    // INBOX elected a leader
	republishReconnect = "reconnect" // the gateway's NATS connection was restored
)

var republishReasons = []string{republishRefused, republishOverdue, republishLeader, republishReconnect}

// pubState is where a queued write stands.
type pubState uint8

const (
	pubWaiting  pubState = iota // a send behind the one published
	pubGranting                 // a media send whose recipient is being let download its object
	pubInFlight                 // published; its PubAck is awaited until due
	pubRefused                  // refused for now; published again at due
	pubOwnCheck                 // stored; whether its sender needs an own copy is being read (owncheck.go)
)

// pubItem is one write and what to do once it is stored.
type pubItem struct {
	n     uint64 // its number in the queue, in its requests' reply subjects
	state pubState
	// attempt counts its publishes. A reply names its attempt: a PubAck
	// of any publish is taken, an error only from the latest.
	attempt  uint64
	msg      *nats.Msg // what to publish
	since    time.Time // when it arrived
	due      time.Time // when to act if nothing was heard: publish again
	refusals int       // refused for now, in a row
	busy     int       // a group send refused as busy, in a row (its own waits)

	// For a send: the client's id, the recipient (or the group), the
	// time it was accepted (ms) and, for a media message, the object to
	// grant first. A group send's sender is checked to be a member first,
	// the same way.
	id    string
	to    string
	group string
	ts    int64
	media *protocol.Media
	// own is the copy of a 1:1 send for the sender's own inbox, stored
	// once the send is (it names the send's seq) and before the send is
	// answered: for a send to a user homed in another region always, for
	// one here when the sender has another device (checkOwn). ownFrom is
	// the first attempt that published it (0: not yet), sent the send's
	// own PubAck.
	own     *nats.Msg
	ownFrom uint64
	sent    pubAck
	// rechecks counts the group send's checks made again after the
	// store refused it for a change of the group stored after the
	// record its check used (maxRechecks at most).
	rechecks int
	// checkOwn is set on a 1:1 send to another user of this region:
	// once it is stored, own is made if the sender has another device
	// that is to get it (owncheck.go).
	checkOwn bool
}

// pubEnv is what the queue needs of its session (a fake in tests).
type pubEnv interface {
	// publish publishes m with the reply subject of item n's attempt a:
	// its answer comes back to onReply.
	publish(m *nats.Msg, n, a uint64) error
	// grant lets a media send's recipient download its object, or checks
	// that a group send's sender is a member, off the caller's goroutine,
	// and then calls the queue's granted.
	grant(it *pubItem)
	// checkOwn asks whether the sender of send it, stored at seq, has
	// another device that is to get it: at once when the answer is known
	// (known), else off the caller's goroutine, and then the queue's
	// ownChecked has it.
	checkOwn(it *pubItem, seq uint64) (other, known bool)
	// answer sends the device a frame; refuse an error frame.
	answer(frame []byte)
	refuse(code protocol.ErrorCode, message, id string, seq uint64)
	// wakeAt sets the session's timer (opPubs) for at.
	wakeAt(at time.Time)
	// counted: a send stored, a write published again.
	stored()
	republished(reason string)
}

// pubQueue is a session's writes to JetStream awaiting their PubAcks.
// Writes are queued by the read loop (add); answers arrive on the
// replies' goroutine (onReply); the session's timer and the gateway's
// leader and reconnect watches publish again (onTimer, recover). None of
// them blocks.
type pubQueue struct {
	env     pubEnv
	clock   func() time.Time // time.Now; a test's own clock in tests
	ackWait time.Duration    // pubAckWait, or Config.PubAckWait
	// slots holds one token per write queued: MaxPendingSends at most.
	// The read loop takes one before add, so a full queue stops it
	// reading from the socket: backpressure on a sender that outruns the
	// store. The queue gives the token back when the write is done.
	slots chan struct{}

	// mu guards the fields below. Writes are published and answers sent
	// under it, so both keep the queue's order.
	mu      sync.Mutex
	items   []*pubItem // by number, which is the order they arrived in
	next    uint64     // the next item's number
	timerAt time.Time  // when the session's timer is set for (zero: not set)
	closed  bool
	drained chan struct{} // made by close while items remain; closed once none do
	// held is not nil while sends are held behind one answered with a
	// retryable code: the ids answered so since (see hold).
	held map[string]struct{}
}

// maxHeld bounds the ids a hold remembers. A client that keeps writing
// new sends past it while held gets no answer it can end the hold with
// and must reconnect; the SDKs write at most their window of 64.
const maxHeld = 1024

func (q *pubQueue) init(env pubEnv, slots int, ackWait time.Duration) {
	q.env, q.clock, q.ackWait = env, time.Now, cmp.Or(ackWait, pubAckWait)
	q.slots = make(chan struct{}, slots)
	q.next = 1
}

// add queues a send the caller took a slot for. It is published once
// every send before it is done.
func (q *pubQueue) add(it *pubItem) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		<-q.slots
		return
	}
	if q.held != nil {
		if _, again := q.held[it.id]; !again {
			q.holdLocked(it.id)
			q.env.refuse(protocol.ErrStoreFailed, "an earlier message was not stored; resend it first, then this one with the same id", it.id, 0)
			<-q.slots
			return
		}
		q.held = nil // the client resends what the hold refused
	}
	now := q.clock()
	it.n, it.since = q.next, now
	q.next++
	q.items = append(q.items, it)
	if len(q.items) == 1 {
		q.startSendLocked(it, now)
	}
}

// hold records that the session answered send id with a retryable code
// before queueing it: sends arriving after it are held back until it, or
// another send the hold refused, comes again.
func (q *pubQueue) hold(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.holdLocked(id)
}

// holdLocked starts a hold, or adds id to the one under way.
//
// Lock should be held.
func (q *pubQueue) holdLocked(id string) {
	if q.held == nil {
		q.held = map[string]struct{}{}
	}
	if len(q.held) < maxHeld {
		q.held[id] = struct{}{}
	}
}

// owed is how many writes are queued and not yet done.
func (q *pubQueue) owed() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// startSendLocked publishes the send now first in line, letting its
// recipient download its media first if it has any, or checking the
// sender is a member of the group it goes to.
//
// Lock should be held.
func (q *pubQueue) startSendLocked(it *pubItem, now time.Time) {
	if it.media != nil || it.group != "" {
		it.state = pubGranting
		q.env.grant(it)
		return
	}
	q.publishLocked(it, now)
}

// granted takes the outcome of a media send's grant, or of a group
// send's check: the message is published (with its media reference, if
// ref is not nil), or refused with code.
func (q *pubQueue) granted(it *pubItem, ref []byte, code protocol.ErrorCode, message string, storedAt uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clock()
	if it.state != pubGranting || q.findLocked(it.n) != it {
		return // given up or dropped meanwhile
	}
	it.media = nil
	if code != "" && storedAt != 0 {
		// Refused now, but a resend of a send stored before: answered
		// as stored (session.storedAlready).
		it.state = pubInFlight
		q.storedLocked(it, pubAck{seq: storedAt, dup: true}, now)
		return
	}
	if code != "" {
		q.refuseLocked(it, code, message, now)
		return
	}
	if ref != nil {
		it.msg.Header.Set(contract.HdrMedia, string(ref))
	}
	q.publishLocked(it, now)
}

// publishLocked publishes it (again).
//
// Lock should be held.
func (q *pubQueue) publishLocked(it *pubItem, now time.Time) {
	it.attempt++
	if err := q.env.publish(it.msg, it.n, it.attempt); err != nil {
		q.failLocked(it, err, now)
		return
	}
	it.state = pubInFlight
	it.due = dueBy(it, now.Add(q.ackWait<<min(it.attempt-max(it.ownFrom, 1), 3))) // doubling per attempt at this write
	q.wakeLocked(it.due)
}

// dueBy is at, or it's give-up time if that comes first: a wait between
// attempts never carries a send past pubGiveUp (the waits double to 8 s,
// and 1+2+4+8 s would have given it up at 15).
func dueBy(it *pubItem, at time.Time) time.Time {
	if giveUp := it.since.Add(pubGiveUp); at.After(giveUp) {
		return giveUp
	}
	return at
}

// failLocked handles a write refused, or a publish that failed: published
// again later if it may yet succeed, else given up.
//
// Lock should be held.
func (q *pubQueue) failLocked(it *pubItem, err error, now time.Time) {
	if it.group != "" {
		switch {
		case groupChanged(err) && it.rechecks < maxRechecks:
			// Checked against a record a change has overtaken: checked
			// again, against the group's log (session.checkGroupSend).
			it.rechecks++
			it.busy, it.refusals = 0, 0
			it.state = pubGranting
			q.env.grant(it)
			return
		case contract.IsBusy(err):
			// Another store conditional on the group's changes was in
			// flight (a send of another member, a change; nats-server
			// proposes one such store per subject at a time): nothing
			// is known to have changed, so again shortly, as checked.
			it.busy++
			it.refusals = 0 // the stream answered: it is there
			it.state = pubRefused
			it.due = dueBy(it, now.Add(contract.BusyWait(it.busy)))
			q.wakeLocked(it.due)
			return
		}
	}
	it.busy = 0
	if !transient(err) {
		q.failedLocked(it, now)
		return
	}
	it.refusals++
	it.state = pubRefused
	it.due = dueBy(it, now.Add(min(pubRetryMin<<min(it.refusals-1, 10), pubRetryMax)))
	q.wakeLocked(it.due)
}

// maxRechecks bounds how often one group send is checked again because
// changes of its group kept overtaking its checks; past it the send is
// answered store_failed, and the client resends it. Each check again
// reads the group's latest change, so each refusal is a change stored
// after the one before: only a group changing faster than its sends are
// stored, all along, comes to it. (A send that waits out busy
// refusals, up to 50 ms each, on a replicated GROUPS can meet several
// changes of an admin's burst.)
const maxRechecks = 16

// groupChanged tells whether err is the store refusing a group send
// because the group's event subject no longer ends where the send's
// check read it: a change was stored since.
func groupChanged(err error) bool {
	return contract.APICode(err) == jetstream.JSErrCodeStreamWrongLastSequence
}

// onReply takes the answer to item n's attempt a: a PubAck or a refusal.
func (q *pubQueue) onReply(n, a uint64, m *nats.Msg) {
	q.mu.Lock()
	defer q.mu.Unlock()
	it := q.findLocked(n)
	if it == nil || a == 0 || a > it.attempt || a < it.ownFrom {
		return // unknown, or about the send when its own copy is awaited
	}
	now := q.clock()
	ack, err := parsePubAck(m)
	switch {
	case err == nil:
		q.storedLocked(it, ack, now)
	case a == it.attempt && it.state == pubInFlight:
		q.failLocked(it, err, now)
	}
}

// storedLocked completes a write JetStream stored.
//
// Lock should be held.
func (q *pubQueue) storedLocked(it *pubItem, ack pubAck, now time.Time) {
	if it.state == pubOwnCheck {
		return // the PubAck of an earlier attempt, late
	}
	if it.checkOwn {
		it.checkOwn = false
		other, known := q.env.checkOwn(it, ack.seq)
		if !known {
			it.state, it.sent = pubOwnCheck, ack
			return
		}
		if other {
			it.own = contract.OwnCopy(it.msg.Header, it.to, 0, it.msg.Data)
		}
	}
	if it.own != nil && it.ownFrom == 0 {
		// The send is stored; its own copy next, under the same rules
		// (a resend of the send finds it stored and stores the copy).
		it.sent, it.msg, it.ownFrom = ack, it.own, it.attempt+1
		it.msg.Header.Set(contract.HdrSentSeq, strconv.FormatUint(ack.seq, 10))
		// A write of its own: its waits start afresh, and so does the
		// time it has before the send is given up.
		it.refusals, it.since = 0, now
		q.publishLocked(it, now)
		return
	}
	if it.ownFrom != 0 {
		ack = it.sent
	}
	q.env.stored()
	q.env.answer(protocol.AppendSent(nil, it.id, ack.seq, it.ts, ack.dup))
	q.removeLocked(it, now)
}

// ownChecked takes the answer to checkOwn for send it: its own copy is
// stored before it is answered if other, else it is answered now.
func (q *pubQueue) ownChecked(it *pubItem, other bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if it.state != pubOwnCheck || q.findLocked(it.n) != it {
		return // dropped meanwhile
	}
	it.state = pubInFlight
	if other {
		it.own = contract.OwnCopy(it.msg.Header, it.to, 0, it.msg.Data)
	}
	q.storedLocked(it, it.sent, q.clock())
}

// failedLocked answers a send that was not stored with store_failed,
// whether the store stayed unavailable until it was given up or refused
// the message itself: the client resends it either way.
//
// Lock should be held.
func (q *pubQueue) failedLocked(it *pubItem, now time.Time) {
	q.refuseLocked(it, protocol.ErrStoreFailed, "message was not stored; resend with the same id", now)
}

// refuseLocked answers the send first in line with code and takes it off
// the queue. When the client resends a send refused with code (the
// protocol marks code retryable), every send queued behind it is taken
// along first, unpublished, and answered store_failed: stored now, a send
// behind it would overtake its resend. Otherwise (not a member, media
// that cannot be shared) the client does not resend it, and the next send
// is published.
//
// Lock should be held.
func (q *pubQueue) refuseLocked(it *pubItem, code protocol.ErrorCode, message string, now time.Time) {
	q.env.refuse(code, message, it.id, 0)
	if protocol.Retryable(code) {
		// A hold under way refused only sends newer than it (nothing
		// was queued behind a hold), so only its resend, or the resend
		// of one behind it, may end the hold: not theirs.
		q.held = nil
		q.holdLocked(it.id)
		for i := 0; i < len(q.items); {
			if b := q.items[i]; b.n > it.n {
				q.holdLocked(b.id)
				q.env.refuse(protocol.ErrStoreFailed, "an earlier message was not stored; resend both with the same ids", b.id, 0)
				q.removeLocked(b, now) // not first in line: publishes nothing
				continue
			}
			i++
		}
	}
	q.removeLocked(it, now)
}

// removeLocked takes a done write off the queue, gives its slot back and,
// if it was the send first in line, starts the next.
//
// Lock should be held.
func (q *pubQueue) removeLocked(it *pubItem, now time.Time) {
	i := sort.Search(len(q.items), func(i int) bool { return q.items[i].n >= it.n })
	if i == len(q.items) || q.items[i] != it {
		return
	}
	wasFirst := i == 0
	copy(q.items[i:], q.items[i+1:])
	q.items[len(q.items)-1] = nil
	q.items = q.items[:len(q.items)-1]
	<-q.slots
	if len(q.items) == 0 {
		q.items = q.items[:0:0] // keep no buffer while idle
		if q.drained != nil {
			close(q.drained)
			q.drained = nil
		}
		return
	}
	if wasFirst {
		q.startSendLocked(q.items[0], now)
	}
}

// findLocked is item n, nil if it is done.
//
// Lock should be held.
func (q *pubQueue) findLocked(n uint64) *pubItem {
	i := sort.Search(len(q.items), func(i int) bool { return q.items[i].n >= n })
	if i < len(q.items) && q.items[i].n == n {
		return q.items[i]
	}
	return nil
}

// wakeLocked has the session's timer run onTimer by at.
//
// Lock should be held.
func (q *pubQueue) wakeLocked(at time.Time) {
	if q.timerAt.IsZero() || at.Before(q.timerAt) {
		q.timerAt = at
		q.env.wakeAt(at)
	}
}

// onTimer acts on every write whose time has come: a send not stored
// within pubGiveUp of arriving is given up (with those behind it), any
// other write too; the rest whose PubAck is overdue, or that were refused
// for now, are published again.
func (q *pubQueue) onTimer() {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clock()
	q.timerAt = time.Time{}
	for i := 0; i < len(q.items); {
		it := q.items[i]
		q.actLocked(it, now)
		if i < len(q.items) && q.items[i] == it {
			i++
		} // else it is done, and what followed it moved up
	}
	var next time.Time
	for _, it := range q.items {
		if it.state == pubWaiting || it.state == pubGranting || it.state == pubOwnCheck {
			continue // the one before it, or the check, decides when it goes
		}
		if next.IsZero() || it.due.Before(next) {
			next = it.due
		}
	}
	if !next.IsZero() {
		q.wakeLocked(next)
	}
}

// actLocked does what is due for it at now.
//
// Lock should be held.
func (q *pubQueue) actLocked(it *pubItem, now time.Time) {
	if it.state == pubWaiting || it.state == pubGranting || it.state == pubOwnCheck || now.Before(it.due) {
		return // the one before it, or a grant's or check's own timeout, decides
	}
	switch {
	case now.Sub(it.since) >= pubGiveUp:
		q.failedLocked(it, now)
	case it.state == pubRefused:
		q.env.republished(republishRefused)
		q.publishLocked(it, now)
	default:
		q.env.republished(republishOverdue)
		q.publishLocked(it, now)
	}
}

// recover publishes again, at once, every write whose PubAck has not
// come: after an INBOX leader change or a
// restored NATS connection, their answers may be lost, and waiting for
// pubAckWait would hold the session's sends that long.
func (q *pubQueue) recover(reason string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clock()
	// A publish that fails for good takes items off the queue: go by a
	// copy, past those gone meanwhile.
	for _, it := range slices.Clone(q.items) {
		if q.findLocked(it.n) != it {
			continue
		}
		switch it.state {
		case pubInFlight, pubRefused:
			q.env.republished(reason)
			q.publishLocked(it, now)
		}
	}
}

// close stops the queue taking writes. What it holds is still stored, in
// order, as if the device were there: a send the gateway accepted is
// stored even when its "sent" can no longer be answered (the device
// resends it after reconnecting, and the store keeps one copy). The
// returned channel is closed once the queue is empty.
func (q *pubQueue) close() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	done := make(chan struct{})
	if len(q.items) == 0 {
		close(done)
	} else {
		q.drained = done
	}
	return done
}

// abandon drops whatever close left, once the session stops waiting for
// it: no more attempts are made. The device resends its sends after
// reconnecting, and a message whose delivered event was not stored comes
// again.
func (q *pubQueue) abandon() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for range q.items {
		<-q.slots
	}
	q.items = nil
	q.drained = nil
}
