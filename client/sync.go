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
// To (whom it went to) and SentSeq (where it is stored): it is deduped
// like any other, by (From, ID), and its ticks become Receipts here as on
// the device that sent it. A read on another device arrives as a ReadSync:
// the conversation with Peer is read up to Seq, a watermark.

// ReadSync reports that this user read Peer's messages up to Seq (a seq of
// this user's inbox, as Message.Seq) on Device, another of their devices.
type ReadSync struct {
	Peer   string
	Device string
	Seq    uint64
	TS     time.Time
}

// ReadSyncs delivers each read made on another device of this user, in
// the order stored. The SDK acks them; a Store records the watermark.
func (c *Client) ReadSyncs() <-chan ReadSync { return c.rsync }

// ownTicks makes a message this user sent from another device known to
// the ticks, so its receipts reach the app; a tick that came before it
// goes to the app now.
func (c *Client) ownTicks(f *protocol.Frame) error {
	if f.To == "" || f.SentSeq == 0 || f.Group != "" {
		return nil
	}
	c.mu.Lock()
	early := c.ticks.sent(f.To, f.ID, f.SentSeq)
	c.mu.Unlock()
	if early == "" {
		return nil
	}
	// The tick came before the message did: the store records it too.
	if c.opts.Store != nil {
		if err := c.opts.Store.ApplyReceipt(f.To, early, f.SentSeq, f.SentSeq); err != nil {
			return storeErr(err)
		}
	}
	select {
	case c.rcpt <- Receipt{ID: f.ID, Status: early, By: f.To, Seq: f.SentSeq, TS: time.Now()}:
		return nil
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// onReadSync hands a read_sync frame to the app, records its watermark in
// the store, and acks it.
func (c *Client) onReadSync(conn *websocket.Conn, f *protocol.Frame) error {
	if c.opts.Store != nil && f.Peer != "" {
		if err := c.opts.Store.SetReadWatermark(f.Peer, f.ToSeq); err != nil {
			return storeErr(err)
		}
	}
	select {
	case c.rsync <- ReadSync{Peer: f.Peer, Device: f.Device, Seq: f.ToSeq, TS: time.UnixMilli(f.TS)}:
	case <-c.ctx.Done():
		return ErrClosed
	}
	return c.write(conn, protocol.AppendSeqFrame(nil, protocol.TypeAck, f.Seq))
}

// ownMessage is what the store keeps of a message this user sent from
// another device: one of its own, in the conversation with f.To, at the
// seq its receipts name.
func ownMessage(f *protocol.Frame) localstore.Message {
	return localstore.Message{Conv: f.To, Device: f.Device, ID: f.ID, Seq: f.SentSeq,
		TS: time.UnixMilli(f.TS), Body: f.Body, Media: f.Media, Status: localstore.Sent}
}
