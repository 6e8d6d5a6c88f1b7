package gateway

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
)

// Own copies of 1:1 sends.
//
// A message one user sends another is stored in the recipient's inbox.
// The sender's other devices read the sender's inbox, so the sending
// session stores a copy there too (contract.OwnCopy) when the sender has
// another device that is to get the message: one that joined at or
// before the message was stored (contract.Devices.OtherThan). The copy is
// stored after the message and before the send is answered "sent", as a
// send to another region's is (regions.go): a gateway that dies between
// the two leaves the send unanswered, the client resends it under the
// same id, the store answers it as a duplicate with its seq, and the copy
// is stored then, once (its own dedup id). What a user sends to
// themselves needs no copy: every device reads that inbox.
//
// Whether the sender has another device is read from DEVICES after the
// message's PubAck: a device records itself there before it takes the
// INBOX sequence it starts at (devices.register), so a device that is to
// get a message has its record written before the message is stored, and
// a read begun after the PubAck finds it. The reads are gathered per
// gateway, in rounds: sends whose PubAck came while a round was under
// way wait for the next, which reads the records of all their senders at
// once (one batched direct get, multi_last per 256 senders, answered as
// each ends). A session that found its user with no other device at all
// as of DEVICES' sequence N asks from N+1, and a record not written
// since is not sent: a round of one-device senders costs one small
// request and no record of theirs. Before it, such a round asks for the
// bucket's records from the oldest of those points on, two at most: the
// one there alone means no device record at all was written since, and
// the round is answered without the search (see answer; sessions that
// never found their users alone ask in a request of their own, for whole
// records). A session whose user has a device that joined after its
// message is not alone: it asks again with its next send, until that send
// is one the device is to get.
// Devices are only ever added: a session that found another device that
// is to get its message copies its later sends without asking. A read
// that fails is answered "copy" and teaches the session nothing: a copy
// no device needs costs a stored write, a copy missing would cost a
// device a message. On a replicated bucket a direct get may be answered
// by a replica a step behind its leader; a device whose record was
// written in that step misses the copies of the messages stored in it.
//
// The copies were made by a worker function reading every INBOX message
// through a durable consumer, group copies and receipts included, only
// to pass over nearly all of them; measured, that reading took a fifth
// of the all-in-one's CPU at 5,000 sends a second and at a 1,024-member
// group's fan-out.
type ownCheck struct {
	// read returns the DEVICES records of users written at or after
	// sequence from, by user, and the sequence of the bucket's newest
	// record as of the read (0: not known).
	read func(users []string, from uint64) (records map[string][]byte, newest uint64, err error)
	// changed, when set, reports whether any record was written or
	// deleted past sequence since, the oldest point the round's sessions
	// found their users alone as of: the cheap first look of a round
	// whose sessions all did (see answer). It reports a change too when
	// it cannot tell (the record at since is gone), and an error when the
	// bucket did not answer.
	changed func(since uint64) (bool, error)
	created time.Time // INBOX's, which devices' starts count in

	mu      sync.Mutex
	asked   []ownQuestion // since the read under way began
	running bool

	// The runner's own (one runs at a time): the last round's questions,
	// emptied, to gather the next round's in, and the round's two kinds.
	spare, fresh, known []ownQuestion
}

// ownQuestion asks whether user has a device other than device that is
// to get the message stored at seq. alone is the DEVICES sequence as of
// which the asking session found its user had no other device at all
// (0: never). answer takes the reply, on the checker's goroutine.
type ownQuestion struct {
	user, device string
	seq          uint64
	alone        uint64
	answer       func(ownAnswer)
}

// ownAnswer is the reply to an ownQuestion.
type ownAnswer struct {
	// copy: the message is to be copied.
	copy bool
	// other: the user has another device that is to get this message,
	// and so every later one (copy is set too). Not set when the read
	// failed: that copy is made to be safe, and the next send asks again.
	other bool
	// alone, when not 0, is the DEVICES sequence as of which the user
	// has no other device at all, for the session to ask from next time.
	alone uint64
}

// ownBatch is the most senders one read asks about.
const ownBatch = 256

// ask queues q for the next read.
func (c *ownCheck) ask(q ownQuestion) {
	c.mu.Lock()
	c.asked = append(c.asked, q)
	if c.running {
		c.mu.Unlock()
		return
	}
	c.running = true
	c.mu.Unlock()
	runners.Go(c.run)
}

// run reads for the questions asked, round after round, until none wait.
func (c *ownCheck) run() {
	for {
		c.mu.Lock()
		qs := c.asked
		c.asked, c.spare = c.spare, nil
		if len(qs) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.round(qs)
		c.spare = keepQuestions(qs)
	}
}

// round answers qs. Sessions that never found their user alone ask for
// their users' whole records; the others from the oldest point any of
// them did: a read for each, of ownBatch senders at most, its questions
// answered as soon as it ends.
func (c *ownCheck) round(qs []ownQuestion) {
	fresh, known := c.fresh[:0], c.known[:0]
	for _, q := range qs {
		if q.alone == 0 {
			fresh = append(fresh, q)
		} else {
			known = append(known, q)
		}
	}
	c.answer(fresh)
	c.answer(known)
	c.fresh, c.known = keepQuestions(fresh), keepQuestions(known)
}

// keepQuestions empties qs for reuse, or lets it go past ownKept.
func keepQuestions(qs []ownQuestion) []ownQuestion {
	if cap(qs) > ownKept {
		return nil
	}
	clear(qs) // its answers hold their sessions
	return qs[:0]
}

// ownKept is the most questions a checker keeps room for between rounds.
const ownKept = 4 * ownBatch

// answer reads for qs, from the oldest point any of them found its user
// alone, and answers them.
//
// A round of sessions that all found their users alone first asks
// whether DEVICES holds any record written since the oldest of those
// points: mostly none is (devices join far less often than users send),
// and then each user is alone still, as of the point its session found,
// at the cost of one small read instead of a search of each sender's
// subject. A look that finds a record, or cannot tell, reads the
// senders' records as before; one the bucket did not answer is answered
// "copy", as a failed read is, rather than waiting on a read as well.
func (c *ownCheck) answer(qs []ownQuestion) {
	if len(qs) == 0 {
		return
	}
	since := qs[0].alone // the oldest point any of them found its user alone
	for _, q := range qs {
		since = min(since, q.alone)
	}
	if c.changed != nil && since != 0 {
		changed, err := c.changed(since)
		if err != nil || !changed {
			for _, q := range qs {
				if err != nil {
					q.answer(ownAnswer{copy: true})
				} else {
					q.answer(ownAnswer{alone: q.alone})
				}
			}
			return
		}
	}
	var users []string
	byUser := map[string][]ownQuestion{}
	for _, q := range qs {
		if byUser[q.user] == nil {
			users = append(users, q.user)
		}
		byUser[q.user] = append(byUser[q.user], q)
	}
	from := since + 1
	for len(users) > 0 {
		chunk := users[:min(len(users), ownBatch)]
		users = users[len(chunk):]
		got, newest, err := c.read(chunk, from)
		for _, u := range chunk {
			b, written := got[u]
			var ds contract.Devices
			uerr := err
			if written && json.Unmarshal(b, &ds) != nil {
				written, uerr = false, errBadRecord
			}
			for _, q := range byUser[u] {
				q.answer(c.decide(q, ds, written, uerr, newest))
			}
		}
	}
}

// decide answers q from its user's record ds if one was written since
// from (written), or the read's error, and the bucket's newest sequence.
func (c *ownCheck) decide(q ownQuestion, ds contract.Devices, written bool, err error, newest uint64) ownAnswer {
	switch {
	case !written && err != nil:
		return ownAnswer{copy: true} // unknown: copied to be safe
	case !written:
		// Not written since the asking session found its user alone
		// (or there is none): alone still.
		return ownAnswer{alone: newest}
	case ds.OtherThan(c.created, q.device, q.seq):
		return ownAnswer{copy: true, other: true}
	case ds.OtherThan(c.created, q.device, 0):
		// Another device, joined after this message: not alone, so the
		// next send asks again and reads the record again.
		return ownAnswer{alone: q.alone}
	}
	return ownAnswer{alone: newest}
}

// errBadRecord is a DEVICES record that does not decode.
var errBadRecord = errors.New("gateway: a DEVICES record does not decode")

// readDevices reads the DEVICES records of users written at or after
// sequence from, with one batched direct get; its end of batch names the
// bucket's newest sequence.
func (srv *Server) readDevices(users []string, from uint64) (map[string][]byte, uint64, error) {
	subjects := make([]string, len(users))
	for i, u := range users {
		subjects[i] = contract.KVSubject(contract.DevicesKV, u)
	}
	prefix := contract.KVSubject(contract.DevicesKV, "")
	out := map[string][]byte{}
	srv.metrics.ownReads.Inc()
	end, more, err := srv.directGetOn("KV_"+contract.DevicesKV, directGet{MultiLast: subjects, Seq: from, Batch: len(subjects)}, nil, func(_ uint64, m *nats.Msg) bool {
		if op := m.Header.Get("KV-Operation"); op == "" {
			out[strings.TrimPrefix(m.Header.Get(contract.HdrSubject), prefix)] = m.Data
		}
		return true
	})
	if err == nil && more {
		err = errCutShort // the users it did not answer are unknown
	}
	var newest uint64
	if end != nil && err == nil {
		newest, _ = strconv.ParseUint(end.Header.Get(contract.HdrUpTo), 10, 64)
		// A record that failed to load ends the answer with a 404 too;
		// only "No Results" means none of the users has one.
		if end.Header.Get("Status") == "404" && end.Header.Get("Description") != "No Results" {
			err = errors.New("gateway: reading DEVICES: " + end.Header.Get("Description"))
		}
	}
	return out, newest, err
}

// devicesChanged reports whether DEVICES holds a record, or a delete,
// past sequence since, which a read found the bucket's newest: one
// batched direct get of the first two messages from since on. The bucket
// answers a direct get it fails to load as it answers one that finds
// nothing (404), so "nothing past since" is taken only from an answer
// that holds the record at since itself and ends there. One that starts
// past since (that record gone), or has a second message, is a change;
// no record at all is one too, since it cannot tell. The filter is the
// whole stream's (">"), which the server follows sequence by sequence
// rather than matching each key.
func (srv *Server) devicesChanged(since uint64) (bool, error) {
	var seqs [2]uint64
	n := 0
	srv.metrics.ownReads.Inc()
	_, _, err := srv.directGetOn("KV_"+contract.DevicesKV, directGet{Seq: since, NextFor: ">", Batch: len(seqs)}, nil, func(seq uint64, _ *nats.Msg) bool {
		if n < len(seqs) {
			seqs[n] = seq
			n++
		}
		return true
	})
	if err != nil {
		return false, err
	}
	return n != 1 || seqs[0] != since, nil
}

// errCutShort is a batched read whose answer stopped before the end.
var errCutShort = errors.New("gateway: a batched read was cut short")
