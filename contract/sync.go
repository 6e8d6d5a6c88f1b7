package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Own messages on every device, and read state shared between them.
//
// A message a user sends is stored in the recipient's inbox only. The
// sender's gateway copies each 1:1 chat message into its sender's own
// inbox, so every device of the sender reads it there, in order, online or later:
// the copy has the original's headers plus HdrTo (the recipient) and
// HdrSentSeq (where the original is stored, the seq its sent frame and its
// receipts name). It is made only when the sender has a device other than
// the one that sent it, and that device joined before the original was
// stored, so a user with one device costs no extra write. A group
// message's copy for its sender's own inbox is the groups function's (it
// has HdrGroup: the group says where it belongs).
//
// A conversation's read position, when it rises, is also stored in the
// reader's own inbox as a read_sync marker (KindReadSync: HdrPeer and
// HdrSeqTo), so the reader's other devices mark the conversation read up
// to there; a group's read position the same way, with HdrGroup instead
// of HdrPeer (HdrSeqTo the copy read in the reader's inbox, HdrGroupSeq
// its place in the group's log). Both are skipped for the device that caused them.
const (
	HdrTo      = "Sb-To"       // on an own copy: whom the sender sent it to
	HdrSentSeq = "Sb-Sent-Seq" // on an own copy: where the original is stored in INBOX
	HdrPeer    = "Sb-Peer"     // on a read_sync marker: whose messages were read

	KindReadSync = "read_sync"
)

// OwnCopy is the copy, for its sender's own inbox, of the 1:1 message
// with headers h and body sent to user to, stored at sentSeq (the seq its
// sent frame names). The sending gateway makes it once the original is
// stored (in INBOX, or for a send to another region in OUTBOX), under a
// dedup id of its own.
func OwnCopy(h nats.Header, to string, sentSeq uint64, body []byte) *nats.Msg {
	from, id := h.Get(HdrFrom), h.Get(HdrID)
	ch := nats.Header{
		HdrMsgID:   {OwnCopyDedupID(from, id)},
		HdrKind:    {KindMsg},
		HdrFrom:    {from},
		HdrDevice:  {h.Get(HdrDevice)},
		HdrID:      {id},
		HdrTS:      {h.Get(HdrTS)},
		HdrTo:      {to},
		HdrSentSeq: {strconv.FormatUint(sentSeq, 10)},
	}
	if media := h.Get(HdrMedia); media != "" {
		ch.Set(HdrMedia, media)
	}
	return &nats.Msg{Subject: InboxSubject(from), Header: ch, Data: body}
}

// OwnCopyDedupID is the Nats-Msg-Id of the copy of from's message id in
// from's own inbox: a copy made again (an instance died before its ack)
// is stored once.
func OwnCopyDedupID(from, id string) string { return "o:" + from + ":" + id }

// ReadSyncDedupID is the Nats-Msg-Id of a read_sync marker: reader has
// read peer's messages up to seq.
func ReadSyncDedupID(reader, peer string, seq uint64) string {
	return "rs:" + reader + ":" + peer + ":" + strconv.FormatUint(seq, 10)
}

// GroupReadSyncDedupID is the Nats-Msg-Id of a read_sync marker for a
// group: reader has read group up to seq, a place in the group's log.
func GroupReadSyncDedupID(reader, group string, seq uint64) string {
	return "rsg:" + reader + ":" + group + ":" + strconv.FormatUint(seq, 10)
}

// IsOwnCopy reports whether a message stored in user's inbox with headers
// h is a copy of one user sent: a 1:1 copy (HdrTo) or the sender's own
// copy of a group message. Such copies tick nothing, wake nobody and are
// not copied again.
func IsOwnCopy(user string, h nats.Header) bool {
	if h.Get(HdrKind) != KindMsg {
		return false
	}
	return h.Get(HdrTo) != "" || (h.Get(HdrGroup) != "" && h.Get(HdrFrom) == user)
}

// OtherDevice reports whether user has a device other than device that
// is to receive what INBOX stores at seq: one that joined at or before
// seq (0: any device, whenever it joined). created is when INBOX was
// created; a device registered in another INBOX receives everything in
// this one. A user with no record, or an unreadable one, has none.
func OtherDevice(ctx context.Context, devices jetstream.KeyValue, created time.Time, user, device string, seq uint64) (bool, error) {
	e, err := devices.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("contract: devices of %s: %w", user, err)
	}
	var ds Devices
	if json.Unmarshal(e.Value(), &ds) != nil {
		return false, nil
	}
	return ds.OtherThan(created, device, seq), nil
}

// OtherThan is OtherDevice on a record already read.
func (ds Devices) OtherThan(created time.Time, device string, seq uint64) bool {
	for name, d := range ds.Devices {
		if name == device || d == nil {
			continue
		}
		if seq == 0 || d.Start <= seq || !d.Stream.Equal(created) {
			return true
		}
	}
	return false
}
