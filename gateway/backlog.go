package gateway

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
)

// A reconnect storm makes thousands of sessions read their backlogs at
// once. Read one by one, each costs the server a scan: its file store
// finds a subject's next message by walking the block from the given
// sequence, past every other user's messages stored in between. So a
// storm of N devices over a backlog of M messages costs about N × M
// message lookups.
//
// While more than SharedCatchUps sessions are reading, a session hands
// its read to the gateway's backlog reader instead. The reader reads the
// range they need once, in stream order, with a wildcard (every INBOX
// message, no scan wasted), and gives each message to the waiting
// sessions of its user. That costs M per pass however many sessions wait.
// A session that joins while a pass runs waits for the next one, which
// starts from the lowest position among those waiting.

// sharedBatch is the most messages one of the reader's direct gets asks
// for, and sharedBytes their size.
const (
	sharedBatch = 1024
	sharedBytes = 8 << 20
)

// sharedMaxSpan is the furthest behind the newest message waited for that
// a session may start and still join a pass. One device back after weeks
// would otherwise have every pass read weeks of everyone's messages; it
// reads its own backlog instead.
const sharedMaxSpan = 1 << 18

type backlog struct {
	srv     *Server
	reading atomic.Int64 // sessions reading their backlog now, alone or shared

	mu      sync.Mutex
	pending []*backlogRead // waiting for the next pass
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// backlogRead is one session's wait for the reader: everything in its
// inbox after its feed's position, up to through.
type backlogRead struct {
	f       *feed
	user    string
	through uint64
	// finished is closed once the reader is done with it; ok says whether
	// it read everything up to through (or the session is full).
	finished chan struct{}
	ok       bool
	over     bool // reader side only
}

func newBacklog(srv *Server) *backlog {
	b := &backlog{srv: srv, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go b.run()
	return b
}

// read has the reader deliver f's messages up to through. It reports
// false if the feed must read on its own: few sessions are reading, or
// the shared read failed. It returns early, with true, if f stops.
func (b *backlog) read(f *feed, through uint64) bool {
	if b.reading.Load() <= int64(b.srv.cfg.SharedCatchUps) {
		return false
	}
	r := &backlogRead{f: f, user: f.s.id.User, through: through, finished: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, r)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	select {
	case <-r.finished:
		return r.ok
	case <-f.quit:
		return true // the reader sees the feed stopping and lets it go
	case <-b.stop:
		return false
	}
}

func (b *backlog) run() {
	defer close(b.done)
	for {
		select {
		case <-b.stop:
			return
		case <-b.kick:
		}
		for b.pass() {
		}
	}
}

// pass serves the reads waiting now. It reports false when none waited.
func (b *backlog) pass() bool {
	b.mu.Lock()
	reads := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(reads) == 0 {
		return false
	}
	b.srv.metrics.sharedPasses.Inc()
	byUser := make(map[string][]*backlogRead, len(reads))
	var end uint64
	for _, r := range reads {
		end = max(end, r.through)
	}
	open := len(reads)
	finish := func(r *backlogRead, ok bool) {
		if !r.over {
			r.over, r.ok = true, ok
			open--
			close(r.finished)
		}
	}
	from := end + 1
	for _, r := range reads {
		pos := r.f.nextFrom()
		if pos+sharedMaxSpan < end {
			finish(r, false) // too far behind: it reads on its own
			continue
		}
		from = min(from, pos)
		byUser[r.user] = append(byUser[r.user], r)
	}
	seq := from
	for open > 0 && seq <= end {
		req := directGet{Seq: seq, NextFor: contract.InboxPrefix + "*", Batch: sharedBatch, MaxBytes: sharedBytes}
		got := false
		more, err := b.srv.stream.directBatch(req, b.stop, func(mseq uint64, m *nats.Msg) bool {
			got = true
			seq = mseq + 1
			user := strings.TrimPrefix(m.Header.Get(contract.HdrSubject), contract.InboxPrefix)
			for _, r := range byUser[user] {
				if !r.over && r.f.offer(mseq, r.through, m) {
					finish(r, true)
				}
			}
			return mseq < end
		})
		if err != nil {
			b.srv.log.Warn("shared backlog read failed; sessions read on their own", "err", err)
			break
		}
		if !more || !got {
			break
		}
	}
	// Whatever is still open got all there was up to end, unless the read
	// failed: then it reads on its own.
	ok := seq > end
	for _, r := range reads {
		finish(r, ok)
	}
	return true
}

func (b *backlog) close() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
}
