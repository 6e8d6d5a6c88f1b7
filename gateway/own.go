package gateway

import (
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Own messages and read state on every device.
//
// The sending session copies each message a user sends to another user
// into the sender's own inbox when the user has another device
// (owncheck.go; contract.HdrTo names the recipient), and
// the groups function a group message into its sender's inbox too; the
// receipts function stores a read_sync marker in a reader's inbox when
// the reader's read position in a conversation rises. Every device of the
// user reads that inbox, so these reach each of them in order, online or
// later. What the device itself sent, or itself read, it has: those are
// settled without a frame (pass). The others go out as a msg frame with
// `to` (and `sent_seq`, the original's seq, which the receipts name), or a
// read_sync frame. Neither ticks anything: each is settled like a receipt
// once acked, and a read of an own message changes nothing.

// fromThisDevice reports whether a message of this user's inbox is this
// very device's doing: a copy of a message it sent, or a marker of a read
// it made.
func (f *feed) fromThisDevice(h nats.Header) bool {
	if h.Get(contract.HdrFrom) != f.s.id.User || h.Get(contract.HdrDevice) != f.s.id.Device {
		return false
	}
	return h.Get(contract.HdrKind) == contract.KindReadSync || contract.IsOwnCopy(f.s.id.User, h)
}

// pass moves the device's position past the message stored at seq
// without a frame, as an ack of it would: it ticks nothing.
func (f *feed) pass(seq uint64) {
	f.mu.Lock()
	f.last = seq
	if len(f.unsettled) == 0 {
		f.floor = seq
	}
	floor := f.floor
	f.mu.Unlock()
	f.s.cursor.moved(floor)
}

// ownMsgFrame is the msg frame of a copy of a message this user sent to
// another from another device; nil if the copy is malformed, or names
// another sender than this user.
func (f *feed) ownMsgFrame(seq uint64, ts int64, id, from, dev string, h nats.Header, data []byte) ([]byte, pendingMsg) {
	to := h.Get(contract.HdrTo)
	sent, err := strconv.ParseUint(h.Get(contract.HdrSentSeq), 10, 64)
	if err != nil || sent == 0 || !protocol.ValidID(to) || from != f.s.id.User {
		return nil, pendingMsg{receipt: true}
	}
	// It ticks nothing: settled like a receipt.
	return protocol.AppendOwnMsg(nil, id, from, dev, to, seq, sent, ts, data, []byte(h.Get(contract.HdrMedia))), pendingMsg{receipt: true}
}

// groupMsgFrame is the msg frame of a member's copy of a group message.
// The sender's own copy, for their other devices, names its place in the
// group's log (sent_seq), which its group receipts name.
func (f *feed) groupMsgFrame(seq uint64, ts int64, id, from, dev, group string, h nats.Header, data []byte) []byte {
	media := []byte(h.Get(contract.HdrMedia))
	if at := groupSeq(h); from == f.s.id.User && at != 0 {
		if sent, _ := strconv.ParseUint(h.Get(contract.HdrSentSeq), 10, 64); sent != 0 {
			at = sent // sent from another region than the group's: its OUTBOX seq (regions.go)
		}
		return protocol.AppendOwnGroupMsg(nil, id, from, dev, group, seq, at, ts, data, media)
	}
	return protocol.AppendGroupMsg(nil, id, from, dev, group, seq, ts, data, media)
}

// readSyncFrame is the read_sync frame of a marker: this user read peer's
// messages, or a group (HdrGroup), up to a seq of their inbox on another
// device; nil if the marker is malformed, or names another reader than
// this user.
func (f *feed) readSyncFrame(seq uint64, ts int64, from, dev string, h nats.Header) ([]byte, pendingMsg) {
	peer, group := h.Get(contract.HdrPeer), h.Get(contract.HdrGroup)
	if h.Get(contract.HdrSeqTo) == "" && group != "" && protocol.ValidID(group) && from == f.s.id.User {
		// A read of a group read from its log: its place there.
		if at := groupSeq(h); at != 0 {
			return protocol.AppendGroupLogReadSync(nil, group, dev, at, seq, ts), pendingMsg{receipt: true}
		}
	}
	to, err := strconv.ParseUint(h.Get(contract.HdrSeqTo), 10, 64)
	if err != nil || to == 0 || from != f.s.id.User {
		return nil, pendingMsg{receipt: true}
	}
	switch {
	case group != "" && protocol.ValidID(group):
		return protocol.AppendGroupReadSync(nil, group, dev, to, seq, ts), pendingMsg{receipt: true}
	case group == "" && protocol.ValidID(peer):
		return protocol.AppendReadSync(nil, peer, dev, to, seq, ts), pendingMsg{receipt: true}
	}
	return nil, pendingMsg{receipt: true}
}
