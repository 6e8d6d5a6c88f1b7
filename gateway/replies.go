package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// replies carries the answers to everything this gateway asks of NATS
// without waiting on the spot, on one subscription (a wildcard under its
// own inbox prefix): batched stream reads, each to a channel of its own
// (a subscription per read would cost a 64k-slot channel each in
// nats.go), and its sessions' PubAcks, lease writes and single reads,
// each handed to the session that asked, on the subscription's goroutine.
//
// Reply subjects: <prefix>.<token> for a read, <prefix>.<owner>.<token>
// for a session's request.
type replies struct {
	nc     *nats.Conn
	prefix string
	sub    *nats.Subscription

	mu        sync.Mutex // guards the fields below; never held while an owner runs
	reads     map[string]chan *nats.Msg
	owners    map[uint64]replyOwner
	lastOwner uint64
}

// replyOwner takes the answers to its requests. onReply runs on the
// replies' goroutine and must not block.
type replyOwner interface {
	onReply(token string, m *nats.Msg)
}

func newReplies(nc *nats.Conn) (*replies, error) {
	r := &replies{nc: nc, prefix: nc.NewInbox(), reads: map[string]chan *nats.Msg{}, owners: map[uint64]replyOwner{}}
	sub, err := nc.Subscribe(r.prefix+".>", r.route)
	if err != nil {
		return nil, err
	}
	// A slow answer is better than a dropped one: a dropped PubAck costs
	// a publish again (pubAckWait), a dropped read answer a read again
	// (the end of a batch missing times out; one missing in the middle
	// breaks the batch's chain of sequences, directGetOn).
	_ = sub.SetPendingLimits(-1, 64<<20)
	r.sub = sub
	return r, nil
}

func (r *replies) route(m *nats.Msg) {
	if len(m.Subject) <= len(r.prefix)+1 {
		return
	}
	rest := m.Subject[len(r.prefix)+1:]
	dot := strings.IndexByte(rest, '.')
	if dot < 0 {
		r.mu.Lock()
		ch := r.reads[rest]
		r.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default: // more than asked for: the reader fails on its timeout
			}
		}
		return
	}
	id, err := strconv.ParseUint(rest[:dot], 10, 64)
	if err != nil {
		return
	}
	r.mu.Lock()
	o := r.owners[id]
	r.mu.Unlock()
	if o != nil {
		o.onReply(rest[dot+1:], m)
	}
}

// open registers a read expecting up to n answers and returns its reply
// subject, the channel they arrive on, and the function that ends it.
func (r *replies) open(n int) (reply string, answers <-chan *nats.Msg, done func()) {
	token := nats.NewInbox()[len(nats.InboxPrefix):]
	ch := make(chan *nats.Msg, n)
	r.mu.Lock()
	r.reads[token] = ch
	r.mu.Unlock()
	return r.prefix + "." + token, ch, func() {
		r.mu.Lock()
		delete(r.reads, token)
		r.mu.Unlock()
	}
}

// register has the answers to o's requests handed to o, and returns the
// number that names o in their reply subjects.
func (r *replies) register(o replyOwner) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastOwner++
	r.owners[r.lastOwner] = o
	return r.lastOwner
}

func (r *replies) unregister(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.owners, id)
}

// subject is the reply subject of owner's request named by kind and
// numbers: <prefix>.<owner>.<kind><n>.<a>.
func (r *replies) subject(owner uint64, kind byte, n, a uint64) string {
	var num [20]byte
	var b strings.Builder                  // one allocation: the subject itself
	b.Grow(len(r.prefix) + 4 + 3*len(num)) // three dots and the kind
	b.WriteString(r.prefix)
	b.WriteByte('.')
	b.Write(strconv.AppendUint(num[:0], owner, 10))
	b.WriteByte('.')
	b.WriteByte(kind)
	b.Write(strconv.AppendUint(num[:0], n, 10))
	b.WriteByte('.')
	b.Write(strconv.AppendUint(num[:0], a, 10))
	return b.String()
}

// parseToken reads a token made by subject.
func parseToken(token string) (kind byte, n, a uint64, ok bool) {
	if len(token) < 4 {
		return 0, 0, 0, false
	}
	ns, as, found := strings.Cut(token[1:], ".")
	n, err1 := strconv.ParseUint(ns, 10, 64)
	a, err2 := strconv.ParseUint(as, 10, 64)
	return token[0], n, a, found && err1 == nil && err2 == nil
}

func (r *replies) close() { _ = r.sub.Unsubscribe() }

// pubAck is what a PubAck says: where the message is stored, and whether
// it was stored before (the same Nats-Msg-Id within the duplicate window).
type pubAck struct {
	seq uint64
	dup bool
}

// errBadPubAck is an answer to a publish that is not a PubAck.
var errBadPubAck = errors.New("gateway: not a PubAck")

var (
	ackStream = []byte(`{"stream":"`)
	ackSeq    = []byte(`,"seq":`)
	ackDup    = []byte(`"duplicate":`)
)

// parsePubAck reads the answer to a publish: a PubAck, an error the
// stream answered with (a *jetstream.APIError), or no responders (no
// server has the stream's subjects: no leader, or none reachable).
//
// JetStream writes a PubAck as {"stream":..,["domain":..,]"seq":N[,"duplicate": true]}:
// that shape is read without decoding JSON, on the path every send takes;
// anything else is decoded.
func parsePubAck(m *nats.Msg) (pubAck, error) {
	if len(m.Data) == 0 {
		if m.Header.Get("Status") == "503" {
			return pubAck{}, nats.ErrNoResponders
		}
		return pubAck{}, errBadPubAck
	}
	if d := m.Data; bytes.HasPrefix(d, ackStream) && len(d) > len(ackStream) && d[len(ackStream)] != '"' {
		if i := bytes.Index(d, ackSeq); i > 0 {
			rest := d[i+len(ackSeq):]
			end := 0
			for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
				end++
			}
			if seq, err := strconv.ParseUint(string(rest[:end]), 10, 64); err == nil && seq > 0 &&
				end < len(rest) && (rest[end] == ',' || rest[end] == '}') {
				dup := false
				if j := bytes.Index(rest[end:], ackDup); j >= 0 {
					dup = bytes.HasPrefix(bytes.TrimLeft(rest[end+j+len(ackDup):], " "), []byte("true"))
				}
				return pubAck{seq: seq, dup: dup}, nil
			}
		}
	}
	var resp struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Seq       uint64              `json:"seq"`
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return pubAck{}, errBadPubAck
	}
	if resp.Error != nil {
		return pubAck{}, resp.Error
	}
	if resp.Stream == "" || resp.Seq == 0 {
		return pubAck{}, errBadPubAck
	}
	return pubAck{seq: resp.Seq, dup: resp.Duplicate}, nil
}

// errDupInProcess is JetStream's error code for a message whose
// Nats-Msg-Id is that of one still being stored (a write published again
// while its first publish is in the stream's log): asked again, it is
// answered as a duplicate once that one is stored.
const errDupInProcess = 10158

// transient reports whether a write that failed with err may succeed if
// made again: the stream had no leader or was not reachable, said it is
// unavailable for now (503), or was still storing an earlier publish of
// the same message. A refusal for what the message is (too large, say) is
// final, and so is a connection closed for good.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 || apiErr.ErrorCode == errDupInProcess
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrInvalidMsg),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, errBadPubAck):
		return false
	}
	return true
}
