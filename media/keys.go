package media

import (
	"crypto/rand"
	"encoding/hex"
	"strings"

	"github.com/switchboard-im/switchboard/protocol"
)

// keyPrefix starts every object key. The owner's id follows, so who
// uploaded an object is read from its key alone (no lookup to authorise a
// grant), and a store's per-user usage is a prefix listing.
const keyPrefix = "u/"

// keyIDLen is the length of the random part: 128 bits in lower-case hex,
// so keys cannot be guessed even by someone who sees many of them.
const keyIDLen = 32

// NewKey returns a fresh object key u/<user>/<32 hex chars>.
func NewKey(user string) (string, error) {
	if !protocol.ValidID(user) {
		return "", errorf(ErrBadRequest, "user id must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	var b [keyIDLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return keyPrefix + user + "/" + hex.EncodeToString(b[:]), nil
}

// ParseKey checks that key has the shape NewKey makes and returns its
// owner. Anything else is refused before it reaches a store, a KV key or a
// URL path.
func ParseKey(key string) (owner string, err error) {
	rest, ok := strings.CutPrefix(key, keyPrefix)
	if !ok {
		return "", errorf(ErrBadRequest, "key must look like u/<user>/<32 hex chars>")
	}
	owner, id, ok := strings.Cut(rest, "/")
	if !ok || !protocol.ValidID(owner) || len(id) != keyIDLen {
		return "", errorf(ErrBadRequest, "key must look like u/<user>/<32 hex chars>")
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", errorf(ErrBadRequest, "key must look like u/<user>/<32 hex chars>")
		}
	}
	return owner, nil
}
