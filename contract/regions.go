package contract

import (
	"strconv"
	"strings"
)

// Regions.
//
// Each region is its own NATS deployment and JetStream domain, joined to
// the others through a hub by leaf links. A user has one home region
// (HomesKV), where their devices are served and their inbox is. A message
// for a user homed elsewhere is stored first in the sender's region, in
// OUTBOX on out.<region>.<user>, and the home region's INBOX sources it
// from there across domains (renaming it inbox.<user>): JetStream stores
// and forwards it, and the transit copy is deleted once taken (OUTBOX is
// a work queue). Ticks go back the same way, from the reader's region's
// OUTBOX into the sender's home INBOX.

// Names of the regions' JetStream assets and subjects.
const (
	Outbox       = "OUTBOX"
	OutboxPrefix = "out."
	// HomesKV is the directory of home regions: key <user>, value the
	// region's name. One region holds the bucket and the others mirror
	// it, so every region reads it locally, also while cut off.
	HomesKV = "HOMES"
	// CrossRegionPrefix starts the deliver subjects of the consumers
	// that carry OUTBOX across a leaf link: xr.<from>.<to>.
	CrossRegionPrefix = "xr."
)

// OutboxFirstSeq is OUTBOX's first sequence. "sent" for a message to
// another region is its OUTBOX sequence, so OUTBOX numbers from far
// above anything an INBOX reaches (2^52, still exact in a JavaScript
// number): a client, or a gateway answering a status frame, can never
// take one for an INBOX sequence.
const OutboxFirstSeq uint64 = 1 << 52

// IsOutboxSeq reports whether seq is an OUTBOX sequence (see
// OutboxFirstSeq).
func IsOutboxSeq(seq uint64) bool { return seq >= OutboxFirstSeq }

// OutboxSubject is where a message for user, homed in region, is stored
// in the sender's region. The caller must have validated both as ids.
func OutboxSubject(region, user string) string { return OutboxPrefix + region + "." + user }

// CrossRegionConsumer names the durable consumer on OUTBOX in region
// from that carries to region to what is stored for it.
func CrossRegionConsumer(to string) string { return "to-" + to }

// CrossRegionDeliver is that consumer's deliver subject, which crosses
// the leaf links.
func CrossRegionDeliver(from, to string) string { return CrossRegionPrefix + from + "." + to }

// HdrOriginRegion names the region a message or tick was stored in
// first, on copies that crossed from another region's OUTBOX.
const HdrOriginRegion = "Sb-Origin-Region"

// HdrStreamSource is the header JetStream puts on a sourced copy:
// "<stream index> <origin sequence> <filter> <transform> <origin subject>
// [<origin stream identity>]" (nats-server's genSourceHeader).
const HdrStreamSource = "Nats-Stream-Source"

// OriginSeq is the sequence a sourced copy had in the stream it came from
// (its Nats-Stream-Source header), 0 if h names none.
func OriginSeq(h string) uint64 {
	fields := strings.Fields(h)
	if len(fields) < 2 {
		return 0
	}
	n, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Origin is a remote sender's messages in a delivered stretch, in the
// sequences of their region's OUTBOX: the sender's app knows its messages
// by those ("sent"), so its tick must name them.
type Origin struct {
	Sender string `json:"sender"`
	Region string `json:"region"`
	From   uint64 `json:"from"`
	To     uint64 `json:"to"`
}
