package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/streams"
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
//     which it has settled everything (acked, and for a chat message its
//     delivered event stored).
//
// A device's position is a record in the CURSORS bucket (key
// <user>.<device>), not a durable consumer: an offline device costs disk,
// and a connecting one costs a read of that record, not a consumer
// creation (about 600 a second on one server).
type devices struct {
	js      jetstream.JetStream
	inbox   jetstream.Stream
	kv      jetstream.KeyValue // DEVICES
	cursors jetstream.KeyValue // CURSORS
	// created is when the INBOX stream this gateway started with was
	// created: the stream identity kept with saved positions.
	created time.Time
}

// position returns the sequence after which the device's delivery starts:
// its cursor, or for a device without one, where it joined.
func (d *devices) position(ctx context.Context, user, device string) (uint64, error) {
	key := streams.CursorKey(user, device)
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
	return streams.Cursor{Floor: floor, Stream: d.created.UnixNano()}.Encode()
}

// parseCursor reads a cursor record; ok is false for a malformed one or
// one saved in another INBOX.
func (d *devices) parseCursor(v []byte) (floor uint64, ok bool) {
	c, ok := streams.ParseCursor(v)
	return c.Floor, ok && c.Stream == d.created.UnixNano()
}

// cursorMsg is the publish that saves a device's cursor, for PublishAsync.
func (d *devices) cursorMsg(user, device string, floor uint64) *nats.Msg {
	return &nats.Msg{Subject: "$KV." + streams.CursorsKV + "." + streams.CursorKey(user, device), Data: d.cursorValue(floor)}
}

// register records the device if it is new and returns the first sequence
// it is to receive (0: everything retained).
func (d *devices) register(ctx context.Context, user, device string) (start uint64, err error) {
	for attempt := 0; attempt < 10; attempt++ {
		rec, rev, err := d.load(ctx, user)
		if err != nil {
			return 0, err
		}
		if dr := rec.Devices[device]; dr != nil {
			if !dr.Stream.Equal(d.created) {
				// Saved in an INBOX since deleted and recreated: every
				// message in this one is new to the device.
				return 0, nil
			}
			return dr.Start, nil
		}
		var start uint64
		if len(rec.Devices) > 0 {
			info, err := d.inbox.Info(ctx)
			if err != nil {
				return 0, fmt.Errorf("gateway: stream info: %w", err)
			}
			start = info.State.LastSeq + 1
		}
		rec.Devices[device] = &streams.Device{Joined: time.Now().UTC(), Start: start, Stream: d.created}
		if err := d.store(ctx, user, rec, rev); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // lost a race with another device; read again
			}
			return 0, err
		}
		return start, nil
	}
	return 0, errors.New("gateway: device registry too contended")
}

func (d *devices) load(ctx context.Context, user string) (*streams.Devices, uint64, error) {
	rec := &streams.Devices{Devices: map[string]*streams.Device{}}
	e, err := d.kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("gateway: device registry: %w", err)
	}
	if err := json.Unmarshal(e.Value(), rec); err != nil {
		return nil, 0, fmt.Errorf("gateway: device registry record %q: %w", user, err)
	}
	if rec.Devices == nil {
		rec.Devices = map[string]*streams.Device{}
	}
	return rec, e.Revision(), nil
}

// store writes rec if the key is still at rev (0: must not exist yet). A
// conflict is reported as jetstream.ErrKeyExists.
func (d *devices) store(ctx context.Context, user string, rec *streams.Devices, rev uint64) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = d.kv.Create(ctx, user, b)
	} else {
		_, err = d.kv.Update(ctx, user, b, rev)
	}
	if isConflict(err) {
		return jetstream.ErrKeyExists
	}
	return err
}

// isConflict reports a compare-and-set write that lost.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}
