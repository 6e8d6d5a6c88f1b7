package protocol

import (
	"bytes"
	"encoding/json"
	"math"
	"unicode/utf8"
)

// Fast paths for the frames that carry the traffic: ack, read and a 1:1
// send (client to server), and sent and msg, 1:1 or a group's (server to
// client), each in exactly the form its encoder writes (AppendSeqFrame,
// AppendSend, AppendSent, AppendMsg, AppendGroupMsg, AppendGroupLogMsg).
// They decode without
// encoding/json's reflection and allocate only the frame, its ids and
// its body. Anything else, the same frame written another way included,
// is nil and goes the whole way, which gives the same frame for the
// encoders' form (FuzzSeqFrameFastPath, FuzzSendFastPath,
// FuzzServerFastPath).

// cursor reads a frame from the front. Once a step fails, ok stays
// false and every later step fails too.
type cursor struct {
	b  []byte
	ok bool
}

// lit consumes s.
func (c *cursor) lit(s string) {
	if c.ok && len(c.b) >= len(s) && string(c.b[:len(s)]) == s {
		c.b = c.b[len(s):]
		return
	}
	c.ok = false
}

// id consumes a safe id and the quote that ends it.
func (c *cursor) id() string {
	if !c.ok {
		return ""
	}
	i := bytes.IndexByte(c.b, '"')
	if i < 0 || !ValidID(string(c.b[:i])) {
		c.ok = false
		return ""
	}
	s := string(c.b[:i])
	c.b = c.b[i+1:]
	return s
}

// uint consumes a JSON integer that fits a uint64: no sign, no leading
// zero, no fraction or exponent.
func (c *cursor) uint() uint64 {
	if !c.ok {
		return 0
	}
	n := 0
	var v uint64
	for n < len(c.b) && c.b[n] >= '0' && c.b[n] <= '9' {
		d := uint64(c.b[n] - '0')
		if v > (math.MaxUint64-d)/10 {
			c.ok = false
			return 0
		}
		v = v*10 + d
		n++
	}
	if n == 0 || (n > 1 && c.b[0] == '0') || (n < len(c.b) && (c.b[n] == '.' || c.b[n] == 'e' || c.b[n] == 'E')) {
		c.ok = false
		return 0
	}
	c.b = c.b[n:]
	return v
}

// int consumes a JSON integer that fits an int64.
func (c *cursor) int() int64 {
	neg := c.ok && len(c.b) > 0 && c.b[0] == '-'
	if neg {
		c.b = c.b[1:]
	}
	v := c.uint()
	switch {
	case !c.ok:
		return 0
	case neg && v <= 1<<63:
		return int64(-v) // -(1<<63) wraps to itself: MinInt64
	case !neg && v <= math.MaxInt64:
		return int64(v)
	}
	c.ok = false
	return 0
}

// body consumes the rest but the closing brace: one JSON value with no
// space around it. It is copied, as json.RawMessage would be.
func (c *cursor) body() json.RawMessage {
	if !c.ok || len(c.b) < 2 || c.b[len(c.b)-1] != '}' {
		c.ok = false
		return nil
	}
	v := c.b[:len(c.b)-1]
	if isSpace(v[0]) || isSpace(v[len(v)-1]) || !ValidJSON(v) {
		c.ok = false
		return nil
	}
	c.b = nil
	return bytes.Clone(v)
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

// decodeSeqInto decodes into f the frames a device sends most, an ack or
// a read in AppendSeqFrame's form (a device acks every message it gets);
// it sets f only if it reports true.
func decodeSeqInto(data []byte, f *Frame) bool {
	c := cursor{b: data, ok: true}
	var typ string
	switch {
	case bytes.HasPrefix(data, []byte(`{"type":"ack","seq":`)):
		typ = TypeAck
	case bytes.HasPrefix(data, []byte(`{"type":"read","seq":`)):
		typ = TypeRead
	default:
		return false
	}
	c.lit(`{"type":"` + typ + `","seq":`)
	seq := c.uint()
	c.lit(`}`)
	if !c.ok || len(c.b) != 0 || seq == 0 {
		return false
	}
	*f = Frame{Type: typ, Seq: seq}
	return true
}

// decodeSendInto decodes into f a 1:1 send in AppendSend's form, valid as
// decodeClientJSON would find it; it sets f only if it reports true.
func decodeSendInto(data []byte, f *Frame) bool {
	c := cursor{b: data, ok: true}
	c.lit(`{"type":"send","id":"`)
	id := c.id()
	c.lit(`,"to":"`)
	to := c.id()
	c.lit(`,"body":`)
	body := c.body()
	if !c.ok || string(body) == "null" || !utf8.Valid(body) {
		return false
	}
	*f = Frame{Type: TypeSend, ID: id, To: to, Body: body}
	return true
}

// decodeServerFast decodes a sent or a msg frame (1:1, or a group's chat
// message) in its encoder's form; nil for anything else.
func decodeServerFast(data []byte) *Frame {
	c := cursor{b: data, ok: true}
	switch {
	case bytes.HasPrefix(data, []byte(`{"type":"sent","id":"`)):
		c.lit(`{"type":"sent","id":"`)
		f := Frame{Type: TypeSent, ID: c.id()}
		c.lit(`,"seq":`)
		f.Seq = c.uint()
		c.lit(`,"ts":`)
		f.TS = c.int()
		if c.ok && string(c.b) == `,"dup":true}` {
			f.Dup = true
			c.b = c.b[len(c.b)-1:]
		}
		c.lit(`}`)
		if !c.ok || len(c.b) != 0 {
			return nil
		}
		return &f
	case bytes.HasPrefix(data, []byte(`{"type":"msg","id":"`)):
		c.lit(`{"type":"msg","id":"`)
		f := Frame{Type: TypeMsg, ID: c.id()}
		c.lit(`,"from":"`)
		f.From = c.id()
		c.lit(`,"device":"`)
		f.Device = c.id()
		if c.ok && bytes.HasPrefix(c.b, []byte(`,"group":"`)) {
			c.lit(`,"group":"`)
			f.Group = c.id()
		}
		if f.Group != "" && c.ok && bytes.HasPrefix(c.b, []byte(`,"gseq":`)) {
			c.lit(`,"gseq":`)
			f.GSeq = c.uint()
		} else {
			c.lit(`,"seq":`)
			f.Seq = c.uint()
		}
		c.lit(`,"ts":`)
		f.TS = c.int()
		c.lit(`,"body":`)
		f.Body = c.body()
		if !c.ok {
			return nil
		}
		return &f
	}
	return nil
}
