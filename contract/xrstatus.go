package contract

// Message info across regions.
//
// A sender whose message goes to another region (a recipient homed
// there, or a group homed there) sends through their own region's OUTBOX
// and is "sent" an OUTBOX sequence, so that is the seq their status frame
// names. The answer is the other region's: the recipient's inbox and
// positions, or the group's log and the members' positions, are there.
// The gateway asks its own region's receipts function
// (StatusRemoteSubject), which passes the request to that region's
// receipts function over the leaf links (ReceiptsForwardSubject, the
// answer on ReceiptsForwardReply) and relays its answer as is, as groups
// functions do for membership changes.

// StatusRemoteSubject is where a gateway asks its region's receipts
// function about a message its user sent to another region.
const StatusRemoteSubject = "sb.fn.receipts.status-remote"

// StatusRemoteRequest asks for the status of the message Sender sent
// from region Region, where Region's OUTBOX stored it at Seq (its
// "sent"): to group Group, or (Group empty) to user To; Home is the
// group's or the recipient's home region, which answers with a
// StatusReply, or refuses with ErrCodeUnknownSeq when Sender sent no such
// message there.
type StatusRemoteRequest struct {
	Sender string `json:"sender"`
	Group  string `json:"group,omitempty"`
	To     string `json:"to,omitempty"`
	Seq    uint64 `json:"seq"`
	Region string `json:"region"`
	Home   string `json:"home"`
}

// ReceiptsForwardSubject is where the receipts function of region
// answers status requests about messages sent there from other regions
// (to its users or its groups), asked by those regions' receipts
// functions: it crosses the leaf links.
func ReceiptsForwardSubject(region string) string {
	return CrossRegionPrefix + "fn." + region + ".receipts.status"
}

// ReceiptsForwardReply starts the reply subjects of forwarded status
// requests asked from region: they cross the leaf links back.
func ReceiptsForwardReply(region string) string {
	return CrossRegionPrefix + "re." + region + ".receipts."
}
