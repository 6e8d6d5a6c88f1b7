package protocol

import "strconv"

// TypeReadSync is a server frame: this user read a conversation up to a
// point on another device of theirs.
const TypeReadSync = "read_sync"

// AppendOwnMsg appends a msg frame for a message this user sent from
// device (another of theirs) to user to: it is stored in to's inbox at
// sentSeq, and its copy for this user's devices at seq. media, when not
// empty, is a media reference as stored.
func AppendOwnMsg(b []byte, id, from, device, to string, seq, sentSeq uint64, ts int64, body, media []byte) []byte {
	b = append(b, `{"type":"msg","id":"`...)
	b = append(b, id...)
	b = append(b, `","from":"`...)
	b = append(b, from...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, `","to":"`...)
	b = append(b, to...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"sent_seq":`...)
	b = strconv.AppendUint(b, sentSeq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	return appendMsgTail(b, body, media)
}

// AppendReadSync appends a read_sync frame: this user, on device, read
// peer's messages up to toSeq (a seq of this user's inbox); seq is the
// frame's own sequence, which the client acks.
func AppendReadSync(b []byte, peer, device string, toSeq, seq uint64, ts int64) []byte {
	b = append(b, `{"type":"read_sync","peer":"`...)
	b = append(b, peer...)
	return appendReadSyncTail(b, device, toSeq, seq, ts)
}

// AppendOwnGroupMsg appends a msg frame for a message this user sent in
// group from device (another of theirs): it is stored at sentSeq in the
// group's log (the place its group receipts name), and its copy for this
// user's devices at seq.
func AppendOwnGroupMsg(b []byte, id, from, device, group string, seq, sentSeq uint64, ts int64, body, media []byte) []byte {
	b = appendGroupMsgHead(b, id, from, device, group, seq, ts)
	b = append(b, `,"sent_seq":`...)
	b = strconv.AppendUint(b, sentSeq, 10)
	return appendMsgTail(b, body, media)
}

// AppendGroupReadSync appends a read_sync frame for a group: this user,
// on device, read group up to toSeq (a seq of this user's inbox, the
// group copy read); seq is the frame's own sequence.
func AppendGroupReadSync(b []byte, group, device string, toSeq, seq uint64, ts int64) []byte {
	b = append(b, `{"type":"read_sync","group":"`...)
	b = append(b, group...)
	return appendReadSyncTail(b, device, toSeq, seq, ts)
}

// AppendGroupLogReadSync appends a read_sync frame: this user read group,
// a group read from its log, up to gseq there, on device.
func AppendGroupLogReadSync(b []byte, group, device string, gseq, seq uint64, ts int64) []byte {
	b = append(b, `{"type":"read_sync","group":"`...)
	b = append(b, group...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, `","gseq":`...)
	b = strconv.AppendUint(b, gseq, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	return append(b, '}')
}

// appendReadSyncTail ends a read_sync frame after its peer or group.
func appendReadSyncTail(b []byte, device string, toSeq, seq uint64, ts int64) []byte {
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, `","to_seq":`...)
	b = strconv.AppendUint(b, toSeq, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	return append(b, '}')
}
