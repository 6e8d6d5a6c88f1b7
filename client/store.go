package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

// What the client writes to Options.Store, and when. Without a Store
// each of these does nothing.
//
//   - Send: the send goes into the store's outbox before its frame can be
//     written (keep); a store error fails the Send and nothing is sent.
//   - "sent": the send leaves the outbox, with its seq (and a tick that
//     came before it), before Send returns (storeSent).
//   - A refusal for good or a withdrawal takes it out (storeDrop).
//   - Start: the outbox is loaded in order before the first connection,
//     whose attach writes it first (restore).
//   - msg: stored before it is handed to the app; one an earlier process
//     stored is dropped and acked (storeMsg).
//   - receipt: ticks stored before the receipt is acked (storeReceipt).
//   - Ack and Read: the acked flag and cursor hint, the read watermark;
//     AckGroup and ReadGroup, for a group read from its log, the acked
//     flags up to the place and the group's read place (storeLogMsg
//     keeps its messages with their place).

// storeErr wraps an error of the local store.
func storeErr(err error) error { return fmt.Errorf("%w: %w", errLocalStore, err) }

// errLocalStore marks a failed write of the Store: the client ends the
// connection so what it was writing comes again.
var errLocalStore = errors.New("client: local store")

// restore loads the store's unconfirmed sends into the outbox, in order,
// under their ids, and the sent messages not yet read into the ticks, so
// receipts for them reach the app. Nobody waits for the sends; a Send
// with the same id joins one.
func (c *Client) restore() error {
	if c.opts.Store == nil {
		return nil
	}
	pending, err := c.opts.Store.Outbox()
	if err != nil {
		return storeErr(err)
	}
	for _, p := range pending {
		c.ob.add(&outgoing{id: p.ID, to: p.To, group: p.Group, body: p.Body, media: p.Media, done: make(chan result, 1)})
	}
	unread, err := c.opts.Store.Unread()
	if err != nil {
		return storeErr(err)
	}
	for _, m := range unread {
		key := m.Conv
		if m.Group != "" {
			key = groupKey(m.Group)
		}
		c.ticks.sent(key, m.ID, m.Seq)
		if m.Status == localstore.Delivered {
			c.ticks.apply(&protocol.Frame{Status: protocol.StatusDelivered, By: m.Conv, Group: m.Group, FromSeq: m.Seq, ToSeq: m.Seq})
		}
	}
	return nil
}

// lockStore serializes keeps, so the store's outbox has the outbox's
// order, and returns its unlock. Taken before c.mu.
func (c *Client) lockStore() (unlock func()) {
	if c.opts.Store == nil {
		return func() {}
	}
	c.storeMu.Lock()
	return c.storeMu.Unlock
}

// keep writes o, a send to a user or to a group, to the store's outbox.
// c.mu is held on entry and exit but released for the write; lockStore
// keeps other sends out meanwhile.
func (c *Client) keep(o *outgoing) error {
	if c.opts.Store == nil {
		return nil
	}
	c.mu.Unlock()
	err := c.opts.Store.AddOutgoing(localstore.Outgoing{ID: o.id, To: o.to, Group: o.group, Body: o.body, Media: o.media})
	c.mu.Lock()
	if err != nil {
		return storeErr(err)
	}
	return nil
}

// storeSent records o stored at f.Seq. A failure leaves it in the
// store's outbox: after a restart it is resent, and the server answers
// dup.
func (c *Client) storeSent(o *outgoing, f *protocol.Frame, early string) {
	if c.opts.Store != nil {
		_ = c.opts.Store.ConfirmGroup(o.group, o.id, f.Seq, time.UnixMilli(f.TS), localstore.StatusOf(early))
	}
}

// storeDrop takes send o out of the store's outbox.
func (c *Client) storeDrop(o *outgoing) {
	if c.opts.Store != nil {
		_ = c.opts.Store.DropGroup(o.group, o.id)
	}
}

// storeMsg stores a message new to this process. It reports known when
// an earlier process stored it already: it was handed to the app then,
// so it is dropped now, and acked, as the store holds it. On an error the
// message is forgotten, so its redelivery is tried again.
func (c *Client) storeMsg(conn *websocket.Conn, f *protocol.Frame, key string) (known bool, err error) {
	if c.opts.Store == nil {
		return false, nil
	}
	var seen localstore.Seen
	if isOwnCopy(f) {
		// A tick that came before the copy is stored with it, in one
		// write: stored apart, a failure of the second would lose it, as
		// the copy that comes again is a repeat the app has.
		m := ownMessage(f)
		c.mu.Lock()
		early := c.ticks.early(ownTickKey(f), f.SentSeq)
		c.mu.Unlock()
		if early != "" {
			m.Status = max(m.Status, localstore.StatusOf(early))
		}
		seen, err = c.opts.Store.ReceivedOwn(m)
	} else {
		conv := f.From
		if f.Group != "" {
			conv = f.Group
		}
		seen, err = c.opts.Store.Received(localstore.Message{
			Group: f.Group, Conv: conv, From: f.From, Device: f.Device, ID: f.ID, Seq: f.Seq,
			TS: time.UnixMilli(f.TS), Body: f.Body, Media: f.Media, Event: f.Event,
		})
	}
	if known, err := c.kept(seen, err, key); !known || err != nil {
		return false, err
	}
	c.mu.Lock()
	c.acked.add(seqKey(f.Seq)) // a later redelivery is acked again
	c.mu.Unlock()
	c.storeAcked(f.Seq)
	return true, c.write(conn, protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq))
}

// storeLogMsg is storeMsg for a message of a group read from its log
// (GSeq, no Seq): an incoming one kept with its place in the log, one
// this user sent from another device kept as their own at that place
// (what its receipts name). One an earlier process stored is acked, with
// everything of the group before it: the log hands a device its messages
// in order, and each was stored before the app had it.
func (c *Client) storeLogMsg(conn *websocket.Conn, f *protocol.Frame, key string) (known bool, err error) {
	if c.opts.Store == nil {
		return false, nil
	}
	c.mu.Lock()
	own := f.From == c.self && f.Event == nil
	early := ""
	if own {
		early = c.ticks.early(groupKey(f.Group), f.GSeq)
	}
	c.mu.Unlock()
	var seen localstore.Seen
	if own {
		seen, err = c.opts.Store.ReceivedOwn(localstore.Message{Group: f.Group, Conv: f.Group, Device: f.Device, ID: f.ID, Seq: f.GSeq,
			TS: time.UnixMilli(f.TS), Body: f.Body, Media: f.Media, Status: max(localstore.Sent, localstore.StatusOf(early))})
	} else {
		seen, err = c.opts.Store.Received(localstore.Message{Group: f.Group, Conv: f.Group, From: f.From, Device: f.Device, ID: f.ID,
			GSeq: f.GSeq, TS: time.UnixMilli(f.TS), Body: f.Body, Media: f.Media, Event: f.Event})
	}
	if known, err := c.kept(seen, err, key); !known || err != nil {
		return false, err
	}
	c.mu.Lock()
	if c.groupAcked == nil {
		c.groupAcked = map[string]uint64{}
	}
	c.groupAcked[f.Group] = max(c.groupAcked[f.Group], f.GSeq) // a later redelivery is acked again
	c.mu.Unlock()
	c.storeAckedGroup(f.Group, f.GSeq)
	c.ackGroup(conn, f.Group, f.GSeq)
	return true, nil
}

// kept ends the store of a received message (key its dedup key): on an
// error the message is forgotten, so its redelivery is tried again; one
// an earlier process stored (known) is counted as a repeat dropped.
func (c *Client) kept(seen localstore.Seen, err error, key string) (known bool, _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.seenMsg.remove(key)
		return false, storeErr(err)
	}
	if seen.Dup {
		c.stats.DuplicatesDropped++
	}
	return seen.Dup, nil
}

// storeReceipt records the ticks a receipt frame gives, before it is
// acked: on an error the connection is dropped and the receipt comes
// again.
func (c *Client) storeReceipt(f *protocol.Frame) error {
	if c.opts.Store == nil {
		return nil
	}
	var err error
	if f.Group != "" {
		err = c.opts.Store.ApplyGroupReceipt(f.Group, f.Status, f.FromSeq, f.ToSeq)
	} else {
		err = c.opts.Store.ApplyReceipt(f.By, f.Status, f.FromSeq, f.ToSeq)
	}
	if err != nil {
		return storeErr(err)
	}
	return nil
}

// storeAcked and storeRead record the app's ack and read of seq. Their
// errors are not reported: the server keeps the cursor and the read
// position, the store only a copy.
func (c *Client) storeAcked(seq uint64) {
	if c.opts.Store != nil {
		_ = c.opts.Store.Acked(seq)
	}
}

func (c *Client) storeRead(seq uint64) {
	if c.opts.Store != nil {
		_, _ = c.opts.Store.MarkRead(seq)
	}
}

// storeAckedGroup and storeReadGroup are storeAcked and storeRead for a
// group read from its log, by place in the log.
func (c *Client) storeAckedGroup(group string, gseq uint64) {
	if c.opts.Store != nil {
		_ = c.opts.Store.AckedGroup(group, gseq)
	}
}

func (c *Client) storeReadGroup(group string, gseq uint64) {
	if c.opts.Store != nil {
		_ = c.opts.Store.SetGroupReadPlace(group, gseq)
	}
}
