package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// grantRecord is the MEDIA_ACL value for one object key. Its existence is
// also what marks the object as referenced by a message: the orphan sweep
// removes only objects without one.
type grantRecord struct {
	Owner string `json:"owner"`
	// Users are the ids granted a download besides the owner, sorted and
	// unique, so membership is a binary search and merges are stable.
	Users     []string `json:"users"`
	UpdatedMS int64    `json:"updated_ms"`
}

// acl keeps grant records in a KV bucket keyed by object key (KV keys may
// contain "/", so the object key is used as is).
type acl struct {
	kv          jetstream.KeyValue
	maxGrantees int
}

// grant merges users into key's record. Concurrent grants to one key (a
// message to a group fanned out by several workers) are merged with
// compare-and-set on the KV revision, so none is lost. The record is
// written even when it names no one new: each message that references
// the object starts its ReferenceAge again.
func (a *acl) grant(ctx context.Context, key, owner string, users []string) (grantRecord, error) {
	add := make([]string, 0, len(users))
	for _, u := range users {
		if !protocol.ValidID(u) {
			return grantRecord{}, errorf(ErrBadRequest, "user id %q must be 1-64 characters of A-Z a-z 0-9 _ -", u)
		}
		if u != owner {
			add = append(add, u)
		}
	}
	slices.Sort(add)
	add = slices.Compact(add)

	var rec grantRecord
	_, err := contract.Swap(ctx, a.kv, key, func(cur []byte, _ uint64) ([]byte, error) {
		rec = grantRecord{Owner: owner}
		if cur != nil {
			if err := json.Unmarshal(cur, &rec); err != nil {
				return nil, fmt.Errorf("media: grant record %s: %w", key, err)
			}
		}
		merged := mergeSorted(rec.Users, add)
		if len(merged) > a.maxGrantees {
			return nil, errorf(ErrTooLarge, "an object can be granted to at most %d users", a.maxGrantees)
		}
		rec.Users, rec.UpdatedMS = merged, time.Now().UnixMilli()
		return json.Marshal(rec)
	})
	if err != nil {
		return grantRecord{}, err
	}
	return rec, nil
}

// allowed reports whether user was granted key. The owner is answered by
// the caller from the key itself.
func (a *acl) allowed(ctx context.Context, key, user string) (bool, error) {
	rec, ok, err := a.get(ctx, key)
	if err != nil || !ok {
		return false, err
	}
	_, found := slices.BinarySearch(rec.Users, user)
	return found, nil
}

// referenced reports whether key has a grant record at all.
func (a *acl) referenced(ctx context.Context, key string) (bool, error) {
	_, ok, err := a.get(ctx, key)
	return ok, err
}

func (a *acl) get(ctx context.Context, key string) (grantRecord, bool, error) {
	e, err := a.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return grantRecord{}, false, nil
	}
	if err != nil {
		return grantRecord{}, false, fmt.Errorf("media: read grant: %w", err)
	}
	var rec grantRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return grantRecord{}, false, fmt.Errorf("media: grant record %s: %w", key, err)
	}
	return rec, true, nil
}

// mergeSorted returns the sorted union of two sorted, unique slices.
func mergeSorted(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}
