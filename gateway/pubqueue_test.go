package gateway

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// fakePubEnv records what a pubQueue does to its session.
type fakePubEnv struct {
	publishes   []published // every publish, in order
	failPublish error       // the next publish fails with it
	grants      []*pubItem
	ownChecks   []ownAsked        // checkOwn calls, answered by the test
	frames      []*protocol.Frame // answers and refusals
	wakes       []time.Time
	stores      int
	republishes []string
}

type ownAsked struct {
	it  *pubItem
	seq uint64
}

type published struct {
	id   string // Sb-Id of the message
	n, a uint64
	msg  *nats.Msg
}

func (e *fakePubEnv) publish(m *nats.Msg, n, a uint64) error {
	if err := e.failPublish; err != nil {
		e.failPublish = nil
		return err
	}
	e.publishes = append(e.publishes, published{id: m.Header.Get(contract.HdrID), n: n, a: a, msg: m})
	return nil
}

func (e *fakePubEnv) grant(it *pubItem) { e.grants = append(e.grants, it) }

func (e *fakePubEnv) checkOwn(it *pubItem, seq uint64) (other, known bool) {
	e.ownChecks = append(e.ownChecks, ownAsked{it, seq})
	return false, false
}

func (e *fakePubEnv) answer(frame []byte) {
	f, err := protocol.DecodeServer(frame)
	if err != nil {
		panic(err)
	}
	e.frames = append(e.frames, f)
}

func (e *fakePubEnv) refuse(code protocol.ErrorCode, message, id string, seq uint64) {
	e.frames = append(e.frames, &protocol.Frame{Type: protocol.TypeError, Code: code, Message: message, ID: id, Seq: seq})
}

func (e *fakePubEnv) wakeAt(at time.Time)       { e.wakes = append(e.wakes, at) }
func (e *fakePubEnv) stored()                   { e.stores++ }
func (e *fakePubEnv) republished(reason string) { e.republishes = append(e.republishes, reason) }
func (e *fakePubEnv) last() published           { return e.publishes[len(e.publishes)-1] }
func (e *fakePubEnv) ids() (ids []string)       { return idsOf(e.publishes) }
func idsOf(ps []published) (ids []string)       { return appendIDs(nil, ps) }
func appendIDs(b []string, ps []published) []string {
	for _, p := range ps {
		b = append(b, p.id)
	}
	return b
}

// answers lists the frames as "sent:<id>:<seq>" and "<code>:<id or seq>".
func (e *fakePubEnv) answers() []string {
	var out []string
	for _, f := range e.frames {
		switch f.Type {
		case protocol.TypeSent:
			out = append(out, fmt.Sprintf("sent:%s:%d", f.ID, f.Seq))
		default:
			if f.ID != "" {
				out = append(out, string(f.Code)+":"+f.ID)
			} else {
				out = append(out, string(f.Code)+":"+strconv.FormatUint(f.Seq, 10))
			}
		}
	}
	return out
}

// testQueue is a queue over a fake env, on a clock the test moves.
type testQueue struct {
	*pubQueue
	now time.Time
}

func newTestQueue(slots int) (*testQueue, *fakePubEnv) {
	env := &fakePubEnv{}
	q := &testQueue{pubQueue: &pubQueue{}, now: time.Now()}
	q.init(env, slots, 0)
	q.clock = func() time.Time { return q.now }
	return q, env
}

// at moves the clock to at and runs what the session's timer would.
func (q *testQueue) at(at time.Time) {
	q.now = at
	q.onTimer()
}

// put queues a write at now, as the read loop does: a slot first.
func (q *testQueue) put(t *testing.T, it *pubItem, now time.Time) {
	t.Helper()
	select {
	case q.slots <- struct{}{}:
	default:
		t.Fatal("no slot free")
	}
	q.now = now
	q.add(it)
}

func sendItem(id string) *pubItem {
	return &pubItem{id: id, to: "bob", ts: 1,
		msg: &nats.Msg{Subject: contract.InboxSubject("bob"), Header: nats.Header{contract.HdrID: {id}}}}
}

func ackMsg(seq uint64, dup bool) *nats.Msg {
	if dup {
		return &nats.Msg{Data: []byte(`{"stream":"INBOX","seq":` + strconv.FormatUint(seq, 10) + `,"duplicate": true}`)}
	}
	return &nats.Msg{Data: []byte(`{"stream":"INBOX","seq":` + strconv.FormatUint(seq, 10) + `}`)}
}

func noResponders() *nats.Msg { return &nats.Msg{Header: nats.Header{"Status": {"503"}}} }

func apiError(code, errCode int) *nats.Msg {
	return &nats.Msg{Data: []byte(fmt.Sprintf(`{"error":{"code":%d,"err_code":%d,"description":"no"},"stream":"INBOX","seq":0}`, code, errCode))}
}

func expectStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: %q, want %q", what, got, want)
	}
}

// One send is published at a time, in the order they arrived; each PubAck
// answers its send and publishes the next.
func TestPubQueueSendsOneAtATime(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.put(t, sendItem("s1"), now)
	q.put(t, sendItem("s2"), now)
	q.put(t, sendItem("s3"), now)
	expectStrings(t, "published", env.ids(), []string{"s1"})
	for i, want := range []string{"s2", "s3"} {
		q.onReply(env.last().n, env.last().a, ackMsg(uint64(10+i), false))
		if got := env.last().id; got != want {
			t.Fatalf("after a PubAck the queue published %s, want %s", got, want)
		}
	}
	if q.owed() != 1 || len(q.slots) != 1 {
		t.Fatalf("%d sends owed, %d slots taken, want s3 only", q.owed(), len(q.slots))
	}
	q.onReply(env.last().n, env.last().a, ackMsg(12, false))
	expectStrings(t, "answers", env.answers(), []string{"sent:s1:10", "sent:s2:11", "sent:s3:12"})
	if q.owed() != 0 || len(q.slots) != 0 || env.stores != 3 {
		t.Fatalf("%d owed, %d slots, %d stored: want 0, 0, 3", q.owed(), len(q.slots), env.stores)
	}
}

// A PubAck lost in a leader change: the send is published again, at once,
// under the same message, when the new leader is known; the sends behind
// it wait; the second PubAck (a duplicate: the first publish was stored)
// answers it.
func TestPubQueueRecoversALostPubAck(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.put(t, sendItem("s1"), now)
	q.put(t, sendItem("s2"), now)
	first := env.last()
	q.recover(republishLeader)
	again := env.last()
	if again.msg != first.msg || again.a != first.a+1 || again.id != "s1" {
		t.Fatalf("recover published %+v, want s1 again as attempt %d", again, first.a+1)
	}
	expectStrings(t, "republished", env.republishes, []string{republishLeader})
	q.onReply(again.n, again.a, ackMsg(7, true))
	expectStrings(t, "answers", env.answers(), []string{"sent:s1:7"})
	if !env.frames[0].Dup {
		t.Fatal("sent without dup for a copy stored by the first publish")
	}
	expectStrings(t, "published", env.ids(), []string{"s1", "s1", "s2"})
	// The first publish's PubAck, late, changes nothing.
	q.onReply(first.n, first.a, ackMsg(7, false))
	expectStrings(t, "answers", env.answers(), []string{"sent:s1:7"})
}

// With no word of a leader change, a PubAck that does not come within
// pubAckWait is given up on and the write published again.
func TestPubQueueRepublishesAnOverdueWrite(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.put(t, sendItem("s1"), now)
	if len(env.wakes) == 0 || env.wakes[0] != now.Add(pubAckWait) {
		t.Fatalf("timer set for %v, want %v", env.wakes, now.Add(pubAckWait))
	}
	q.at(now.Add(pubAckWait - time.Millisecond))
	expectStrings(t, "published", env.ids(), []string{"s1"})
	q.at(now.Add(pubAckWait))
	expectStrings(t, "published", env.ids(), []string{"s1", "s1"})
	expectStrings(t, "republished", env.republishes, []string{republishOverdue})
	if got := env.wakes[len(env.wakes)-1]; got != now.Add(3*pubAckWait) {
		t.Fatalf("next wait until %v, want twice as long: %v", got, now.Add(3*pubAckWait))
	}
}

// A refusal for now (no leader: no responders, or a 503) is published
// again after a short wait, and the sends behind it wait; an error from
// an attempt that was published again since changes nothing.
func TestPubQueueRetriesARefusal(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.put(t, sendItem("s1"), now)
	q.put(t, sendItem("s2"), now)
	q.onReply(env.last().n, env.last().a, noResponders())
	q.at(now.Add(pubRetryMin))
	expectStrings(t, "published", env.ids(), []string{"s1", "s1"})
	q.onReply(env.last().n, env.last().a, apiError(503, 10077))
	q.onReply(env.publishes[0].n, env.publishes[0].a, noResponders()) // the first attempt's, late
	q.at(now.Add(pubRetryMin + 2*pubRetryMin))
	expectStrings(t, "published", env.ids(), []string{"s1", "s1", "s1"})
	expectStrings(t, "republished", env.republishes, []string{republishRefused, republishRefused})
	q.onReply(env.last().n, env.last().a, ackMsg(3, false))
	expectStrings(t, "published", env.ids(), []string{"s1", "s1", "s1", "s2"})
	if len(env.frames) != 1 || env.frames[0].Type != protocol.TypeSent {
		t.Fatalf("answers %q, want s1 sent and nothing else", env.answers())
	}
}

// A refusal for good (the stream refuses what the message is) is answered
// store_failed at once. The client resends a send answered store_failed,
// so the sends queued behind it are answered store_failed too, without
// being published: stored now, they would overtake its resend. So is a
// later send, until s1 comes again.
func TestPubQueueAnswersAFinalRefusal(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.put(t, sendItem("s1"), now)
	q.put(t, sendItem("s2"), now)
	q.put(t, sendItem("s3"), now)
	q.onReply(env.last().n, env.last().a, apiError(400, 10054))
	expectStrings(t, "answers", env.answers(), []string{"store_failed:s1", "store_failed:s2", "store_failed:s3"})
	expectStrings(t, "published", env.ids(), []string{"s1"})
	if q.owed() != 0 || len(q.slots) != 0 {
		t.Fatalf("%d owed, %d slots taken after the refusal", q.owed(), len(q.slots))
	}
	q.put(t, sendItem("s4"), now)
	q.put(t, sendItem("s1"), now)
	expectStrings(t, "published", env.ids(), []string{"s1", "s1"})
	expectStrings(t, "answers", env.answers()[3:], []string{"store_failed:s4"})
}

// A send not stored within pubGiveUp of arriving is given up, and with it
// every send queued behind it: the client resends them all, in order. A
// later send waits for that resend.
func TestPubQueueGivesUpInOrder(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.put(t, sendItem("s1"), now)
	q.put(t, sendItem("s2"), now.Add(time.Second))
	q.put(t, sendItem("s3"), now.Add(2*time.Second))
	// The store has no leader: every attempt is refused.
	at := now
	for at.Before(now.Add(pubGiveUp)) {
		for _, p := range env.publishes {
			q.onReply(p.n, p.a, noResponders())
		}
		at = at.Add(pubAckWait)
		q.at(at)
	}
	expectStrings(t, "answers", env.answers(), []string{"store_failed:s1", "store_failed:s2", "store_failed:s3"})
	// Had s2 or s3 been published on the way, a store back just then
	// would keep them, ahead of s1's resend.
	for _, id := range env.ids() {
		if id != "s1" {
			t.Fatalf("published %q: only s1 may be", env.ids())
		}
	}
	if q.owed() != 0 || len(q.slots) != 0 {
		t.Fatalf("%d owed, %d slots taken after giving up", q.owed(), len(q.slots))
	}
	// s4 was on the wire: stored now, it would overtake s1's resend.
	q.put(t, sendItem("s4"), at)
	expectStrings(t, "answers", env.answers()[3:], []string{"store_failed:s4"})
	q.put(t, sendItem("s1"), at)
	if env.last().id != "s1" {
		t.Fatalf("published %s, want s1's resend at once", env.last().id)
	}
}

// A media send is published once its recipient may download its object;
// the sends behind it wait meanwhile, and go on if it is refused.
func TestPubQueueGrantsBeforeMedia(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	p1 := sendItem("p1")
	p1.media = &protocol.Media{Key: "u/alice/x"}
	p2 := sendItem("p2")
	p2.media = &protocol.Media{Key: "u/alice/y"}
	q.put(t, p1, now)
	q.put(t, p2, now)
	q.put(t, sendItem("s3"), now)
	if len(env.grants) != 1 || len(env.publishes) != 0 {
		t.Fatalf("%d grants, %d publishes: want p1's grant only", len(env.grants), len(env.publishes))
	}
	q.granted(p1, []byte(`{"key":"u/alice/x"}`), "", "", 0)
	if got := env.last(); got.id != "p1" || got.msg.Header.Get(contract.HdrMedia) != `{"key":"u/alice/x"}` {
		t.Fatalf("published %s with media %q", got.id, got.msg.Header.Get(contract.HdrMedia))
	}
	q.onReply(env.last().n, env.last().a, ackMsg(1, false))
	if len(env.grants) != 2 {
		t.Fatalf("%d grants, want p2's next", len(env.grants))
	}
	q.granted(p2, nil, protocol.ErrBadMedia, "not uploaded", 0)
	expectStrings(t, "published", env.ids(), []string{"p1", "s3"})
	expectStrings(t, "answers", env.answers(), []string{"sent:p1:1", "bad_media:p2"})
}

// A group send is published once its sender is found to be a member,
// with no media reference; the sends behind it, to users or groups, wait
// meanwhile and go on when it is refused. Lost, it is published again
// like any send.
func TestPubQueueChecksGroupSendsInOrder(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	g1 := sendItem("g1")
	g1.group = "friends"
	g2 := sendItem("g2")
	g2.group = "strangers"
	q.put(t, g1, now)
	q.put(t, sendItem("s2"), now)
	q.put(t, g2, now)
	q.put(t, sendItem("s4"), now)
	if len(env.grants) != 1 || len(env.publishes) != 0 {
		t.Fatalf("%d checks, %d publishes: want g1's check only", len(env.grants), len(env.publishes))
	}
	q.granted(g1, nil, "", "", 0)
	if got := env.last(); got.id != "g1" || got.msg.Header.Get(contract.HdrMedia) != "" {
		t.Fatalf("published %s with media %q", got.id, got.msg.Header.Get(contract.HdrMedia))
	}
	// Its PubAck is lost: it goes again, and s2 still waits.
	q.at(now.Add(pubAckWait))
	expectStrings(t, "published", env.ids(), []string{"g1", "g1"})
	q.onReply(env.last().n, env.last().a, ackMsg(7, false))
	expectStrings(t, "published", env.ids(), []string{"g1", "g1", "s2"})
	q.onReply(env.last().n, env.last().a, ackMsg(8, false))
	if len(env.grants) != 2 || env.grants[1] != g2 {
		t.Fatalf("%d checks, want g2's next", len(env.grants))
	}
	q.granted(g2, nil, protocol.ErrNotMember, "not a member", 0)
	expectStrings(t, "published", env.ids(), []string{"g1", "g1", "s2", "s4"})
	expectStrings(t, "answers", env.answers(), []string{"sent:g1:7", "sent:s2:8", "not_member:g2"})
}

// A group send whose check cannot be made now (unavailable, which the
// client resends) holds the sends behind it back like a store that
// failed: they are answered store_failed, unpublished, and go again after
// it.
func TestPubQueueHoldsTheSendsBehindARetryableRefusal(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	g1 := sendItem("g1")
	g1.group = "friends"
	q.put(t, g1, now)
	q.put(t, sendItem("s2"), now)
	q.granted(g1, nil, protocol.ErrUnavailable, "groups are unavailable; resend", 0)
	expectStrings(t, "answers", env.answers(), []string{"unavailable:g1", "store_failed:s2"})
	expectStrings(t, "published", env.ids(), nil)
	if q.owed() != 0 || len(q.slots) != 0 {
		t.Fatalf("%d owed, %d slots taken after the refusal", q.owed(), len(q.slots))
	}
}

// A publish that fails for good while the queue publishes again after a
// reconnect takes its send (and those behind it) off the queue as the
// queue is gone through: nothing is published or answered twice, and
// the gateway does not fall over.
func TestPubQueueRecoversPastAPublishThatFailsForGood(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.put(t, sendItem("s1"), now)
	q.put(t, sendItem("s2"), now)
	env.failPublish = nats.ErrConnectionClosed
	q.recover(republishReconnect)
	expectStrings(t, "answers", env.answers(), []string{"store_failed:s1", "store_failed:s2"})
	expectStrings(t, "published", env.ids(), []string{"s1"})
	if q.owed() != 0 {
		t.Fatalf("%d owed", q.owed())
	}
}

// A closed queue takes nothing more but still stores what it holds, in
// order; its channel closes once it is empty.
func TestPubQueueDrainsWhenClosed(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.put(t, sendItem("s1"), now)
	q.put(t, sendItem("s2"), now)
	drained := q.close()
	select {
	case q.slots <- struct{}{}:
		q.add(sendItem("late"))
	default:
		t.Fatal("no slot")
	}
	q.onReply(env.last().n, env.last().a, ackMsg(1, false))
	q.onReply(env.last().n, env.last().a, ackMsg(2, false))
	expectStrings(t, "published", env.ids(), []string{"s1", "s2"})
	select {
	case <-drained:
	default:
		t.Fatal("not drained with nothing left")
	}
	if len(q.slots) != 0 {
		t.Fatalf("%d slots taken", len(q.slots))
	}
}

// The PubAck as nats-server writes it, and what else may answer a
// publish.
func TestParsePubAck(t *testing.T) {
	for _, c := range []struct {
		data   string
		status string
		want   pubAck
		err    error
	}{
		{data: `{"stream":"INBOX","seq":42}`, want: pubAck{seq: 42}},
		{data: `{"stream":"INBOX","seq":42,"duplicate": true}`, want: pubAck{seq: 42, dup: true}},
		{data: `{"stream":"INBOX","seq":42,"duplicate":true}`, want: pubAck{seq: 42, dup: true}},
		{data: `{"stream":"INBOX","domain":"hub","seq":7}`, want: pubAck{seq: 7}},
		{data: `{"seq":9,"stream":"INBOX"}`, want: pubAck{seq: 9}},
		{status: "503", err: nats.ErrNoResponders},
		{data: `not json`, err: errBadPubAck},
		{data: `{"stream":"","seq":3}`, err: errBadPubAck},
		{data: `{"stream":"INBOX","seq":0}`, err: errBadPubAck},
	} {
		m := &nats.Msg{Data: []byte(c.data), Header: nats.Header{}}
		if c.status != "" {
			m.Header.Set("Status", c.status)
		}
		got, err := parsePubAck(m)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("%q: %+v, %v; want %+v, %v", c.data, got, err, c.want, c.err)
		}
	}
	_, err := parsePubAck(apiError(503, 10077))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10077 || !transient(err) {
		t.Errorf("a 503 store failure: %v, want a transient API error", err)
	}
	if _, err := parsePubAck(apiError(400, 10054)); err == nil || transient(err) {
		t.Errorf("a 400: %v, want a final API error", err)
	}
}

// Sends that arrive after one was answered with a retryable code (they
// were on the wire) are refused unqueued until the client resends it: a
// send stored then would overtake the resend. The resend ends the hold.
func TestPubQueueHoldsLaterArrivalsUntilTheResend(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	g1 := sendItem("g1")
	g1.group = "friends"
	q.put(t, g1, now)
	q.granted(g1, nil, protocol.ErrUnavailable, "groups are unavailable; resend", 0)
	q.put(t, sendItem("s2"), now)
	q.put(t, sendItem("s3"), now)
	expectStrings(t, "answers", env.answers(), []string{"unavailable:g1", "store_failed:s2", "store_failed:s3"})
	if q.owed() != 0 || len(q.slots) != 0 {
		t.Fatalf("%d owed, %d slots taken while held", q.owed(), len(q.slots))
	}

	// The resend of g1 ends the hold; s2 and s3 follow it.
	g1 = sendItem("g1")
	g1.group = "friends"
	q.put(t, g1, now)
	q.granted(g1, nil, "", "", 0)
	q.put(t, sendItem("s2"), now)
	q.onReply(g1.n, g1.attempt, ackMsg(7, false))
	expectStrings(t, "published", env.ids(), []string{"g1", "s2"})
}

// A send refused on arrival with a retryable code (rate_limited) holds the
// sends after it the same way; any send the hold refused ends it when it
// comes again (the client may have withdrawn the first).
func TestPubQueueHoldsBehindASendRefusedOnArrival(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	q.hold("s1")
	q.put(t, sendItem("s2"), now)
	expectStrings(t, "answers", env.answers(), []string{"store_failed:s2"})
	expectStrings(t, "published", env.ids(), nil)
	q.put(t, sendItem("s2"), now)
	expectStrings(t, "published", env.ids(), []string{"s2"})
}

// crossRegionItem is alice's send id to bob, homed in eu, with its own
// copy, as the session queues it.
func crossRegionItem(id string) *pubItem {
	x := sendItem(id)
	x.msg.Subject = contract.OutboxSubject("eu", "bob")
	x.msg.Header.Set(contract.HdrFrom, "alice")
	x.own = contract.OwnCopy(x.msg.Header, "bob", 0, nil)
	return x
}

// A send to another region is answered once its copy for the sender's
// own inbox is stored too, the copy naming the send's seq; an answer
// about the send that comes late (an earlier attempt's PubAck) is not
// taken for the copy's, and the next send waits for both.
func TestPubQueueStoresAnOwnCopyBeforeAnswering(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	x := crossRegionItem("x1")
	q.put(t, x, now)
	q.put(t, sendItem("s2"), now)
	q.at(now.Add(pubAckWait)) // no PubAck: published again
	q.onReply(x.n, 2, ackMsg(1<<52+5, false))
	own := env.last()
	if own.msg.Subject != contract.InboxSubject("alice") || own.msg.Header.Get(contract.HdrSentSeq) != strconv.FormatUint(1<<52+5, 10) ||
		own.msg.Header.Get(contract.HdrTo) != "bob" {
		t.Fatalf("published %s %v, want the own copy naming the send's seq", own.msg.Subject, own.msg.Header)
	}
	q.onReply(x.n, 1, ackMsg(1<<52+5, true)) // the first attempt's, late
	expectStrings(t, "answers", env.answers(), nil)
	q.onReply(own.n, own.a, ackMsg(40, false))
	expectStrings(t, "answers", env.answers(), []string{fmt.Sprintf("sent:x1:%d", 1<<52+5)})
	expectStrings(t, "published", env.ids(), []string{"x1", "x1", "x1", "s2"})
}

// A hold that refused newer sends is taken over by an older send refused
// later: only the older one's resend ends it. (Its client withdrew s2, so
// it writes s3 next; stored then, s3 would overtake g1's resend.)
func TestPubQueueHoldFollowsTheOldestRefused(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	g1 := sendItem("g1")
	g1.group = "friends"
	q.put(t, g1, now)
	q.hold("s2")                  // rate_limited on arrival
	q.put(t, sendItem("s3"), now) // on the wire: refused by the hold
	q.granted(g1, nil, protocol.ErrUnavailable, "groups are unavailable; resend", 0)
	q.put(t, sendItem("s3"), now)
	expectStrings(t, "published", env.ids(), nil)
	expectStrings(t, "answers", env.answers(), []string{"store_failed:s3", "unavailable:g1", "store_failed:s3"})
	g1 = sendItem("g1")
	g1.group = "friends"
	q.put(t, g1, now)
	q.granted(g1, nil, "", "", 0)
	expectStrings(t, "published", env.ids(), []string{"g1"})
}

// The own copy is a write of its own: retried from a fresh wait, and
// given up only pubGiveUp after it was first published, however long the
// send took to store.
func TestPubQueueRetriesAnOwnCopyAfresh(t *testing.T) {
	q, env := newTestQueue(8)
	t0 := q.now
	x := crossRegionItem("x1")
	q.put(t, x, t0)
	q.at(t0.Add(pubAckWait))     // attempt 2
	q.at(t0.Add(3 * pubAckWait)) // attempt 3
	stored := t0.Add(3*pubAckWait + 100*time.Millisecond)
	q.now = stored
	q.onReply(x.n, 3, ackMsg(1<<52+5, false))
	if d := x.due.Sub(stored); d != pubAckWait {
		t.Fatalf("the copy's first wait is %s, want %s", d, pubAckWait)
	}
	for now := stored; now.Before(stored.Add(pubGiveUp)); now = now.Add(100 * time.Millisecond) {
		q.at(now) // every PubAck of the copy is lost
	}
	expectStrings(t, "answers", env.answers(), nil)
	copies := 0
	for _, p := range env.publishes {
		if p.msg.Subject == contract.InboxSubject("alice") {
			copies++
		}
	}
	if copies < 3 {
		t.Fatalf("the copy was published %d times within %s, want its waits doubling from %s", copies, pubGiveUp, pubAckWait)
	}
	q.at(stored.Add(pubGiveUp + pubAckWait<<3))
	expectStrings(t, "answers", env.answers(), []string{"store_failed:x1"})
}

// A send whose PubAcks never come is answered store_failed pubGiveUp
// after it arrived, as PROTOCOL.md says, not at the end of the doubling
// wait that carries it past that.
func TestPubQueueGivesUpOnTime(t *testing.T) {
	q, env := newTestQueue(8)
	start := q.now
	q.put(t, sendItem("s1"), start)
	for len(env.frames) == 0 {
		next := env.wakes[len(env.wakes)-1]
		if next.Sub(start) > pubGiveUp {
			t.Fatalf("next attempt %v after arrival, past the give-up at %v", next.Sub(start), pubGiveUp)
		}
		q.at(next)
	}
	expectStrings(t, "answers", env.answers(), []string{"store_failed:s1"})
	if got := q.now.Sub(start); got != pubGiveUp {
		t.Fatalf("given up %v after arrival, want %v", got, pubGiveUp)
	}
}

// localItem is a 1:1 send from alice to bob in this region, whose own
// copy depends on alice's devices.
func localItem(id string) *pubItem {
	x := sendItem(id)
	x.msg.Header.Set(contract.HdrFrom, "alice")
	x.checkOwn = true
	return x
}

// A 1:1 send is answered once it is known whether its sender has another
// device that is to get it, asked with the seq it was stored at: with a
// copy stored in the sender's inbox first if so, at once if not. The
// sends behind it wait for the answer, and a late PubAck of an earlier
// attempt asks nothing again.
func TestPubQueueAsksWhetherASendNeedsAnOwnCopy(t *testing.T) {
	q, env := newTestQueue(8)
	now := q.now
	l1, l2 := localItem("l1"), localItem("l2")
	q.put(t, l1, now)
	q.put(t, l2, now)
	q.at(now.Add(pubAckWait)) // no PubAck: published again
	q.onReply(l1.n, 2, ackMsg(5, false))
	q.onReply(l1.n, 1, ackMsg(5, true)) // the first attempt's, late
	if len(env.ownChecks) != 1 || env.ownChecks[0].it != l1 || env.ownChecks[0].seq != 5 {
		t.Fatalf("checks %+v, want one for l1 at seq 5", env.ownChecks)
	}
	q.at(now.Add(10 * pubAckWait)) // the check has no deadline of its own here
	expectStrings(t, "published", env.ids(), []string{"l1", "l1"})
	expectStrings(t, "answers", env.answers(), nil)

	q.ownChecked(l1, true)
	own := env.last()
	if own.msg.Subject != contract.InboxSubject("alice") || own.msg.Header.Get(contract.HdrSentSeq) != "5" ||
		own.msg.Header.Get(contract.HdrTo) != "bob" || own.msg.Header.Get(contract.HdrMsgID) != contract.OwnCopyDedupID("alice", "l1") {
		t.Fatalf("published %s %v, want alice's own copy naming seq 5", own.msg.Subject, own.msg.Header)
	}
	q.ownChecked(l1, true) // asked once, answered once: a second answer changes nothing
	q.onReply(own.n, own.a, ackMsg(6, false))
	expectStrings(t, "answers", env.answers(), []string{"sent:l1:5"})
	expectStrings(t, "published", env.ids(), []string{"l1", "l1", "l1", "l2"})

	q.onReply(env.last().n, env.last().a, ackMsg(7, false))
	q.ownChecked(l2, false)
	expectStrings(t, "answers", env.answers(), []string{"sent:l1:5", "sent:l2:7"})
	expectStrings(t, "published", env.ids(), []string{"l1", "l1", "l1", "l2"})
}

// A resend of a send already stored (the store answers duplicate: its
// "sent" was lost, perhaps with a gateway that died before the copy) is
// asked about and copied like the first: the copy's own dedup id keeps
// one.
func TestPubQueueCopiesAResendFoundStored(t *testing.T) {
	q, env := newTestQueue(8)
	l1 := localItem("l1")
	q.put(t, l1, q.now)
	q.onReply(l1.n, 1, ackMsg(5, true))
	q.ownChecked(l1, true)
	q.onReply(env.last().n, env.last().a, ackMsg(6, true))
	expectStrings(t, "answers", env.answers(), []string{"sent:l1:5"})
	if !env.frames[0].Dup {
		t.Fatal("the resend's sent frame does not say dup")
	}
}

// A group send refused as busy (another store conditional on the group's
// changes in flight) waits about a millisecond, doubling with each busy
// refusal in a row, and an unavailable stream's waits start at
// pubRetryMin: each kind counts its own, and an answer of the other kind
// starts it afresh, so neither backs the other off.
func TestPubQueueBusyAndUnavailableWaitApart(t *testing.T) {
	q, env := newTestQueue(8)
	g := sendItem("g1")
	g.group = "friends"
	q.put(t, g, q.now)
	q.granted(g, nil, "", "", 0)
	refuse := func(m *nats.Msg) time.Duration {
		t.Helper()
		published := len(env.publishes)
		q.onReply(env.last().n, env.last().a, m)
		wait := g.due.Sub(q.now)
		q.at(g.due)
		if len(env.publishes) != published+1 {
			t.Fatalf("not published again when due")
		}
		return wait
	}
	busy := func() *nats.Msg { return apiError(400, int(jetstream.JSErrCodeStreamWrongLastSequenceConstant)) }
	spread := func(w, want time.Duration) bool { return w >= want/2 && w < want*3/2 }
	for i := range 6 {
		if w, want := refuse(busy()), contract.BusyRetryMin<<i; !spread(w, want) {
			t.Fatalf("busy refusal %d: waited %v, want %v spread half either way", i+1, w, want)
		}
	}
	if w := refuse(noResponders()); w != pubRetryMin {
		t.Fatalf("unavailable after busy refusals: waited %v, want %v", w, pubRetryMin)
	}
	if w := refuse(busy()); !spread(w, contract.BusyRetryMin) {
		t.Fatalf("busy after unavailable: waited %v, want %v spread", w, contract.BusyRetryMin)
	}
	if w := refuse(noResponders()); w != pubRetryMin {
		t.Fatalf("unavailable after a busy answer: waited %v, want %v", w, pubRetryMin)
	}
	q.onReply(env.last().n, env.last().a, ackMsg(9, false))
	expectStrings(t, "answers", env.answers(), []string{"sent:g1:9"})
}
