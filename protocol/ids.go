package protocol

import "errors"

// MaxIDLen is the longest user, device or client message id accepted.
const MaxIDLen = 64

// ErrInvalidID is returned for an id that is empty, too long or contains a
// character outside [A-Za-z0-9_-].
var ErrInvalidID = errors.New("protocol: id must be 1-64 characters of A-Z a-z 0-9 _ -")

// ValidID reports whether s is a safe id. User and device ids become NATS
// subject tokens and consumer names, so dots, wildcards, whitespace and
// anything else outside the alphabet are refused rather than escaped.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckID returns ErrInvalidID when s is not a safe id.
func CheckID(s string) error {
	if !ValidID(s) {
		return ErrInvalidID
	}
	return nil
}
