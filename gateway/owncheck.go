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
// once (one batched direct get, multi_last), and only those written
// since the oldest read the asking sessions remember: a session that
// found its user alone as of DEVICES' sequence N asks again from N+1,
// and a record not written since is not sent, so a round of one-device
// senders costs one small request and no record. Devices are only ever
// added: a session that found another device once copies its later sends
// without asking. A read that fails is answered "copy": a copy no device
// needs costs a stored write, a copy missing would cost a device a
// message. On a replicated bucket a direct get may be answered by a
// replica a step behind its leader; a device whose record was written in
// that step misses the copies of the messages stored in it.
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
	read    func(users []string, from uint64) (records map[string][]byte, newest uint64, err error)
	created time.Time // INBOX's, which devices' starts count in

	mu      sync.Mutex
	asked   []ownQuestion // since the read under way began
	running bool
}

// ownQuestion asks whether user has a device other than device that is
// to get the message stored at seq. alone is the DEVICES sequence as of
// which the asking session found its user had no other (0: never).
// answer takes the reply, on the checker's goroutine: other, or the
// sequence as of which the user is alone.
type ownQuestion struct {
	user, device string
	seq          uint64
	alone        uint64
	answer       func(other bool, alone uint64)
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
	go c.run()
}

// run reads for the questions asked, round after round, until none wait.
func (c *ownCheck) run() {
	for {
		c.mu.Lock()
		qs := c.asked
		c.asked = nil
		if len(qs) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.round(qs)
	}
}

// round answers qs from one read per ownBatch senders, of the records
// written since the oldest point any of them was found alone.
func (c *ownCheck) round(qs []ownQuestion) {
	var users []string
	seen := map[string]bool{}
	from := uint64(0)
	for i, q := range qs {
		if i == 0 || q.alone < from {
			from = q.alone
		}
		if !seen[q.user] {
			seen[q.user] = true
			users = append(users, q.user)
		}
	}
	from++
	records := map[string]contract.Devices{}
	failed := map[string]bool{}
	asOf := map[string]uint64{}
	for len(users) > 0 {
		chunk := users[:min(len(users), ownBatch)]
		users = users[len(chunk):]
		got, newest, err := c.read(chunk, from)
		for _, u := range chunk {
			b, ok := got[u]
			switch {
			case err != nil && !ok:
				failed[u] = true
			case ok:
				var ds contract.Devices
				if json.Unmarshal(b, &ds) == nil {
					records[u] = ds
				}
			}
			asOf[u] = newest
		}
	}
	for _, q := range qs {
		// A record not sent is older than from, so not written since
		// the asking session found its user alone (or there is none).
		ds, written := records[q.user]
		if failed[q.user] || (written && ds.OtherThan(c.created, q.device, q.seq)) {
			q.answer(true, 0)
			continue
		}
		q.answer(false, asOf[q.user])
	}
}

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
	if end != nil {
		newest, _ = strconv.ParseUint(end.Header.Get(hdrUpTo), 10, 64)
	}
	return out, newest, err
}

// hdrUpTo is where a batched direct get's end of batch names the
// sequence it read up to: the stream's newest when it was asked.
const hdrUpTo = "Nats-UpTo-Sequence"

// errCutShort is a batched read whose answer stopped before the end.
var errCutShort = errors.New("gateway: a batched read was cut short")
