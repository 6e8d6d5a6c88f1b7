package client

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/protocol"
)

// Gathered acks.
//
// A device taking messages as they come acks each one, and each ack was a
// frame of its own: a system call here and one at the gateway, one in
// four of a 1:1 message's frames. An ack made within Options.AckGather of
// the last acks written waits for that time to pass, and every ack made
// meanwhile goes out with it, several frames in one write. The first ack
// after a quiet spell goes at once, so a chat that is not busy ticks
// "delivered" as before; a busy one already has its delivered ticks
// gathered by the gateway (over its tick interval), which is longer.
//
// Acks wait for the connection they were made on: a connection lost with
// acks waiting drops them, and the messages come again on the next one,
// where the client acks them again (it remembers what the app acked). Any
// other frame written takes the waiting acks with it, ahead of itself, so
// frames keep the order the app made them in.

// defaultAckGather is Options.AckGather's default.
const defaultAckGather = 20 * time.Millisecond

// ackQueue holds the acks waiting to be written. It owns its state and
// lock; it is taken under Client.writeMu, never the other way round.
type ackQueue struct {
	mu    sync.Mutex
	conn  *websocket.Conn // the connection the waiting acks were made on
	seqs  []uint64
	last  time.Time // when acks were last written
	timer *time.Timer
	armed bool // timer set for the waiting acks
}

// add queues seq, made on conn, and reports whether the caller should
// write the waiting acks now; otherwise a write is already due, or add
// scheduled one (schedule is called with the time left).
func (q *ackQueue) add(conn *websocket.Conn, seq uint64, gather time.Duration, schedule func(time.Duration) *time.Timer) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conn != conn {
		q.conn, q.seqs = conn, q.seqs[:0]
	}
	q.seqs = append(q.seqs, seq)
	if q.armed {
		return false
	}
	if wait := time.Until(q.last.Add(gather)); wait > 0 {
		q.armed = true
		q.timer = schedule(wait)
		return false
	}
	return true
}

// take returns the acks waiting for conn as frames appended to b, and
// counts them as written now.
func (q *ackQueue) take(conn *websocket.Conn, b []byte) ([]byte, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.armed = false
	if q.conn != conn || len(q.seqs) == 0 {
		return b, 0
	}
	n := len(q.seqs)
	var frame [32]byte
	for _, seq := range q.seqs {
		b = appendClientFrame(b, protocol.AppendSeqFrame(frame[:0], protocol.TypeAck, seq))
	}
	q.seqs = q.seqs[:0]
	q.last = time.Now()
	return b, n
}

// stop stops the timer (the client is closing).
func (q *ackQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.timer != nil {
		q.timer.Stop()
	}
	q.seqs, q.conn = nil, nil
}

// ack queues an ack of seq for the current connection and writes the
// waiting acks now or when their time comes.
func (c *Client) ack(seq uint64) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return // the message comes again, and is acked again
	}
	if c.opts.AckGather < 0 {
		c.writeCurrent(protocol.AppendSeqFrame(nil, protocol.TypeAck, seq))
		return
	}
	if c.acks.add(conn, seq, c.opts.AckGather, func(d time.Duration) *time.Timer {
		return time.AfterFunc(d, c.flushAcks)
	}) {
		c.flushAcks()
	}
}

// flushAcks writes the acks waiting, if the connection they were made on
// is still the current one.
func (c *Client) flushAcks() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	b, n := c.acks.take(conn, nil)
	if n == 0 {
		return
	}
	if err := c.writeRaw(conn, b); err != nil {
		conn.Close() // the read loop sees it and reconnects
	}
}

// writeRaw writes frames made by appendClientFrame in one system call.
//
// Lock c.writeMu should be held.
func (c *Client) writeRaw(conn *websocket.Conn, b []byte) error {
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := conn.NetConn().Write(b)
	if c.hooks.wrote != nil {
		c.hooks.wrote(b)
	}
	return err
}

// appendClientFrame appends p as one final text frame, masked as a
// client's frames must be (RFC 6455, 5.3), with a fresh random key.
func appendClientFrame(b, p []byte) []byte {
	const finText = 0x80 | websocket.TextMessage
	const masked = 0x80
	switch n := len(p); {
	case n < 126:
		b = append(b, finText, masked|byte(n))
	case n <= 0xffff:
		b = append(b, finText, masked|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, finText, masked|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, p...)
	for i := range p {
		b[start+i] ^= key[i&3]
	}
	return b
}
