package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// Who may see a user's online state and last seen.
const (
	VisibleEveryone = "everyone"
	VisibleContacts = "contacts"
	VisibleNobody   = "nobody"
)

// MaxContacts bounds a contact list, so one record stays a small KV value.
const MaxContacts = 2000

// Settings are one user's privacy choices, stored in SETTINGS under the
// user id. The user sets them with the settings frame; the receipts and
// presence functions read them on every event they apply them to, so a
// change holds from the next event on.
type Settings struct {
	// ReadReceipts false means nobody gets read receipts for this user's
	// reads (delivered receipts still go).
	ReadReceipts bool `json:"read_receipts"`
	// LastSeen is who sees the user online and their last seen: everyone,
	// contacts (the users in Contacts) or nobody.
	LastSeen string `json:"last_seen_privacy"`
	// Contacts is the user's own list, replaced as a whole when set. It
	// means nothing else: a user being in your contacts gives you no rights
	// over theirs.
	Contacts []string `json:"contacts,omitempty"`
	// Applied is, per device, the request id of the last change the
	// device asked that was applied: the same change asked again (its
	// answer lost) is answered, not applied again over a change made
	// since.
	Applied map[string]string `json:"applied,omitempty"`
}

// DefaultSettings are those of a user who never set any.
func DefaultSettings() Settings {
	return Settings{ReadReceipts: true, LastSeen: VisibleEveryone}
}

// Shows reports whether viewer may see the owner's presence. A user always
// sees their own.
func (s *Settings) Shows(owner, viewer string) bool {
	switch {
	case owner == viewer:
		return true
	case s.LastSeen == VisibleEveryone:
		return true
	case s.LastSeen == VisibleContacts:
		return slices.Contains(s.Contacts, viewer)
	}
	return false
}

// Validate checks a settings record; valid reports whether a string is a
// safe id (the protocol's rule, passed in to keep this package apart from
// the wire format).
func (s *Settings) Validate(valid func(string) bool) error {
	switch s.LastSeen {
	case VisibleEveryone, VisibleContacts, VisibleNobody:
	default:
		return fmt.Errorf("last_seen must be everyone, contacts or nobody, not %q", s.LastSeen)
	}
	if len(s.Contacts) > MaxContacts {
		return fmt.Errorf("at most %d contacts", MaxContacts)
	}
	for _, c := range s.Contacts {
		if !valid(c) {
			return fmt.Errorf("contact %q is not a valid user id", c)
		}
	}
	return nil
}

// ErrBadRecord wraps a KV record that does not decode. Readers treat it as
// the record's defaults (the safe side) rather than fail on it forever.
var ErrBadRecord = errors.New("contract: unreadable record")

// LoadSettings returns a user's settings and their KV revision (0 and the
// defaults when the user never set any).
func LoadSettings(ctx context.Context, kv jetstream.KeyValue, user string) (Settings, uint64, error) {
	s := DefaultSettings()
	e, err := kv.Get(ctx, user)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return s, 0, nil
	case err != nil:
		return s, 0, err
	}
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return DefaultSettings(), e.Revision(), fmt.Errorf("%w: settings of %s: %w", ErrBadRecord, user, err)
	}
	return s, e.Revision(), nil
}

// UpdateSettings applies change to a user's settings and stores them,
// retrying when another writer got there first, and returns what was
// stored. change may refuse by returning an error. An unreadable record is
// replaced: change starts from the defaults.
func UpdateSettings(ctx context.Context, kv jetstream.KeyValue, user string, change func(*Settings) error) (Settings, error) {
	var s Settings
	_, err := Swap(ctx, kv, user, func(cur []byte, _ uint64) ([]byte, error) {
		s = DefaultSettings()
		if cur != nil && json.Unmarshal(cur, &s) != nil {
			s = DefaultSettings()
		}
		if err := change(&s); err != nil {
			return nil, err
		}
		return json.Marshal(&s)
	})
	return s, err
}
