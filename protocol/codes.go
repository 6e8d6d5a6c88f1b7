package protocol

// ErrorCode is the code carried by an error frame. Error frames answer one
// frame; the connection stays open. Codes are stable snake_case words so a
// client can switch on them and a human can read them in a log.
type ErrorCode string

// The error codes. Every one is listed in Errors and documented in
// PROTOCOL.md (a test keeps the two in step).
const (
	ErrBadJSON      ErrorCode = "bad_json"
	ErrUnknownType  ErrorCode = "unknown_type"
	ErrBadField     ErrorCode = "bad_field"
	ErrBadID        ErrorCode = "bad_id"
	ErrRateLimited  ErrorCode = "rate_limited"
	ErrStoreFailed  ErrorCode = "store_failed"
	ErrUnknownSeq   ErrorCode = "unknown_seq"
	ErrShuttingDown ErrorCode = "shutting_down"
	ErrInternal     ErrorCode = "internal"
	ErrTooMany      ErrorCode = "too_many"
	ErrUnavailable  ErrorCode = "unavailable"
	ErrBadMedia     ErrorCode = "bad_media"

	// Groups.
	ErrUnknownGroup  ErrorCode = "unknown_group"
	ErrGroupExists   ErrorCode = "group_exists"
	ErrNotMember     ErrorCode = "not_member"
	ErrNotAdmin      ErrorCode = "not_admin"
	ErrGroupFull     ErrorCode = "group_full"
	ErrAlreadyMember ErrorCode = "already_member"
	ErrUnknownMember ErrorCode = "unknown_member"
)

// ErrorInfo documents one error code.
type ErrorInfo struct {
	Code ErrorCode
	// Retry says whether resending the same frame unchanged can succeed.
	Retry       bool
	Description string
}

// Errors is the registry of error codes, in documentation order.
var Errors = []ErrorInfo{
	{ErrBadJSON, false, "The frame is not a JSON object."},
	{ErrUnknownType, false, "The frame's `type` is not one this protocol version knows."},
	{ErrBadField, false, "A field is missing, has the wrong JSON type or is out of range; `message` names it."},
	{ErrBadID, false, "An id (`to`, `id`) is not 1-64 characters of `A-Z a-z 0-9 _ -`."},
	{ErrRateLimited, true, "Too many frames; wait and resend the same frame. Persisting closes the connection with 1008."},
	{ErrStoreFailed, true, "JetStream did not confirm the write. Nothing is lost by resending with the same `id`: the store keeps one copy."},
	{ErrUnknownSeq, false, "`ack` or `read` names a sequence that was not delivered to this device or is not a message to this user."},
	{ErrShuttingDown, true, "The gateway is shutting down and took no action; resend after reconnecting."},
	{ErrInternal, true, "An unexpected server error; resend after a pause."},
	{ErrTooMany, false, "The frame would pass a per-connection limit (presence subscriptions); `message` says which."},
	{ErrUnavailable, true, "A worker function (receipts, presence, media) did not answer in time; resend after a pause."},
	{ErrBadMedia, false, "`media` names an object that is not this user's upload or was not uploaded (yet), or gives a `size` or `sha256` other than the upload's; `message` says which."},
	{ErrUnknownGroup, false, "The group does not exist."},
	{ErrGroupExists, false, "`create` names a group id that is taken."},
	{ErrNotMember, false, "This user is not a member of the group: it may not send to it, read it or change it."},
	{ErrNotAdmin, false, "The operation is for the group's admins."},
	{ErrGroupFull, false, "Adding the users would pass the group's size limit."},
	{ErrAlreadyMember, false, "`add` names a user who is a member already."},
	{ErrUnknownMember, false, "`remove`, `promote` or `demote` names a user who is not a member."},
}

// Retryable reports whether a frame answered with code may be resent
// unchanged: the registry's Retry. A code it does not hold (one newer
// than this build) is taken as internal, which is resent (PROTOCOL.md,
// Versioning).
func Retryable(code ErrorCode) bool {
	for _, e := range Errors {
		if e.Code == code {
			return e.Retry
		}
	}
	return code != ErrInternal && Retryable(ErrInternal)
}

// Close codes sent in the WebSocket close frame. 1000-1015 are RFC 6455's;
// 4000-4999 are the range RFC 6455 leaves to applications.
const (
	CloseNormal         = 1000
	CloseGoingAway      = 1001
	CloseUnsupported    = 1003
	CloseNoStatus       = 1005
	CloseAbnormal       = 1006
	CloseInvalidData    = 1007
	ClosePolicy         = 1008
	CloseTooBig         = 1009
	CloseInternal       = 1011
	CloseServiceRestart = 1012
	CloseSlow           = 4001
	CloseReplaced       = 4002
)

// CloseInfo documents one close code.
type CloseInfo struct {
	Code int
	Name string
	// Reconnect says whether a client should reconnect after this close.
	Reconnect   bool
	Description string
}

// Closes is the registry of close codes, in documentation order.
var Closes = []CloseInfo{
	{CloseNormal, "normal", false, "The client or server ended the session on purpose."},
	{CloseGoingAway, "going_away", true, "The peer went away (for example a browser tab closed)."},
	{CloseUnsupported, "unsupported_data", false, "A binary frame was sent on the JSON subprotocol."},
	{CloseNoStatus, "no_status", true, "Never sent: a peer closed without a code (counted so in the gateway's metrics)."},
	{CloseAbnormal, "abnormal", true, "Never sent: the connection was lost without a close frame (counted so in the gateway's metrics)."},
	{CloseInvalidData, "invalid_data", false, "A text frame was not valid UTF-8 (RFC 6455 §8.1); nothing in it was acted on."},
	{ClosePolicy, "policy", true, "Reason `token_expired`: the token's expiry passed; reconnect with a fresh token. Reason `flood`: rate limit exceeded repeatedly; reconnect after backoff."},
	{CloseTooBig, "too_big", true, "A frame exceeded the size limit (default 64 KiB); it was not processed."},
	{CloseInternal, "internal", true, "The gateway hit an error it cannot recover from for this session."},
	{CloseServiceRestart, "service_restart", true, "The gateway is shutting down, or cannot store a delivered receipt or read the device's messages; reconnect (to another gateway) at once, with jitter."},
	{CloseSlow, "slow", true, "The client did not read fast enough or stopped answering pings; undelivered messages stay queued in JetStream."},
	{CloseReplaced, "replaced", false, "The same user and device connected again elsewhere; this older session ends."},
}

// Close reasons carried with ClosePolicy.
const (
	ReasonTokenExpired = "token_expired"
	ReasonFlood        = "flood"
)
