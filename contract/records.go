package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Records kept in KV that more than one component reads. Only the gateway
// writes them.

// Cursor is a device's position in INBOX (KV CURSORS, key CursorKey):
// everything at or below Floor is settled for the device (acked and, for
// chat messages, their senders' delivered ticks stored). Stream is when the INBOX it
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

// GroupCursors is a device's places in the groups it reads from their
// logs (docs/GROUP-LOG.md), in CURSORS under GroupCursorKey, as JSON, by
// group id. Only the device's sessions write it.
type GroupCursors map[string]GroupCursor

// GroupCursor is a device's place in one group's log.
type GroupCursor struct {
	// At is the GROUPS sequence up to which everything of the group is
	// settled for the device.
	At uint64 `json:"at"`
	// Out, when not 0, is the change that took the user out of the
	// group, handed to the device and settled: nothing after it is the
	// device's until a change in the log adds the user back.
	Out uint64 `json:"out,omitempty"`
}

// ParseGroupCursors reads a device's GroupCursors; a malformed value is
// an error.
func ParseGroupCursors(v []byte) (GroupCursors, error) {
	var g GroupCursors
	if err := json.Unmarshal(v, &g); err != nil {
		return nil, fmt.Errorf("contract: group cursors: %w", err)
	}
	return g, nil
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

// DevicePosition is the highest INBOX sequence a device has settled: its
// cursor, or where it joined before its first cursor save. created is when
// the INBOX it counts in was created; positions from another are void.
func DevicePosition(ctx context.Context, devices, cursors jetstream.KeyValue, created time.Time, user, device string) (uint64, error) {
	e, err := cursors.Get(ctx, CursorKey(user, device))
	switch {
	case err == nil:
		if c, ok := ParseCursor(e.Value()); ok && c.Stream == created.UnixNano() {
			return c.Floor, nil
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, fmt.Errorf("contract: cursor of %s/%s: %w", user, device, err)
	}
	rec, err := devices.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("contract: devices of %s: %w", user, err)
	}
	var ds Devices
	if json.Unmarshal(rec.Value(), &ds) == nil {
		if d := ds.Devices[device]; d != nil && d.Start > 0 && d.Stream.Equal(created) {
			return d.Start - 1, nil
		}
	}
	return 0, nil
}

// WaitingTimeout bounds one Waiting.
const WaitingTimeout = 5 * time.Second

// Waiting asks INBOX what is stored for user past sequence after: how many
// messages and receipts, and when the first of them was stored. One direct
// get answers it: Nats-Num-Pending comes from the per-subject index, so
// counting costs no scan. It waits WaitingTimeout at most, whatever ctx
// allows: a direct get a server never answers must not hold its caller.
func Waiting(ctx context.Context, nc *nats.Conn, user string, after uint64) (n uint64, first time.Time, err error) {
	n, first, err = WaitingOn(ctx, nc, Inbox, InboxSubject(user), after)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("contract: inbox of %s: %w", user, err)
	}
	return n, first, nil
}

// WaitingOn is Waiting for any subject of any stream (one with direct
// gets allowed): what it holds past sequence after.
func WaitingOn(ctx context.Context, nc *nats.Conn, stream, subject string, after uint64) (n uint64, first time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, WaitingTimeout)
	defer cancel()
	req, _ := json.Marshal(map[string]any{"seq": after + 1, "next_by_subj": subject, "batch": 1})
	m, err := nc.RequestWithContext(ctx, DirectGetSubject(stream), req)
	if err != nil {
		return 0, time.Time{}, err
	}
	switch m.Header.Get("Status") {
	case "":
	case "404":
		return 0, time.Time{}, nil
	default:
		return 0, time.Time{}, fmt.Errorf("%s %s", m.Header.Get("Status"), m.Header.Get("Description"))
	}
	more, _ := strconv.ParseUint(m.Header.Get(HdrNumPend), 10, 64)
	first, _ = time.Parse(time.RFC3339Nano, m.Header.Get(HdrStamp))
	return 1 + more, first, nil
}
