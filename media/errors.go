package media

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a refusal a client can act on. The same value travels three
// ways: as a Go error (match it with errors.Is against the sentinels
// below), as a micro error (Status is the micro error code, the JSON of the
// Error its data) and as an HTTP answer (Status is the status, the body is
// the JSON). Keeping one type means a code is never retyped between the
// function and the HTTP API.
//
// The codes, their HTTP status and when they are used:
//
//	code                status  when
//	bad_request         400     malformed JSON, key or user id; size below 1 byte; body shorter than its Content-Length
//	unauthorized        401     no or bad token on an authenticated route (answered by the gateway, never by this package)
//	forbidden           403     download by someone the object was not granted to; grant of a key outside u/<caller>/
//	url_expired         403     a signed URL used after its expiry
//	bad_signature       403     a signed URL that is not exactly as issued: a parameter missing, malformed, respelled or altered, or signed with another key
//	not_found           404     no such object, route or embedded store
//	method_not_allowed  405     a route called with the wrong method
//	exists              409     a second upload to a key that already holds (or is receiving) an object
//	length_required     411     an upload without a Content-Length
//	too_large           413     a declared or sent size above the limit
//	bad_type            415     a media type the config does not allow, or a Content-Type other than the signed one
//	too_many            429     an upload (embedded store) while 8 of the uploader's, or 512 in all, are in progress on the instance; Retry-After: 1
//	quota_exceeded      429     an upload ticket past the uploader's daily quota of bytes (the message says when it renews)
//	internal            500     anything else; the detail goes to the server log only
//	unavailable         503     the media function did not answer within the timeout
//
// Status codes of an S3 backend's own refusals (a POST over its
// content-length-range, an expired policy) are S3's, in S3's XML: the
// client talks to the object store directly there.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return "media: " + e.Code + ": " + e.Message }

// Is matches errors by code, so errors.Is(err, ErrForbidden) holds for
// every forbidden error whatever its message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The sentinels, one per code. Compare with errors.Is; never change their
// fields.
var (
	ErrBadRequest       = &Error{Status: http.StatusBadRequest, Code: "bad_request", Message: "bad request"}
	ErrUnauthorized     = &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing, invalid or expired token"}
	ErrForbidden        = &Error{Status: http.StatusForbidden, Code: "forbidden", Message: "not allowed"}
	ErrURLExpired       = &Error{Status: http.StatusForbidden, Code: "url_expired", Message: "the URL has expired"}
	ErrBadSignature     = &Error{Status: http.StatusForbidden, Code: "bad_signature", Message: "the URL's signature does not match"}
	ErrNotFound         = &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such object"}
	ErrMethodNotAllowed = &Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "method not allowed"}
	ErrExists           = &Error{Status: http.StatusConflict, Code: "exists", Message: "an object was already uploaded to this key"}
	ErrLengthRequired   = &Error{Status: http.StatusLengthRequired, Code: "length_required", Message: "a Content-Length is required"}
	ErrTooLarge         = &Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: "too large"}
	ErrBadType          = &Error{Status: http.StatusUnsupportedMediaType, Code: "bad_type", Message: "media type not allowed"}
	ErrTooMany          = &Error{Status: http.StatusTooManyRequests, Code: "too_many", Message: "too many uploads in progress"}
	ErrQuota            = &Error{Status: http.StatusTooManyRequests, Code: "quota_exceeded", Message: "the daily upload quota is used up"}
	ErrInternal         = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
	ErrUnavailable      = &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "the media function is unavailable"}
)

// codes lists every sentinel, so an error that arrives only as a status or
// a code (a micro error without data) maps back to its sentinel.
var codes = []*Error{
	ErrBadRequest, ErrUnauthorized, ErrForbidden, ErrURLExpired, ErrBadSignature, ErrNotFound,
	ErrMethodNotAllowed, ErrExists, ErrLengthRequired, ErrTooLarge, ErrBadType, ErrTooMany, ErrQuota, ErrInternal, ErrUnavailable,
}

// ErrConfig wraps an invalid Config; the message names the field.
var ErrConfig = errors.New("media: invalid config")

// errorf returns an error with base's code and status and its own message.
func errorf(base *Error, format string, args ...any) *Error {
	return &Error{Status: base.Status, Code: base.Code, Message: fmt.Sprintf(format, args...)}
}

// asError turns any error into the Error a client sees. Errors that are not
// an *Error become internal, with no detail: the detail may name servers or
// buckets, so it belongs in the log, not in a response.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return ErrInternal
}

// errorForCode finds the sentinel for a code, or for a status when the code
// is unknown; it is used on errors that crossed NATS.
func errorForCode(code string, status int) *Error {
	for _, e := range codes {
		if e.Code == code {
			return e
		}
	}
	for _, e := range codes {
		if e.Status == status {
			return e
		}
	}
	return ErrInternal
}
