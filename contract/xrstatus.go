package contract

// Message info across regions.
//
// A member homed in another region than their group's sends through
// their own region's OUTBOX and is "sent" an OUTBOX sequence, so that is
// the seq their status frame names. The answer is the group's home's:
// the log and the members' positions are there. The gateway asks its own
// region's receipts function (GroupStatusRemoteSubject), which passes the
// request to the home's receipts function over the leaf links
// (ReceiptsForwardSubject, the answer on ReceiptsForwardReply) and
// relays its answer as is, as groups functions do for membership changes.

// GroupStatusRemoteSubject is where a gateway asks its region's receipts
// function about a message its user sent to a group homed elsewhere.
const GroupStatusRemoteSubject = "sb.fn.receipts.status-remote"

// GroupStatusRemoteRequest asks for the status of the message Sender
// sent to group Group from region Region, where Region's OUTBOX stored
// it at Seq (its "sent"); Home is the group's home region, which answers
// with a StatusReply, or refuses with ErrCodeUnknownSeq when Sender sent
// no such message there.
type GroupStatusRemoteRequest struct {
	Sender string `json:"sender"`
	Group  string `json:"group"`
	Seq    uint64 `json:"seq"`
	Region string `json:"region"`
	Home   string `json:"home"`
}

// ReceiptsForwardSubject is where the receipts function of region
// answers status requests about groups homed there, asked by other
// regions' receipts functions: it crosses the leaf links.
func ReceiptsForwardSubject(region string) string {
	return CrossRegionPrefix + "fn." + region + ".receipts.status"
}

// ReceiptsForwardReply starts the reply subjects of forwarded status
// requests asked from region: they cross the leaf links back.
func ReceiptsForwardReply(region string) string {
	return CrossRegionPrefix + "re." + region + ".receipts."
}
