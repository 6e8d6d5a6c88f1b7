package client

import (
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/client/localstore"
	"github.com/switchboard-im/switchboard/protocol"
)

// Own messages and read state from this user's other devices.
//
// A message this user sent from another device arrives as a Message with
// To (whom it went to), or Group, and SentSeq (where it is stored): it is
// deduped like any other, by (From, ID), and its ticks become Receipts
// here as on the device that sent it. A read on another device arrives as
// a ReadSync: the conversation with Peer, or Group, is read up to Seq, a
// watermark.

// ReadSync reports that this user read Peer's messages, or group Group,
// up to Seq (a seq of this user's inbox, as Message.Seq) on Device,
// another of their devices.
type ReadSync struct {
	Peer   string
	Group  string
	Device string
	Seq    uint64
	// GSeq is, instead of Seq, the place read up to in Group's log, for a
	// group read from its log (Message.GSeq).
	GSeq uint64
	TS   time.Time
}

// ReadSyncs delivers each read made on another device of this user, in
// the order stored. The SDK acks them; a Store records the watermark.
func (c *Client) ReadSyncs() <-chan ReadSync { return c.rsync }

// ownTicks makes a message this user sent from another device known to
// the ticks, so its receipts reach the app; a tick that came before it
// goes to the app now.
func (c *Client) ownTicks(f *protocol.Frame) error {
	if !isOwnCopy(f) {
		return nil
	}
	return c.ownTicksAt(f, f.SentSeq)
}

// ownTicksAt is ownTicks for own message f, whose receipts name seq: its
// SentSeq, or its place in a group's log when it came from there.
func (c *Client) ownTicksAt(f *protocol.Frame, seq uint64) error {
	c.mu.Lock()
	early := c.ticks.sent(ownTickKey(f), f.ID, seq)
	c.mu.Unlock()
	if early == "" {
		return nil
	}
	// The tick came before the message did (storeMsg stored it with the
	// message).
	select {
	case c.rcpt <- Receipt{ID: f.ID, Status: early, Group: f.Group, By: f.To, Seq: seq, TS: time.Now()}:
		return nil
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// ownTickKey is where the ticks of own copy f are kept.
func ownTickKey(f *protocol.Frame) string {
	if f.Group != "" {
		return groupKey(f.Group)
	}
	return f.To
}

// onReadSync hands a read_sync frame to the app, records its watermark in
// the store, and acks it.
func (c *Client) onReadSync(conn *websocket.Conn, f *protocol.Frame) error {
	if c.opts.Store != nil {
		var err error
		switch {
		case f.GSeq != 0:
			err = c.opts.Store.SetGroupReadPlace(f.Group, f.GSeq)
		case f.Group != "":
			err = c.opts.Store.SetGroupReadWatermark(f.Group, f.ToSeq)
		case f.Peer != "":
			err = c.opts.Store.SetReadWatermark(f.Peer, f.ToSeq)
		}
		if err != nil {
			return storeErr(err)
		}
	}
	select {
	case c.rsync <- ReadSync{Peer: f.Peer, Group: f.Group, Device: f.Device, Seq: f.ToSeq, GSeq: f.GSeq, TS: time.UnixMilli(f.TS)}:
	case <-c.ctx.Done():
		return ErrClosed
	}
	return c.write(conn, protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq))
}

// isOwnCopy reports whether msg frame f is a message this user sent from
// another device: to a user (to), or in a group (a group message with
// sent_seq, its place in the group's log).
func isOwnCopy(f *protocol.Frame) bool {
	return f.SentSeq != 0 && f.Event == nil && (f.To != "" || f.Group != "")
}

// ownMessage is what the store keeps of a message this user sent from
// another device: one of its own, in the conversation with f.To or in
// f.Group, at the seq its receipts name.
func ownMessage(f *protocol.Frame) localstore.Message {
	conv := f.To
	if f.Group != "" {
		conv = f.Group
	}
	return localstore.Message{Group: f.Group, Conv: conv, Device: f.Device, ID: f.ID, Seq: f.SentSeq,
		TS: time.UnixMilli(f.TS), Body: f.Body, Media: f.Media, Status: localstore.Sent}
}
