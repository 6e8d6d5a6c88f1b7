package contract

import (
	"strconv"
	"strings"
	"time"
)

// Records kept in KV that more than one component reads. Only the gateway
// writes them.

// Cursor is a device's position in INBOX (KV CURSORS, key CursorKey):
// everything at or below Floor is settled for the device (acked and, for a
// chat message, its delivered event stored). Stream is when the INBOX it
// counts in was created (unix ns): sequences restart when INBOX is
// recreated, so a cursor from another INBOX is void.
type Cursor struct {
	Floor  uint64
	Stream int64
}

// Encode is the cursor's KV value: "<floor> <stream>".
func (c Cursor) Encode() []byte {
	b := strconv.AppendUint(nil, c.Floor, 10)
	b = append(b, ' ')
	return strconv.AppendInt(b, c.Stream, 10)
}

// ParseCursor reads a cursor's KV value; ok is false for a malformed one.
func ParseCursor(v []byte) (c Cursor, ok bool) {
	f, stream, found := strings.Cut(string(v), " ")
	if !found {
		return c, false
	}
	floor, err1 := strconv.ParseUint(f, 10, 64)
	created, err2 := strconv.ParseInt(stream, 10, 64)
	return Cursor{Floor: floor, Stream: created}, err1 == nil && err2 == nil
}

// Device is one device in a user's DEVICES record.
type Device struct {
	Joined time.Time `json:"joined"`
	// Start is the first INBOX sequence this device is to receive (0:
	// everything the stream holds).
	Start uint64 `json:"start"`
	// Stream is when the INBOX that Start counts in was created.
	Stream time.Time `json:"stream"`
}

// Devices is the value of a DEVICES key: a user's devices by name.
type Devices struct {
	Devices map[string]*Device `json:"devices"`
}
