package load

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ledger is the queue checker. Each sender numbers its messages (id
// "m<n>"); the ledger keeps, per message, when it was meant to be sent,
// the sequence "sent" confirmed, and how often the recipient's app got it.
// At the end every confirmed message must have been delivered exactly
// once.
//
// A delivery may arrive before its sender's "sent" (the PubAck and the
// consumer race), so "owed" is settled under the sender's lock from
// whichever side comes second.
type ledger struct {
	senders []*outbox

	owedMsgs     atomic.Int64 // confirmed, checked, not yet delivered
	owedReceipts atomic.Int64 // confirmed, checked, no delivered receipt yet
	sent         atomic.Int64
	delivered    atomic.Int64 // first deliveries to the app
	receipts     atomic.Int64 // first delivered receipts
	reordered    atomic.Int64
	lastSent     atomic.Int64 // unix ns of the latest event of each kind
	lastDeliver  atomic.Int64
	lastReceipt  atomic.Int64

	sendSent, sendDeliver, sendReceipt *hist
}

// outbox is one sender's messages, by number.
type outbox struct {
	mu   sync.Mutex // guards msgs
	msgs []record
}

type record struct {
	at      int64  // when the send was due, unix ns
	seq     uint64 // stored sequence from "sent"; 0 until then
	to      int32  // recipient index
	got     uint16 // times the recipient's app received it
	rcpt    bool   // its delivered receipt came back
	checked bool   // its recipient is expected to receive it in this run
}

func newLedger(senders int) *ledger {
	l := &ledger{senders: make([]*outbox, senders),
		sendSent: newHist(), sendDeliver: newHist(), sendReceipt: newHist()}
	for i := range l.senders {
		l.senders[i] = &outbox{}
	}
	return l
}

// begin numbers a new message from sender to recipient, due at at.
func (l *ledger) begin(sender, to int, at time.Time, checked bool) int {
	o := l.senders[sender]
	o.mu.Lock()
	n := len(o.msgs)
	o.msgs = append(o.msgs, record{at: at.UnixNano(), to: int32(to), checked: checked})
	o.mu.Unlock()
	return n
}

func msgID(n int) string {
	var b [24]byte
	return string(strconv.AppendInt(append(b[:0], 'm'), int64(n), 10))
}

// parseMsgID is msgID's inverse; -1 for an id this run did not make.
func parseMsgID(id string) int {
	if len(id) < 2 || id[0] != 'm' {
		return -1
	}
	n, err := strconv.Atoi(id[1:])
	if err != nil {
		return -1
	}
	return n
}

// confirmed records "sent" for message n of sender.
func (l *ledger) confirmed(sender, n int, seq uint64, now time.Time) {
	o := l.senders[sender]
	o.mu.Lock()
	r := &o.msgs[n]
	first := r.seq == 0
	r.seq = seq
	owedMsg := first && r.checked && r.got == 0
	owedRcpt := first && r.checked && !r.rcpt
	at := r.at
	o.mu.Unlock()
	if !first {
		return
	}
	if owedMsg {
		l.owedMsgs.Add(1)
	}
	if owedRcpt {
		l.owedReceipts.Add(1)
	}
	l.sent.Add(1)
	atomicMax(&l.lastSent, now.UnixNano())
	l.sendSent.record(now.Sub(time.Unix(0, at)))
}

// deliver records that recipient to's app got message n of sender,
// stamped at (from the body). known is false for a message this run did
// not send to that recipient (one sent to another recipient is not
// counted as delivered); first is true the first time the app gets it.
func (l *ledger) deliver(sender, n, to int, at int64, now time.Time) (known, first bool) {
	if sender < 0 || sender >= len(l.senders) || n < 0 {
		return false, false
	}
	o := l.senders[sender]
	o.mu.Lock()
	if n >= len(o.msgs) || int(o.msgs[n].to) != to {
		o.mu.Unlock()
		return false, false
	}
	r := &o.msgs[n]
	r.got++
	first = r.got == 1
	settles := first && r.seq != 0 && r.checked
	o.mu.Unlock()
	if !first {
		return true, false
	}
	if settles {
		l.owedMsgs.Add(-1)
	}
	l.delivered.Add(1)
	atomicMax(&l.lastDeliver, now.UnixNano())
	l.sendDeliver.record(now.Sub(time.Unix(0, at)))
	return true, true
}

// receipt records the delivered receipt of message n back at its sender.
func (l *ledger) receipt(sender, n int, now time.Time) {
	if n < 0 {
		return
	}
	o := l.senders[sender]
	o.mu.Lock()
	if n >= len(o.msgs) || o.msgs[n].rcpt {
		o.mu.Unlock()
		return
	}
	r := &o.msgs[n]
	r.rcpt = true
	settles := r.seq != 0 && r.checked
	at := r.at
	o.mu.Unlock()
	if settles {
		l.owedReceipts.Add(-1)
	}
	l.receipts.Add(1)
	atomicMax(&l.lastReceipt, now.UnixNano())
	l.sendReceipt.record(now.Sub(time.Unix(0, at)))
}

// Counts is the checker's verdict.
type Counts struct {
	// Attempted is every Send started; Sent those confirmed "sent".
	Attempted int64 `json:"attempted"`
	Sent      int64 `json:"sent"`
	// Delivered counts messages the recipients' apps received (once each).
	Delivered int64 `json:"delivered"`
	// Receipts counts delivered receipts back at the senders.
	Receipts int64 `json:"receipts"`
	// Checked is how many confirmed messages had a recipient expected to
	// read them (offline: only the sample reconnects).
	Checked int64 `json:"checked"`
	// Lost: confirmed, checked, and not delivered by the end of the run
	// (the drain timeout): lost to the app, though JetStream may still
	// hold it for a later session.
	Lost int64 `json:"lost"`
	// Duplicated: deliveries to the app beyond the first.
	Duplicated int64 `json:"duplicated"`
	// Reordered: deliveries with a lower sequence than an earlier one
	// from the same sender to the same device.
	Reordered int64 `json:"reordered"`
	// Unconfirmed: delivered though the sender never saw "sent" (the
	// send failed or timed out after it was stored): not an error.
	Unconfirmed int64 `json:"unconfirmed"`
	// MissingReceipts: confirmed, checked, no delivered receipt came back.
	MissingReceipts int64 `json:"missing_receipts"`
	// SDKDuplicatesDropped are redeliveries the SDK dropped before the
	// app saw them (client.Stats), summed over every device.
	SDKDuplicatesDropped uint64 `json:"sdk_duplicates_dropped"`
	// Reconnects are connections beyond each client's first.
	Reconnects uint64 `json:"reconnects"`
}

// count walks every record.
func (l *ledger) count() Counts {
	var c Counts
	for _, o := range l.senders {
		o.mu.Lock()
		for _, r := range o.msgs {
			c.Attempted++
			if r.seq != 0 {
				c.Sent++
			}
			if r.got > 0 {
				c.Delivered++
				c.Duplicated += int64(r.got) - 1
			}
			if r.rcpt {
				c.Receipts++
			}
			switch {
			case r.seq == 0 && r.got > 0:
				c.Unconfirmed++
			case r.seq != 0 && r.checked:
				c.Checked++
				if r.got == 0 {
					c.Lost++
				}
				if !r.rcpt {
					c.MissingReceipts++
				}
			}
		}
		o.mu.Unlock()
	}
	c.Reordered = l.reordered.Load()
	return c
}

// inbox is one recipient's view, for the order check. Only its device's
// drain goroutine touches it.
type inbox struct {
	last map[int]uint64 // highest sequence seen per sender
}

// order records seq from sender and reports whether it came out of
// order: lower than one seen before. The same sequence again is a
// duplicate, which the ledger counts, not a reordering.
func (in *inbox) order(sender int, seq uint64) bool {
	if in.last == nil {
		in.last = map[int]uint64{}
	}
	last := in.last[sender]
	if seq < last {
		return true
	}
	in.last[sender] = max(last, seq)
	return false
}

func atomicMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}
