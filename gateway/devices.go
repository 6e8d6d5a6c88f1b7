package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// devices knows where each device is in its user's inbox.
//
// Which messages a device gets:
//   - A user's first device gets everything INBOX still holds for the user
//     (up to the stream's max age), including messages sent before the user
//     ever connected.
//   - A device added later gets the messages stored from the moment it
//     first connected. History from before is for the user's other devices
//     to hand over, end to end encrypted, as WhatsApp does; the server
//     never re-sends it.
//   - A known device resumes after its cursor: the highest sequence below
//     which it has settled everything (acked, and for chat messages their
//     senders' delivered ticks stored).
//
// A device's position is a record in the CURSORS bucket (key
// <user>.<device>), not a durable consumer: an offline device costs disk,
// and a connecting one costs a read of that record, not a consumer
// creation (about 600 a second on one server).
type devices struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	inbox   jetstream.Stream
	kv      jetstream.KeyValue // DEVICES
	cursors jetstream.KeyValue // CURSORS
	// created is when the INBOX stream this gateway started with was
	// created: the stream identity kept with saved positions.
	created time.Time
}

// position returns the sequence after which the device's delivery starts:
// its cursor, or for a device without one, where it joined. joining runs
// for a device without one, before it is registered.
func (d *devices) position(ctx context.Context, user, device string, joining func(context.Context) error) (uint64, error) {
	key := contract.CursorKey(user, device)
	e, err := d.cursors.Get(ctx, key)
	missing := errors.Is(err, jetstream.ErrKeyNotFound)
	switch {
	case err == nil:
		if floor, ok := d.parseCursor(e.Value()); ok {
			return floor, nil
		}
		// From an INBOX since deleted and recreated: the registry knows
		// that too.
	case !missing:
		return 0, fmt.Errorf("gateway: cursor: %w", err)
	}
	if missing && joining != nil {
		if err := joining(ctx); err != nil {
			return 0, err
		}
	}
	start, err := d.register(ctx, user, device)
	if err != nil {
		return 0, err
	}
	var floor uint64
	if start > 0 {
		floor = start - 1
	}
	// Saved now, so the device's next connect reads one record and no
	// registry.
	if missing {
		_, err = d.cursors.Create(ctx, key, d.cursorValue(floor))
	} else {
		_, err = d.cursors.Put(ctx, key, d.cursorValue(floor))
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("gateway: cursor: %w", err)
	}
	return floor, nil
}

// cursorValue is a cursor record: the floor and the INBOX it counts in.
func (d *devices) cursorValue(floor uint64) []byte {
	return contract.Cursor{Floor: floor, Stream: d.created.UnixNano()}.Encode()
}

// parseCursor reads a cursor record; ok is false for a malformed one or
// one saved in another INBOX.
func (d *devices) parseCursor(v []byte) (floor uint64, ok bool) {
	c, ok := contract.ParseCursor(v)
	return c.Floor, ok && c.Stream == d.created.UnixNano()
}

// cursorMsg is the publish that saves a device's cursor.
func (d *devices) cursorMsg(user, device string, floor uint64) *nats.Msg {
	return &nats.Msg{Subject: contract.KVSubject(contract.CursorsKV, contract.CursorKey(user, device)), Data: d.cursorValue(floor)}
}

// saveCursor publishes a cursor with no reply: JetStream stores it and
// nobody waits for the PubAck.
func (d *devices) saveCursor(user, device string, floor uint64) error {
	return d.nc.PublishMsg(d.cursorMsg(user, device, floor))
}

// storeCursor publishes a cursor and waits until it is stored.
func (d *devices) storeCursor(ctx context.Context, user, device string, floor uint64) error {
	_, err := d.js.PublishMsg(ctx, d.cursorMsg(user, device, floor))
	return err
}

// loadGroupCursors reads the device's record of its places in the
// groups it reads from their logs, and its revision: nil and 0 when it
// has none.
func (d *devices) loadGroupCursors(ctx context.Context, user, device string) ([]byte, uint64, error) {
	e, err := d.cursors.Get(ctx, contract.GroupCursorKey(user, device))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// others reports whether user has a device registered besides device.
func (d *devices) others(ctx context.Context, user, device string) (bool, error) {
	e, err := d.kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var rec contract.Devices
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return false, fmt.Errorf("gateway: device registry record %q: %w", user, err)
	}
	for name := range rec.Devices {
		if name != device {
			return true, nil
		}
	}
	return false, nil
}

// storeGroupCursors stores the device's places in group logs if their
// record is still at revision rev (0: none, or deleted), and returns the
// new revision; another writer since is a conflict (contract.IsConflict).
func (d *devices) storeGroupCursors(ctx context.Context, user, device string, rec contract.GroupCursors, rev uint64) (uint64, error) {
	b, _ := json.Marshal(rec)
	if rev == 0 {
		return d.cursors.Create(ctx, contract.GroupCursorKey(user, device), b)
	}
	return d.cursors.Update(ctx, contract.GroupCursorKey(user, device), b, rev)
}

// register records the device if it is new and returns the first sequence
// it is to receive (0: everything retained).
//
// A device added to a user with others starts past what INBOX held when
// its record was written, read after the write: a message the user sends
// from another device and stored from there on finds the record when the
// sending gateway checks for other devices (owncheck.go), so the device
// gets its copy. Its start is first set from a read before the write and
// moved past whatever was stored in between.
func (d *devices) register(ctx context.Context, user, device string) (start uint64, err error) {
	var added bool
	_, err = contract.Swap(ctx, d.kv, user, func(cur []byte, _ uint64) ([]byte, error) {
		added = false
		rec := contract.Devices{Devices: map[string]*contract.Device{}}
		if cur != nil {
			if err := json.Unmarshal(cur, &rec); err != nil {
				return nil, fmt.Errorf("gateway: device registry record %q: %w", user, err)
			}
			if rec.Devices == nil {
				rec.Devices = map[string]*contract.Device{}
			}
		}
		if dr := rec.Devices[device]; dr != nil {
			start = dr.Start
			if !dr.Stream.Equal(d.created) {
				// Saved in an INBOX since deleted and recreated: every
				// message in this one is new to the device.
				start = 0
			}
			return nil, nil
		}
		start = 0
		if len(rec.Devices) > 0 {
			next, err := d.nextSeq(ctx)
			if err != nil {
				return nil, err
			}
			start, added = next, true
		}
		rec.Devices[device] = &contract.Device{Joined: time.Now().UTC(), Start: start, Stream: d.created}
		return json.Marshal(&rec)
	})
	if err != nil || !added {
		return start, err
	}
	next, err := d.nextSeq(ctx)
	if err != nil || next == start {
		return start, err
	}
	first := start
	_, err = contract.Swap(ctx, d.kv, user, func(cur []byte, _ uint64) ([]byte, error) {
		var rec contract.Devices
		if err := json.Unmarshal(cur, &rec); err != nil {
			return nil, fmt.Errorf("gateway: device registry record %q: %w", user, err)
		}
		dr := rec.Devices[device]
		if dr == nil || dr.Start != first || !dr.Stream.Equal(d.created) {
			start = first // changed meanwhile (another session of it, told apart by the kick): leave it
			if dr != nil {
				start = dr.Start
			}
			return nil, nil
		}
		dr.Start, start = next, next
		return json.Marshal(&rec)
	})
	return start, err
}

// nextSeq is the sequence INBOX gives the next message it stores.
func (d *devices) nextSeq(ctx context.Context) (uint64, error) {
	info, err := d.inbox.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("gateway: stream info: %w", err)
	}
	return info.State.LastSeq + 1, nil
}
