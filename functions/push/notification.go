package push

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Notification is the webhook body, one per device. It names the message
// but never carries its body: the device wakes up and fetches the message
// over its own encrypted session, so no push provider ever sees content.
// The field order is part of the contract (receivers may sign or hash the
// bytes); do not reorder.
type Notification struct {
	User      string `json:"user"`
	Device    string `json:"device"`
	MessageID string `json:"message_id"`
	From      string `json:"from"`
	// Pending is how many messages wait for this device (at least 1).
	Pending uint64 `json:"pending"`
	// Seq is the INBOX stream sequence of the message; 0 marks a test push
	// from the notify endpoint.
	Seq uint64 `json:"seq"`
	// TS is when the gateway accepted the message, ms since epoch.
	TS int64 `json:"ts"`
	// Group and GSeq name a message of a group whose members read its
	// log (docs/GROUP-LOG.md): the group, and the message's place in
	// GROUPS. Seq is then 0; no inbox holds the message.
	Group string `json:"group,omitempty"`
	GSeq  uint64 `json:"gseq,omitempty"`
}

// ref names the message n is about in the PUSH bucket's claims.
func (n *Notification) ref() ref {
	if n.Group != "" {
		return ref{n.Group, n.GSeq}
	}
	return ref{"", n.Seq}
}

// fromInbox reads a stored chat message's subject and headers. On error the
// returned notification still holds what could be read, for the dead
// letter.
func fromInbox(subject string, h nats.Header, seq uint64) (Notification, error) {
	n := Notification{Seq: seq}
	user, ok := strings.CutPrefix(subject, contract.InboxPrefix)
	n.User = user
	if !ok || !protocol.ValidID(user) {
		return n, fmt.Errorf("%w: subject %q does not name a valid user", ErrMalformed, subject)
	}
	return n, n.readHeaders(h)
}

// readHeaders fills in a stored message's sender, id and time from its
// headers h, as far as they are valid.
func (n *Notification) readHeaders(h nats.Header) error {
	n.From, n.MessageID = h.Get(contract.HdrFrom), h.Get(contract.HdrID)
	if !protocol.ValidID(n.From) {
		return fmt.Errorf("%w: missing or invalid %s header", ErrMalformed, contract.HdrFrom)
	}
	if !protocol.ValidID(n.MessageID) {
		return fmt.Errorf("%w: missing or invalid %s header", ErrMalformed, contract.HdrID)
	}
	ts, err := strconv.ParseInt(h.Get(contract.HdrTS), 10, 64)
	if err != nil || ts <= 0 {
		return fmt.Errorf("%w: missing or invalid %s header", ErrMalformed, contract.HdrTS)
	}
	n.TS = ts
	return nil
}

// lastToken is the subject's last token: the user of inbox.<user>, even
// one too odd to validate, so a dead letter still files under it.
func lastToken(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		subject = subject[i+1:]
	}
	if subject == "" || strings.ContainsAny(subject, "*> \t\r\n") {
		return "unknown"
	}
	return subject
}
