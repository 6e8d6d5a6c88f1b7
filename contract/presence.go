package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// PresenceUserKey is the PRESENCE key of a user's record, written only by
// the presence function from its devices' leases (LeaseKey), which the
// gateways holding their sessions write.
func PresenceUserKey(user string) string { return "user." + user }

// PresenceRecord is a user's presence: the devices online now (device → ms since
// epoch when it came online) and when the user was last online. LastSeen
// is 0 for a user never seen.
//
// Applied holds, per device, the stream sequence of the latest lease
// change applied, online or offline. A change older than that is stale
// and ignored, so changes applied in any order, or twice, leave the record
// as the latest one says.
type PresenceRecord struct {
	Devices  map[string]int64  `json:"devices,omitempty"`
	LastSeen int64             `json:"last_seen,omitempty"`
	Applied  map[string]uint64 `json:"applied,omitempty"`
}

// Online reports whether any device of the user is online.
func (r *PresenceRecord) Online() bool { return len(r.Devices) > 0 }

// LoadPresence returns a user's presence record and its revision (a zero record and
// revision 0 for a user never seen).
func LoadPresence(ctx context.Context, kv jetstream.KeyValue, user string) (PresenceRecord, uint64, error) {
	var r PresenceRecord
	e, err := kv.Get(ctx, PresenceUserKey(user))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return r, 0, nil
	case err != nil:
		return r, 0, err
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return PresenceRecord{}, e.Revision(), fmt.Errorf("%w: presence of %s: %w", ErrBadRecord, user, err)
	}
	return r, e.Revision(), nil
}

// LoadLivePresence is LoadPresence with every device checked against its lease: a device
// whose lease is gone is not counted online even if the record says so.
// The record can lag when the function missed a lease's expiry (it was
// down longer than the bucket keeps expiry markers), and an answer must
// not show a user online forever.
func LoadLivePresence(ctx context.Context, kv jetstream.KeyValue, user string) (PresenceRecord, error) {
	rec, _, err := LoadPresence(ctx, kv, user)
	if err != nil {
		return rec, err
	}
	for d := range rec.Devices {
		_, err := kv.Get(ctx, LeaseKey(user, d))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
			delete(rec.Devices, d)
		case err != nil:
			return rec, err
		}
	}
	return rec, nil
}
