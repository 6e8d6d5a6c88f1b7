package devsync

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// roster is the instance's copy of DEVICES, so a message costs no read of
// its sender's record: the records of users with two or more devices (a
// user with one has no other: devices are only ever added, and a device
// is registered before it sends), kept by reading the bucket's stream
// onward from the last message applied.
//
// A message may be answered from the copy only once the copy holds every
// record stored before the message was: a device that joined before a
// message must get its copy. So each question waits for a round that
// began after it was asked (and so after its message was stored): a
// round reads DEVICES past the last message applied until nothing more
// is stored, which takes one direct get when nothing changed. Questions
// asked while a round runs wait for the next one, so under load one get
// answers many messages where each used to cost one. A round that fails
// answers its questions with "unknown", and the message's sender is read
// from the bucket as before. On a replicated bucket a direct get may be
// answered by a replica a little behind its leader, as the read of a
// sender's record per message could be: a round is no weaker than that.
//
// Costs: about 0.7 KB of heap per user with two or more devices, in every
// instance (standbys too), and a read of the whole bucket when an
// instance starts (200,000 such users: 2 to 4 s on one machine). A bucket
// deleted and created again is noticed within Config.DevicesCheck.
//
// The roster owns its fields behind mu; rounds run one at a time on their
// own goroutine.
type roster struct {
	nc       *nats.Conn
	stream   jetstream.Stream // the bucket's, looked at every checkEvery
	subject  string           // direct gets on the bucket's stream
	prefix   string           // subject of a record, before its key
	replies  string           // reply subjects: replies + round number
	sub      *nats.Subscription
	timeout  time.Duration
	batchLen int
	// checkEvery is how often rounds look at the bucket's stream itself.
	checkEvery time.Duration
	// created and checked are the rounds' (one at a time): when the
	// bucket's stream was created, and when that was last looked at.
	created, checked time.Time

	mu      sync.Mutex
	multi   map[string]contract.Devices // users with two or more devices
	applied uint64                      // every DEVICES message up to here is in multi
	next    *round                      // the round later questions wait for; nil until one asks
	running bool
	asked   uint64 // direct gets sent: each one's reply subject
}

// round is one pass over DEVICES; done closes when it ends, err says
// whether it read to the end.
type round struct {
	done chan struct{}
	err  error
}

// rosterBatch is how many DEVICES messages one direct get asks for.
const rosterBatch = 256

// rosterCheck is how often rounds look at the bucket's stream itself by
// default (Config.DevicesCheck): one
// deleted and created again (an operator's repair, a restore) numbers its
// messages from 1 again, below the last one applied, and the copy is then
// read again from the start.
const rosterCheck = 5 * time.Second

// newRoster subscribes for its answers and reads DEVICES to the end.
func newRoster(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, timeout, checkEvery time.Duration) (*roster, error) {
	stream, err := js.Stream(ctx, "KV_"+contract.DevicesKV)
	if err != nil {
		return nil, err
	}
	r := &roster{
		nc:         nc,
		stream:     stream,
		checkEvery: checkEvery,
		created:    stream.CachedInfo().Created,
		checked:    time.Now(),
		subject:    contract.DirectGetSubject("KV_" + contract.DevicesKV),
		prefix:     contract.KVSubject(contract.DevicesKV, ""),
		replies:    nc.NewInbox() + ".",
		timeout:    timeout,
		batchLen:   rosterBatch,
		multi:      map[string]contract.Devices{},
	}
	sub, err := nc.SubscribeSync(r.replies + "*")
	if err != nil {
		return nil, err
	}
	r.sub = sub
	if err := r.catchUp(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return r, nil
}

// close ends the roster's subscription; questions after it are unknown.
func (r *roster) close() { _ = r.sub.Unsubscribe() }

// otherDevice answers contract.OtherDevice for user from the copy, once
// a round that began after the call has ended; known is false when it
// failed.
func (r *roster) otherDevice(ctx context.Context, created time.Time, user, device string, seq uint64) (other, known bool) {
	if err := r.await(ctx); err != nil {
		return false, false
	}
	r.mu.Lock()
	rec, ok := r.multi[user]
	r.mu.Unlock()
	return ok && rec.OtherThan(created, device, seq), true
}

// await waits for a round that begins after the call.
func (r *roster) await(ctx context.Context) error {
	r.mu.Lock()
	if r.next == nil {
		r.next = &round{done: make(chan struct{})}
	}
	rd := r.next
	if !r.running {
		r.running = true
		go r.run()
	}
	r.mu.Unlock()
	select {
	case <-rd.done:
		return rd.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run holds rounds back to back while questions wait for one.
func (r *roster) run() {
	for {
		r.mu.Lock()
		rd := r.next
		r.next = nil
		if rd == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		rd.err = r.check()
		if rd.err == nil {
			rd.err = r.catchUp(context.Background())
		}
		close(rd.done)
	}
}

// check starts the copy again from nothing when the bucket's stream is
// not the one it was read from, looking at most every checkEvery.
func (r *roster) check() error {
	if time.Since(r.checked) < r.checkEvery {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	info, err := r.stream.Info(ctx)
	if err != nil {
		return err
	}
	r.checked = time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !info.Created.Equal(r.created) || info.State.LastSeq < r.applied {
		r.created = info.Created
		r.applied = 0
		r.multi = map[string]contract.Devices{}
	}
	return nil
}

// catchUp applies DEVICES messages past the last applied until the
// stream has no more. Only rounds and newRoster call it, one at a time.
func (r *roster) catchUp(ctx context.Context) error {
	for {
		more, err := r.read(ctx)
		if err != nil || !more {
			return err
		}
	}
}

// read asks for the next batch and applies it; more reports that the
// stream holds further messages.
func (r *roster) read(ctx context.Context) (more bool, err error) {
	r.mu.Lock()
	from := r.applied + 1
	r.asked++
	reply := r.replies + strconv.FormatUint(r.asked, 10)
	r.mu.Unlock()
	req, _ := json.Marshal(map[string]any{"seq": from, "batch": r.batchLen})
	if err := r.nc.PublishRequest(r.subject, reply, req); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	for {
		m, err := r.sub.NextMsgWithContext(ctx)
		if err != nil {
			return false, err
		}
		if m.Subject != reply {
			continue // an answer to a round that gave up
		}
		seq, end, more, err := contract.DirectAnswer(m)
		if end || err != nil {
			return more, err
		}
		r.apply(seq, m)
	}
}

// apply takes one DEVICES message into the copy: a record, or a delete
// or purge of one.
func (r *roster) apply(seq uint64, m *nats.Msg) {
	user, ok := strings.CutPrefix(m.Header.Get(contract.HdrSubject), r.prefix)
	var rec contract.Devices
	keep := ok && m.Header.Get("KV-Operation") == "" && m.Header.Get("Nats-Marker-Reason") == "" &&
		json.Unmarshal(m.Data, &rec) == nil && len(rec.Devices) > 1
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq <= r.applied {
		return
	}
	r.applied = seq
	switch {
	case !ok:
	case keep:
		r.multi[user] = rec
	default:
		delete(r.multi, user)
	}
}

// stats are the users with two or more devices the copy holds and the
// direct gets it took.
func (r *roster) stats() (users int, reads uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.multi), r.asked
}
