package contract

import "strconv"

// Headers on messages stored in INBOX. The body of a stored chat message is
// the client's body, verbatim; everything else travels in these headers so
// no worker ever parses a body.
const (
	HdrMsgID  = "Nats-Msg-Id" // dedup key: see MsgDedupID and the receipt ids
	HdrKind   = "Sb-Kind"     // KindMsg or KindReceipt
	HdrFrom   = "Sb-From"     // sender user (msg) or reader user (receipt)
	HdrDevice = "Sb-Device"   // sender's or reader's device
	HdrID     = "Sb-Id"       // the client message id
	HdrTS     = "Sb-Ts"       // ms since epoch when the gateway accepted it
	HdrStatus = "Sb-Status"   // receipt status: delivered or read
	HdrMedia  = "Sb-Media"    // a media message's reference: compact JSON, validated by the gateway
	// A receipt's range: the sender's messages stored in the reader's
	// inbox from HdrSeqFrom to HdrSeqTo (both included; a read receipt has
	// only HdrSeqTo: everything up to it).
	HdrSeqFrom = "Sb-Seq-From"
	HdrSeqTo   = "Sb-Seq-To"
	// HdrExpectLastMsgID makes a store conditional on the stream's last
	// message's Nats-Msg-Id; the store answers a duplicate before it
	// checks it.
	HdrExpectLastMsgID = "Nats-Expected-Last-Msg-Id"

	KindMsg     = "msg"
	KindReceipt = "receipt"
)

// MsgDedupID is the Nats-Msg-Id of a chat message. Ids cannot contain ':',
// so sender and id never run together: two users' "m1" stay distinct and a
// retry of the same send is stored once.
func MsgDedupID(from, id string) string { return "m:" + from + ":" + id }

// TickDedupID is the Nats-Msg-Id of a receipt stored in a sender's inbox:
// one per status, reader, sender and range, so a tick asked for again
// (the gateway got no answer, or crashed and its device acked again) is
// stored once.
func TickDedupID(status, reader, sender string, from, to uint64) string {
	return "t:" + status + ":" + reader + ":" + sender + ":" + strconv.FormatUint(from, 10) + ":" + strconv.FormatUint(to, 10)
}

// Headers a dead letter carries besides the original's own.
const (
	HdrReason      = "Sb-Reason"        // why the function gave up
	HdrOrigStream  = "Sb-Origin-Stream" // where the message was
	HdrOrigSubject = "Sb-Origin-Subject"
	HdrOrigSeq     = "Sb-Origin-Seq"
	HdrAttempts    = "Sb-Attempts"
)

// Headers JetStream adds to republished copies and direct get answers.
const (
	HdrSequence = "Nats-Sequence"      // the message's stream sequence
	HdrLastSeq  = "Nats-Last-Sequence" // the previous message's on the same subject (republish)
	HdrNumPend  = "Nats-Num-Pending"   // matching messages after this one (batched direct get)
	HdrStamp    = "Nats-Time-Stamp"    // when it was stored, RFC 3339
	HdrSubject  = "Nats-Subject"       // the subject it was stored under
	HdrStream   = "Nats-Stream"        // the stream it was stored in
	HdrUpTo     = "Nats-UpTo-Sequence" // on a batched direct get's end: the stream's newest sequence when asked
)
