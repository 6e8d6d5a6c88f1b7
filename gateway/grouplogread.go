package gateway

import (
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
)

// Reading a group's log.
//
// A group's log is two subjects of GROUPS, its messages (.m) and its
// changes (.e), and a read must hand on both in the log's order. One
// batched direct get filtered on both (group.<p>.<group>.*) does that,
// but nats-server answers a filter with a wildcard by walking the stored
// messages one by one once a block holds many subjects (its subject
// count times four is more than the range left in it), holding the
// stream's writes back meanwhile: with thousands of groups, every read
// walks every message stored since its place. Users each in 20 groups of
// 10 reconnecting at once took 147.5 s that way against 8.8 s by copies
// (README, P5 for groups), 72% of serve CPU in the walk; read as below,
// 14.1–18.0 s against 6.3–8.6 s.
//
// That walk is short for a reader that keeps up with its bells: the
// messages stored since its last read, most of them other groups'. So a
// read whose bell rang for a message within logWalk of where it starts
// is the one filtered read. Other reads (a device catching up, a reader
// starting or behind) are where the walk is long: where GROUPS has one
// replica, such a read asks for each subject on its own, literally,
// which the server answers from the subject's own index, and merges the
// two: the messages first, then the changes; a change
// past the last message read calls for a second read of messages after
// it (one stored between the first two reads would come before it).
// Each read is the store as of one instant, and the reads follow one
// another, so every message and change up to the bound handed on was in
// them. On a replicated GROUPS a direct get may be answered by a replica
// a moment behind another, and two reads from two replicas could step
// over a message, so there the one wildcard read stays
// (docs/GROUP-LOG.md).

// errLogNoProgress is a read of a group's log that said more was there
// but returned nothing to hand on.
var errLogNoProgress = errors.New("gateway: a group log read made no progress")

// logWalk is how far past a read's start the newest message known may be
// for the read to walk the stream (see above).
const logWalk = 512

// readGroupLog reads group gid's log from from on: up to batch messages
// and changes (of each), handed to each in the log's order until it
// returns false; near, if not 0, is a message of the log known to be
// stored (the reader's last bell): a read starting a little before it
// walks little. One starting past it walks to the stream's end, which
// may be far (a reader rung by a device joining it, caught up long ago:
// filtered, that read made the storm of P5 for groups take 121-129 s
// rather than 14-18 s). more says the log has more past what was handed
// on.
func (srv *Server) readGroupLog(gid string, from, near uint64, batch int, quit <-chan struct{}, each func(uint64, *nats.Msg) bool) (more bool, err error) {
	if !srv.literalLogs || (near >= from && near-from < logWalk) {
		req := directGet{Seq: from, NextFor: contract.GroupLogFilter(gid), Batch: batch, MaxBytes: catchUpBytes}
		return srv.directBatchOn(contract.GroupsStream, req, quit, each)
	}
	type stored struct {
		seq uint64
		m   *nats.Msg
	}
	stopped := false
	read := func(subj string, from uint64) (got []stored, more bool, err error) {
		req := directGet{Seq: from, NextFor: subj, Batch: batch, MaxBytes: catchUpBytes}
		more, err = srv.directBatchOn(contract.GroupsStream, req, quit, func(seq uint64, m *nats.Msg) bool {
			got = append(got, stored{seq, m})
			return true
		})
		select {
		case <-quit:
			stopped = true // the batch may have been cut short
		default:
		}
		return got, more, err
	}
	msgs, moreMsgs, err := read(contract.GroupMsgSubject(gid), from)
	if err != nil || stopped {
		return false, err
	}
	if srv.afterMsgsRead != nil {
		srv.afterMsgsRead()
	}
	changes, moreChanges, err := read(contract.GroupEventSubject(gid), from)
	if err != nil || stopped {
		return false, err
	}
	// upTo is how far both reads are whole.
	upTo := from - 1
	if len(msgs) > 0 {
		upTo = msgs[len(msgs)-1].seq
	}
	if !moreMsgs && len(changes) > 0 && changes[len(changes)-1].seq > upTo {
		// Messages stored after the first read, before the changes'
		// read, are missing from the first, and come before any change
		// the second read found past it.
		later, moreLater, err := read(contract.GroupMsgSubject(gid), upTo+1)
		if err != nil || stopped {
			return false, err
		}
		msgs = append(msgs, later...)
		upTo = changes[len(changes)-1].seq
		if moreMsgs = moreLater; moreLater && len(later) > 0 {
			upTo = min(upTo, later[len(later)-1].seq)
		}
	}
	if moreChanges {
		upTo = min(upTo, changes[len(changes)-1].seq)
	}
	i, j, handed := 0, 0, 0
	for {
		var next stored
		switch {
		case i < len(msgs) && (j == len(changes) || msgs[i].seq < changes[j].seq):
			next = msgs[i]
			i++
		case j < len(changes):
			next = changes[j]
			j++
		default:
			more = moreMsgs || moreChanges
		}
		if next.m == nil || next.seq > upTo {
			if next.m != nil {
				more = true
			}
			if more && handed == 0 {
				return false, errLogNoProgress // asked again, it would come back the same
			}
			return more, nil
		}
		if !each(next.seq, next.m) {
			return false, nil
		}
		handed++
	}
}
