package gateway

// Headers on messages stored in INBOX. The body of a stored message is the
// client's body, verbatim; everything the gateway knows about it travels in
// these headers so the body is never parsed.
const (
	hdrMsgID    = "Nats-Msg-Id" // dedup key: see msgDedupID and receiptDedupID
	hdrKind     = "Sb-Kind"     // kindMsg or kindReceipt
	hdrFrom     = "Sb-From"     // sender user (msg) or reader user (receipt)
	hdrDevice   = "Sb-Device"   // sender's or reader's device
	hdrID       = "Sb-Id"       // the client message id (for a receipt: of the message it is about)
	hdrTS       = "Sb-Ts"       // ms since epoch when the gateway accepted it
	hdrStatus   = "Sb-Status"   // receipt status: delivered or read
	kindMsg     = "msg"
	kindReceipt = "receipt"
)

// msgDedupID is the Nats-Msg-Id of a chat message. Ids cannot contain ':',
// so sender and id never run together: two users' "m1" stay distinct and a
// retry of the same send is stored once.
func msgDedupID(from, id string) string { return "m:" + from + ":" + id }

// receiptDedupID is the Nats-Msg-Id of a receipt: one per status, message
// and reading device, so a receipt re-sent after a crash is stored once.
func receiptDedupID(status, from, id, by, device string) string {
	return "r:" + status + ":" + from + ":" + id + ":" + by + ":" + device
}
