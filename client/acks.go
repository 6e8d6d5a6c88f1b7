package client

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
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
// meanwhile goes out with it, several frames in one write (at once when
// ackBatch are waiting). The first ack after a quiet spell goes at once,
// so a chat that is not busy ticks "delivered" as before; a busy one
// already has its delivered ticks gathered by the gateway (over its tick
// interval), which is longer.
//
// Acks wait for the connection they were made on and are written only
// there: a connection lost with acks waiting drops them, and the messages
// come again on the next one, where the client acks them again (it
// remembers what the app acked). Any other frame written on that
// connection takes the waiting acks with it, ahead of itself, so frames
// keep the order the app made them in; Close writes them before its close
// frame, and none after it.

// defaultAckGather is Options.AckGather's default. A member of a busy
// group gets a message every 100 ms or so, which a 50 ms wait never
// gathered: each ack was a frame, a read at the gateway and a write here
// (a radio wake-up on a phone). 250 ms gathers them in twos and threes;
// what it delays is hidden behind the gateway's own gathering of
// delivered ticks (--tick-interval, 1 s), which is longer.
const defaultAckGather = 250 * time.Millisecond

// ackBatch is how many waiting acks are written at once, without waiting
// longer: the gateway stops delivering to a device with --max-inflight
// (256) messages unacked, and a backlog read must not stall on acks held
// back.
const ackBatch = 64

// groupAckBatch is how many messages of groups read from their logs,
// acked, make their acks go out at once: half of what the gateway lets a
// device hold unacked of one group (64), so a busy group's messages
// keep coming while the acks are on their way.
const groupAckBatch = 32

// stopper is a timer as ackQueue uses one (*time.Timer; tests use their
// own through hooks.afterFunc).
type stopper interface{ Stop() bool }

// ackQueue holds the acks waiting to be written. It owns its state and
// lock; the lock is taken under Client.writeMu or Client.mu, never the other
// way round.
type ackQueue struct {
	mu      sync.Mutex
	conn    *websocket.Conn // the connection the waiting acks were made on
	seqs    []uint64
	groups  []groupAck // of groups read from their logs: one per group, the highest
	grouped int        // messages those cover (AckGroup calls since the last write)
	last    time.Time  // when acks were last written
	timer   stopper    // set while acks wait for their time
	stopped bool       // the client closed: nothing more is queued or written
}

// groupAck is an ack of a group read from its log, up to gseq.
type groupAck struct {
	group string
	gseq  uint64
}

// add queues seq, made on conn, and reports whether the caller should
// write the waiting acks now; otherwise a write is already due, or add
// set one up through after.
func (q *ackQueue) add(conn *websocket.Conn, seq uint64, gather time.Duration, after func(time.Duration) stopper) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped || q.conn != conn {
		// Made on a connection that is gone (see above): an Ack that read
		// the connection just before it went may get here after the next
		// one is current, and must not take that one's acks with it.
		return false
	}
	q.seqs = append(q.seqs, seq)
	return q.dueLocked(gather, after)
}

// addGroup queues an ack of group up to gseq, made on conn, as add does:
// one waiting for the same group is raised instead.
func (q *ackQueue) addGroup(conn *websocket.Conn, group string, gseq uint64, gather time.Duration, after func(time.Duration) stopper) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped || q.conn != conn {
		return false
	}
	i := slices.IndexFunc(q.groups, func(a groupAck) bool { return a.group == group })
	if i < 0 {
		q.groups = append(q.groups, groupAck{group, gseq})
	} else {
		q.groups[i].gseq = max(q.groups[i].gseq, gseq)
	}
	q.grouped++
	if q.grouped >= groupAckBatch {
		return true
	}
	return q.dueLocked(gather, after)
}

// dueLocked reports whether the waiting acks are to be written now, or
// sets up their wait.
//
// Lock should be held.
func (q *ackQueue) dueLocked(gather time.Duration, after func(time.Duration) stopper) bool {
	if len(q.seqs)+len(q.groups) >= ackBatch {
		return true
	}
	if q.timer != nil {
		return false
	}
	if wait := time.Until(q.last.Add(gather)); wait > 0 {
		q.timer = after(wait)
		return false
	}
	return true
}

// attach makes conn the connection acks are queued for: those waiting for
// the one before are dropped, with their wait (the messages come again).
func (q *ackQueue) attach(conn *websocket.Conn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conn != conn {
		q.stopTimerLocked()
		q.conn, q.seqs, q.groups, q.grouped = conn, q.seqs[:0], q.groups[:0], 0
	}
}

// take returns the acks waiting for conn as frames appended to b, with
// how many there are, and counts them as written now. conn nil takes
// them whatever connection they were made on, and returns it.
func (q *ackQueue) take(conn *websocket.Conn, b []byte) ([]byte, int, *websocket.Conn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped || len(q.seqs)+len(q.groups) == 0 || (conn != nil && q.conn != conn) {
		return b, 0, nil
	}
	q.stopTimerLocked()
	n := len(q.seqs) + len(q.groups)
	keys := make([]byte, 4*n)
	_, _ = rand.Read(keys) // never fails
	var frame [128]byte
	for i, seq := range q.seqs {
		b = appendClientFrame(b, protocol.AppendSeqFrame(frame[:0], protocol.TypeAck, seq), [4]byte(keys[4*i:]))
	}
	for i, a := range q.groups {
		k := 4 * (len(q.seqs) + i)
		b = appendClientFrame(b, protocol.AppendGroupSeqFrame(frame[:0], protocol.TypeAck, a.group, a.gseq), [4]byte(keys[k:]))
	}
	q.seqs, q.groups, q.grouped = q.seqs[:0], q.groups[:0], 0
	q.last = time.Now()
	return b, n, q.conn
}

// stop drops what waits and refuses anything more (the client is
// closing, and its close frame is the last frame it writes).
func (q *ackQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopTimerLocked()
	q.stopped, q.seqs, q.groups, q.conn = true, nil, nil, nil
}

func (q *ackQueue) stopTimerLocked() {
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
}

// ack queues an ack of seq for conn, which delivered it, and writes the
// waiting acks now or when their time comes.
func (c *Client) ack(conn *websocket.Conn, seq uint64) {
	if c.opts.AckGather < 0 {
		if err := c.write(conn, protocol.AppendSeqFrame(nil, protocol.TypeAck, seq)); err != nil {
			conn.Close() // the read loop sees it and reconnects
		}
		return
	}
	if c.acks.add(conn, seq, c.opts.AckGather, c.ackAfter) {
		c.flushAcks()
	}
}

// ackGroup queues an ack of group up to gseq for conn, as ack does.
func (c *Client) ackGroup(conn *websocket.Conn, group string, gseq uint64) {
	if c.opts.AckGather < 0 {
		if err := c.write(conn, protocol.AppendGroupSeqFrame(nil, protocol.TypeAck, group, gseq)); err != nil {
			conn.Close()
		}
		return
	}
	if c.acks.addGroup(conn, group, gseq, c.opts.AckGather, c.ackAfter) {
		c.flushAcks()
	}
}

// ackAfter sets up a wait for the acks: time.AfterFunc, or the tests'.
func (c *Client) ackAfter(d time.Duration) stopper {
	if c.hooks.afterFunc != nil {
		return c.hooks.afterFunc(d, c.flushAcks)
	}
	return time.AfterFunc(d, c.flushAcks)
}

// flushAcks writes the acks waiting, on the connection they were made
// on. If that one is gone, the write fails and closes it again: the
// messages come again on the next.
func (c *Client) flushAcks() {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	b, n, conn := c.acks.take(nil, nil)
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
	if c.closeSent == conn {
		return websocket.ErrCloseSent
	}
	// On the socket itself: the websocket.Conn's own deadline is applied
	// by its own writes only, and the socket keeps that of its last one.
	nc := conn.NetConn()
	if err := nc.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if c.hooks.wrote != nil {
		c.hooks.wrote(b) // before: the peer may act on the bytes before Write returns
	}
	_, err := nc.Write(b)
	return err
}

// appendClientFrame appends p as one final text frame, masked with key as
// a client's frames must be (RFC 6455, 5.3).
func appendClientFrame(b, p []byte, key [4]byte) []byte {
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
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, p...)
	for i := range p {
		b[start+i] ^= key[i&3]
	}
	return b
}
