package protocol

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Subprotocol is the WebSocket subprotocol of this version: JSON text frames.
// A later version gets a new name (switchboard.v2.json); a gateway offers
// every version it speaks and the client picks by listing its preferences.
const Subprotocol = "switchboard.v1.json"

// Version is the protocol version announced in the welcome frame.
const Version = 1

// Frame types.
const (
	// Client to server.
	TypeSend = "send"
	TypeAck  = "ack"
	TypeRead = "read"
	// TypeTyping goes both ways: a client says it is typing to `to` (or
	// in `group`); the server tells the recipients' devices who is typing.
	TypeTyping = "typing"
	// TypeSettings goes both ways: a client changes or asks for its
	// settings; the server answers with all of them.
	TypeSettings = "settings"
	// TypeStatus goes both ways: a client asks for a message's status; the
	// server answers with each recipient's ticks.
	TypeStatus        = "status"
	TypePresenceSub   = "presence_sub"
	TypePresenceUnsub = "presence_unsub"
	// TypeGroup goes both ways: a client asks for a group operation (op);
	// the server answers with the group as it then is.
	TypeGroup = "group"

	// Server to client.
	TypeWelcome  = "welcome"
	TypeSent     = "sent"
	TypeMsg      = "msg"
	TypeReceipt  = "receipt"
	TypeError    = "error"
	TypePresence = "presence"
)

// ClientTypes are the frame types a client may send; DecodeClient returns
// no other.
var ClientTypes = []string{TypeSend, TypeAck, TypeRead, TypeTyping, TypeStatus, TypeSettings, TypePresenceSub, TypePresenceUnsub, TypeGroup}

// Last-seen privacy values of the settings frame.
const (
	PrivacyEveryone = "everyone"
	PrivacyContacts = "contacts"
	PrivacyNobody   = "nobody"
)

// MaxContacts bounds the contact list of a settings frame.
const MaxContacts = 2000

// OutboxSeqFloor is where the seqs of a region's outbox start: a `sent`
// seq at or above it is a message sent to another region (a user or a
// group homed there), and a status about it names the recipient (to) or
// the group.
const OutboxSeqFloor uint64 = 1 << 52

// MaxUsersPerFrame bounds the users of one presence_sub or presence_unsub.
const MaxUsersPerFrame = 256

// Receipt statuses.
const (
	StatusDelivered = "delivered"
	StatusRead      = "read"
)

// Frame is every frame of the protocol in one struct: each type uses a subset
// of the fields (see PROTOCOL.md). Unknown fields are ignored so a
// newer peer can add fields without breaking an older one.
type Frame struct {
	Type string `json:"type"`

	// ID is the client message id: chosen by the sender, unique per sender.
	// On group frames it is the client's request id, echoed in the answer.
	ID string `json:"id,omitempty"`
	// To is the recipient user of a send.
	To string `json:"to,omitempty"`
	// Group is the group of a send, of a msg sent in a group, of a typing
	// frame in a group, and of a group frame.
	Group string `json:"group,omitempty"`
	// Body is opaque to the server: any JSON value, passed through verbatim.
	Body json.RawMessage `json:"body,omitempty"`
	// Seq is the JetStream stream sequence of a stored message.
	Seq uint64 `json:"seq,omitempty"`
	// GSeq is, instead of Seq, the place in its group's log of a message
	// of a group whose members read its log, and what an ack or read of
	// such messages names, with Group (docs/GROUP-LOG.md).
	GSeq uint64 `json:"gseq,omitempty"`
	// TS is milliseconds since the Unix epoch when the gateway accepted the
	// message (or the receipt).
	TS int64 `json:"ts,omitempty"`
	// Dup is true on a sent frame when the store already held this id.
	Dup bool `json:"dup,omitempty"`

	// From and Device name the sender of a msg.
	From   string `json:"from,omitempty"`
	Device string `json:"device,omitempty"`

	// Status, By and (with Device) name who did what in a receipt, to
	// this user's messages stored from FromSeq to ToSeq (both included;
	// no FromSeq: every one up to ToSeq).
	Status  string `json:"status,omitempty"`
	By      string `json:"by,omitempty"`
	FromSeq uint64 `json:"from_seq,omitempty"`
	ToSeq   uint64 `json:"to_seq,omitempty"`

	// On a msg this user sent from another device, To is whom it went to
	// and SentSeq where it is stored (the seq of its sent frame, which its
	// receipts name). On a read_sync frame, Peer is the user whose
	// messages this user read, up to ToSeq, on Device.
	SentSeq uint64 `json:"sent_seq,omitempty"`
	Peer    string `json:"peer,omitempty"`

	// Code and Message describe an error; RetryMS hints when to resend.
	// For names the type of the frame an error refuses when that frame
	// is named by its seq (ack, read, status), with Group for a status
	// naming a group: seqs of different streams can be equal.
	Code    ErrorCode `json:"code,omitempty"`
	Message string    `json:"message,omitempty"`
	RetryMS int64     `json:"retry_ms,omitempty"`
	For     string    `json:"for,omitempty"`

	// Users are the users of a presence_sub or presence_unsub.
	Users []string `json:"users,omitempty"`
	// Presence fields: User (below) is online, or was last seen at
	// LastSeen; Hidden means their privacy setting hides both from you.
	Online   bool  `json:"online,omitempty"`
	LastSeen int64 `json:"last_seen,omitempty"`
	Hidden   bool  `json:"hidden,omitempty"`

	// Settings fields; nil or empty leaves a setting unchanged.
	ReadReceipts    *bool     `json:"read_receipts,omitempty"`
	LastSeenPrivacy string    `json:"last_seen_privacy,omitempty"`
	Contacts        *[]string `json:"contacts,omitempty"`

	// Media references an uploaded object on a send or msg.
	Media *Media `json:"media,omitempty"`

	// Recipients is a status answer: recipient user → their ticks.
	Recipients map[string]Ticks `json:"recipients,omitempty"`
	// AllDelivered and AllRead total a group message's status answer:
	// every member but the sender has it, has read it.
	AllDelivered bool `json:"all_delivered,omitempty"`
	AllRead      bool `json:"all_read,omitempty"`

	// Group frame fields: the operation asked for (Op, Name, Users), and
	// the group in the answer (Name, CreatedBy, Created, Members).
	Op        string        `json:"op,omitempty"`
	Name      string        `json:"name,omitempty"`
	CreatedBy string        `json:"created_by,omitempty"`
	Created   int64         `json:"created,omitempty"`
	Members   []GroupMember `json:"members,omitempty"`
	// History, on a history frame, is how many of the group's latest
	// messages a member added from then on gets (0 to MaxGroupHistory:
	// 0, the default, is none, as a new device gets none); in an answer,
	// the group's setting (absent: 0).
	History *int `json:"history,omitempty"`
	// Groups answers a list: this user's groups, by id.
	Groups []GroupEntry `json:"groups,omitempty"`
	// Event is set on a msg that is a group's system message: a change of
	// its membership or name, made by From.
	Event *GroupEvent `json:"event,omitempty"`

	// Welcome fields.
	User     string `json:"user,omitempty"`
	Session  string `json:"session,omitempty"`
	Protocol int    `json:"protocol,omitempty"`
	MaxFrame int    `json:"max_frame,omitempty"`
}

// Media is a send's or msg's reference to an object uploaded through the
// media API: the bytes never travel through the WebSocket.
type Media struct {
	// Key is the object key the upload ticket named: u/<sender>/<32 hex>.
	Key  string `json:"key"`
	Mime string `json:"mime"`
	Size int64  `json:"size"`
	// SHA256 is the hex digest of the bytes, for the recipient to check
	// what it downloaded.
	SHA256 string `json:"sha256"`
	// Thumb is an optional small preview, base64 (standard alphabet).
	Thumb string `json:"thumb,omitempty"`
}

// MaxThumb bounds an inline thumbnail (base64 characters).
const MaxThumb = 16 << 10

// validate checks a media reference's form; whether the object exists and
// belongs to the sender is the media function's to say.
func (m *Media) validate() error {
	owner, rest, ok := strings.Cut(strings.TrimPrefix(m.Key, "u/"), "/")
	switch {
	case !strings.HasPrefix(m.Key, "u/") || !ok || !ValidID(owner) || len(rest) != 32 || !isLowerHex(rest):
		return errors.New("media.key must be an upload key, u/<user>/<32 hex>")
	case m.Mime == "" || len(m.Mime) > 127 || strings.ContainsFunc(m.Mime, func(r rune) bool { return r <= ' ' || r > '~' || r == '"' || r == '\\' }):
		return errors.New("media.mime must be a media type")
	case m.Size <= 0:
		return errors.New("media.size must be positive")
	case len(m.SHA256) != 64 || !isLowerHex(m.SHA256):
		return errors.New("media.sha256 must be 64 lowercase hex digits")
	case len(m.Thumb) > MaxThumb:
		return fmt.Errorf("media.thumb may be at most %d characters", MaxThumb)
	}
	if m.Thumb != "" {
		if _, err := base64.StdEncoding.DecodeString(m.Thumb); err != nil {
			return errors.New("media.thumb must be base64")
		}
	}
	return nil
}

// MediaOwner returns the user whose prefix a valid media key is under.
func MediaOwner(key string) string {
	owner, _, _ := strings.Cut(strings.TrimPrefix(key, "u/"), "/")
	return owner
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Group operations: the op of a client group frame.
const (
	GroupCreate  = "create"
	GroupRename  = "rename"
	GroupHistory = "history"
	GroupAdd     = "add"
	GroupRemove  = "remove"
	GroupPromote = "promote"
	GroupDemote  = "demote"
	GroupLeave   = "leave"
	GroupInfo    = "info"
	// GroupList asks for this user's groups: a frame with no group,
	// answered with groups.
	GroupList = "list"
)

// GroupOps lists the group operations, in documentation order.
var GroupOps = []string{GroupCreate, GroupRename, GroupHistory, GroupAdd, GroupRemove, GroupPromote, GroupDemote, GroupLeave, GroupInfo, GroupList}

// MaxGroupHistory bounds a group's history setting: how many of its
// latest messages a member added gets.
const MaxGroupHistory = 100

// MaxGroupUsersPerFrame bounds the users of one group frame: 256 ids of
// 64 characters fit a 64 KiB frame. A bigger group is built with several
// add frames.
const MaxGroupUsersPerFrame = 256

// MaxGroupName bounds a group's name, in bytes.
const MaxGroupName = 128

// GroupMember is one member in a group frame.
type GroupMember struct {
	User  string `json:"user"`
	Admin bool   `json:"admin,omitempty"`
}

// GroupEntry is one of a user's groups in a list answer: its name, and
// Since, the place in the group's log where the user became a member.
type GroupEntry struct {
	Group string `json:"group"`
	Name  string `json:"name"`
	Since uint64 `json:"since"`
}

// GroupEvent is a group's system message: what changed. Op is the
// operation (create, rename, add, remove, promote, demote, leave); Users
// whom it named (the members a create or add brought in, the removed, the
// promoted or demoted); Name the name a create or rename gave; Promoted
// the members who became admins because no admin was left.
type GroupEvent struct {
	Op       string   `json:"op"`
	Users    []string `json:"users,omitempty"`
	Name     string   `json:"name,omitempty"`
	Promoted []string `json:"promoted,omitempty"`
	// History is the setting a history change made.
	History *int `json:"history,omitempty"`
}

// CheckSettings is what a settings frame's change is refused with, if
// anything: the error code and why ("" when the change may be made). The
// SDKs check a change with it before they write it.
func CheckSettings(lastSeenPrivacy string, contacts *[]string) (ErrorCode, string) {
	switch lastSeenPrivacy {
	case "", PrivacyEveryone, PrivacyContacts, PrivacyNobody:
	default:
		return ErrBadField, "last_seen_privacy must be everyone, contacts or nobody"
	}
	if contacts != nil {
		if len(*contacts) > MaxContacts {
			return ErrBadField, fmt.Sprintf("contacts may list at most %d users", MaxContacts)
		}
		for _, u := range *contacts {
			if !ValidID(u) {
				return ErrBadID, fmt.Sprintf("contacts: %v", ErrInvalidID)
			}
		}
	}
	return "", ""
}

// ValidGroupName reports whether name may name a group: 1 to MaxGroupName
// bytes of UTF-8 with no control characters.
func ValidGroupName(name string) bool {
	if name == "" || len(name) > MaxGroupName || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 {
			return false
		}
	}
	return true
}

// Ticks are one recipient's status of a message: whether any of their
// devices has it, and whether they read it.
type Ticks struct {
	Delivered bool `json:"delivered"`
	Read      bool `json:"read"`
}

// DecodeError is a client frame the gateway could not accept, with the error
// code to answer it with.
type DecodeError struct {
	Code   ErrorCode
	Reason string
	// ID is the client message id, when the frame had a readable one.
	ID string
}

func (e *DecodeError) Error() string { return "protocol: " + string(e.Code) + ": " + e.Reason }

// ErrDecode matches every *DecodeError with errors.Is.
var ErrDecode = errors.New("protocol: decode")

// Is makes errors.Is(err, ErrDecode) true for a *DecodeError.
func (e *DecodeError) Is(target error) bool { return target == ErrDecode }

func decodeErr(code ErrorCode, id, format string, args ...any) *DecodeError {
	return &DecodeError{Code: code, ID: id, Reason: fmt.Sprintf(format, args...)}
}

// SystemIDPrefix starts the id of every group system message (ev-<its
// place in the group's log>). A group send may not use it: stores that
// key group messages by (group, from, id) would take a member's system
// message for a repeat of that member's message of the same id.
const SystemIDPrefix = "ev-"

// clientFrame holds only the fields a client may send, so a field that
// only server frames use (ts, dup, ...) is ignored like any unknown field.
type clientFrame struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	To    string          `json:"to"`
	Group string          `json:"group"`
	Body  json.RawMessage `json:"body"`
	Seq   uint64          `json:"seq"`
	GSeq  uint64          `json:"gseq"`
	Op    string          `json:"op"`
	Name  string          `json:"name"`
	// History is a JSON number that must fit an int: an out-of-range one
	// is refused as the wrong type.
	History *int `json:"history"`

	Media           *Media    `json:"media"`
	Users           []string  `json:"users"`
	ReadReceipts    *bool     `json:"read_receipts"`
	LastSeenPrivacy string    `json:"last_seen_privacy"`
	Contacts        *[]string `json:"contacts"`
}

// DecodeClient parses and validates a client-to-server frame. On error it
// returns a *DecodeError whose Code is the error frame to send back.
func DecodeClient(data []byte) (*Frame, error) {
	if f := DecodeClientFast(data); f != nil {
		return f, nil
	}
	return decodeClientJSON(data)
}

// DecodeClientFast decodes an ack, a read or a 1:1 send in its encoder's
// exact form (AppendSeqFrame, AppendSend) without encoding/json: the same
// frame DecodeClient would return. Anything else is nil: decode it with
// DecodeClient.
func DecodeClientFast(data []byte) *Frame {
	var f Frame
	if !DecodeClientFastInto(data, &f) {
		return nil
	}
	out := f // on the heap only once decoded
	return &out
}

// DecodeClientFastInto is DecodeClientFast into f, overwriting all of it,
// for a caller that reuses its Frames: it reports whether data took a
// fast path, and leaves f as it was if not.
func DecodeClientFastInto(data []byte, f *Frame) bool {
	return decodeSeqInto(data, f) || decodeSendInto(data, f)
}

// decodeClientJSON is DecodeClient for any frame.
func decodeClientJSON(data []byte) (*Frame, error) {
	// JSON text is UTF-8 (RFC 8259 §8.1), but encoding/json passes other
	// bytes through into a body, which would then be stored and handed to
	// a recipient that cannot read it. The gateway's read loop refuses
	// such frames first; this holds for every other caller.
	if !utf8.Valid(data) {
		return nil, decodeErr(ErrBadJSON, "", "frame is not valid UTF-8")
	}
	var cf clientFrame
	if err := json.Unmarshal(data, &cf); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			// Valid JSON, wrong type for a field: name the field and keep
			// the id if it was readable.
			var idOnly struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(data, &idOnly)
			id := ""
			if ValidID(idOnly.ID) {
				id = idOnly.ID
			}
			return nil, decodeErr(ErrBadField, id, "%s has the wrong type or is out of range", truncate(te.Field, 32))
		}
		return nil, decodeErr(ErrBadJSON, "", "frame is not a valid JSON object")
	}
	if len(data) == 0 || firstNonSpace(data) != '{' {
		return nil, decodeErr(ErrBadJSON, "", "frame is not a JSON object")
	}
	f := Frame{Type: cf.Type, ID: cf.ID, To: cf.To, Group: cf.Group, Body: cf.Body, Seq: cf.Seq, GSeq: cf.GSeq, Op: cf.Op, Name: cf.Name, History: cf.History,
		Media: cf.Media, Users: cf.Users, ReadReceipts: cf.ReadReceipts, LastSeenPrivacy: cf.LastSeenPrivacy, Contacts: cf.Contacts}
	switch f.Type {
	case TypeSend:
		switch {
		case f.ID == "":
			return nil, decodeErr(ErrBadField, "", "id is required")
		case !ValidID(f.ID):
			return nil, decodeErr(ErrBadID, "", "id: %v", ErrInvalidID)
		case f.To == "" && f.Group == "":
			return nil, decodeErr(ErrBadField, f.ID, "to (or group) is required")
		case f.To != "" && f.Group != "":
			return nil, decodeErr(ErrBadField, f.ID, "a send goes to a user (to) or a group (group), not both")
		case f.To != "" && !ValidID(f.To):
			return nil, decodeErr(ErrBadID, f.ID, "to: %v", ErrInvalidID)
		case f.Group != "" && !ValidID(f.Group):
			return nil, decodeErr(ErrBadID, f.ID, "group: %v", ErrInvalidID)
		case f.Group != "" && strings.HasPrefix(f.ID, SystemIDPrefix):
			return nil, decodeErr(ErrBadID, f.ID, "id: ids starting %s name a group's system messages", SystemIDPrefix)
		}
		if f.Media != nil {
			if err := f.Media.validate(); err != nil {
				return nil, decodeErr(ErrBadField, f.ID, "%v", err)
			}
			if len(f.Body) == 0 || string(f.Body) == "null" {
				f.Body = json.RawMessage("null") // a media message may have no body
			}
		} else if len(f.Body) == 0 || string(f.Body) == "null" {
			return nil, decodeErr(ErrBadField, f.ID, "body is required")
		}
	case TypeTyping:
		switch {
		case f.To != "" && f.Group != "":
			return nil, decodeErr(ErrBadField, "", "typing goes to a user (to) or a group (group), not both")
		case f.Group != "":
			if !ValidID(f.Group) {
				return nil, decodeErr(ErrBadID, "", "group: %v", ErrInvalidID)
			}
		case !ValidID(f.To):
			return nil, decodeErr(ErrBadID, "", "to: %v", ErrInvalidID)
		}
	case TypeAck, TypeRead:
		switch {
		case f.Group != "" || f.GSeq != 0:
			// Of a group read from its log: its place there.
			switch {
			case !ValidID(f.Group):
				return nil, decodeErr(ErrBadID, "", "group: %v", ErrInvalidID)
			case f.GSeq == 0 || f.Seq != 0:
				return nil, decodeErr(ErrBadField, "", "with group, gseq is required, a positive integer, and seq is not")
			}
		case f.Seq == 0:
			return nil, decodeErr(ErrBadField, "", "seq is required and must be a positive integer")
		}
	case TypeStatus:
		if f.Seq == 0 {
			return nil, decodeErr(ErrBadField, "", "seq is required: the message's seq from its sent frame")
		}
		switch {
		case f.Group != "" && f.To != "":
			return nil, decodeErr(ErrBadField, "", "a status names a group (group) or a recipient (to), not both")
		case f.Group != "" && !ValidID(f.Group):
			return nil, decodeErr(ErrBadID, "", "group: %v", ErrInvalidID)
		case f.To != "" && !ValidID(f.To):
			return nil, decodeErr(ErrBadID, "", "to: %v", ErrInvalidID)
		}
	case TypePresenceSub, TypePresenceUnsub:
		if f.Group != "" {
			// A group's members at once: the whole group in one frame,
			// which a list of 1,024 ids would not fit.
			if len(f.Users) > 0 {
				return nil, decodeErr(ErrBadField, "", "give users or group, not both")
			}
			if !ValidID(f.Group) {
				return nil, decodeErr(ErrBadID, "", "group: %v", ErrInvalidID)
			}
			break
		}
		if len(f.Users) == 0 || len(f.Users) > MaxUsersPerFrame {
			return nil, decodeErr(ErrBadField, "", "users must list 1 to %d users, or group name a group", MaxUsersPerFrame)
		}
		for _, u := range f.Users {
			if !ValidID(u) {
				return nil, decodeErr(ErrBadID, "", "users: %v", ErrInvalidID)
			}
		}
	case TypeSettings:
		// id is optional: the request's own, echoed in the answer and in
		// a refusal.
		if f.ID != "" && !ValidID(f.ID) {
			return nil, decodeErr(ErrBadID, "", "id: %v", ErrInvalidID)
		}
		if code, reason := CheckSettings(f.LastSeenPrivacy, f.Contacts); code != "" {
			return nil, decodeErr(code, f.ID, "%s", reason)
		}
	case TypeGroup:
		if err := validateGroupFrame(&f); err != nil {
			return nil, err
		}
	case "":
		return nil, decodeErr(ErrBadField, "", "type is required")
	default:
		return nil, decodeErr(ErrUnknownType, "", "unknown frame type %q", truncate(f.Type, 32))
	}
	return &f, nil
}

// validateGroupFrame checks a client group frame: a request id, a known
// op, a group id, and the name and users that op takes.
func validateGroupFrame(f *Frame) error {
	switch {
	case f.ID == "":
		return decodeErr(ErrBadField, "", "id is required: the request's id, echoed in the answer")
	case !ValidID(f.ID):
		return decodeErr(ErrBadID, "", "id: %v", ErrInvalidID)
	case !slices.Contains(GroupOps, f.Op):
		return decodeErr(ErrBadField, f.ID, "op must be one of %s", strings.Join(GroupOps, ", "))
	case f.Op == GroupList:
		if f.Group != "" || f.Name != "" || len(f.Users) > 0 {
			return decodeErr(ErrBadField, f.ID, "list takes no group, name or users")
		}
		return nil
	case f.Group == "":
		return decodeErr(ErrBadField, f.ID, "group is required")
	case !ValidID(f.Group):
		return decodeErr(ErrBadID, f.ID, "group: %v", ErrInvalidID)
	}
	switch f.Op {
	case GroupCreate, GroupRename:
		if !ValidGroupName(f.Name) {
			return decodeErr(ErrBadField, f.ID, "name must be 1 to %d bytes with no control characters", MaxGroupName)
		}
	}
	switch {
	case f.Op == GroupHistory && (f.History == nil || *f.History < 0 || *f.History > MaxGroupHistory):
		return decodeErr(ErrBadField, f.ID, "history must be 0 to %d: how many of the group's latest messages a member added gets", MaxGroupHistory)
	case f.Op != GroupHistory && f.History != nil:
		return decodeErr(ErrBadField, f.ID, "history is taken by op history only")
	}
	switch f.Op {
	case GroupAdd, GroupRemove, GroupPromote, GroupDemote:
		if len(f.Users) == 0 {
			return decodeErr(ErrBadField, f.ID, "users must list 1 to %d users", MaxGroupUsersPerFrame)
		}
		fallthrough
	case GroupCreate:
		if len(f.Users) > MaxGroupUsersPerFrame {
			return decodeErr(ErrBadField, f.ID, "users may list at most %d users; add more with further add frames", MaxGroupUsersPerFrame)
		}
		seen := make(map[string]bool, len(f.Users))
		for _, u := range f.Users {
			if !ValidID(u) {
				return decodeErr(ErrBadID, f.ID, "users: %v", ErrInvalidID)
			}
			if seen[u] {
				return decodeErr(ErrBadField, f.ID, "users names %s twice", u)
			}
			seen[u] = true
		}
	default:
		if len(f.Users) > 0 {
			return decodeErr(ErrBadField, f.ID, "users is not taken by op %s", f.Op)
		}
	}
	return nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			return c
		}
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// The encoders below write server frames by hand: every string field they
// take is a validated id (no character needs escaping) and the body was
// validated as JSON on the way in, so the output is valid JSON without the
// cost of reflection and re-validating the body.

// AppendSent appends a sent frame.
func AppendSent(b []byte, id string, seq uint64, ts int64, dup bool) []byte {
	b = append(b, `{"type":"sent","id":"`...)
	b = append(b, id...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	if dup {
		b = append(b, `,"dup":true`...)
	}
	return append(b, '}')
}

// AppendMsg appends a msg frame. media, when not empty, is a media
// reference as stored (compact JSON of a validated Media).
func AppendMsg(b []byte, id, from, device string, seq uint64, ts int64, body, media []byte) []byte {
	b = slices.Grow(b, msgFrameFixed+len(id)+len(from)+len(device)+len(body)+len(media))
	b = append(b, `{"type":"msg","id":"`...)
	b = append(b, id...)
	b = append(b, `","from":"`...)
	b = append(b, from...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	return appendMsgTail(b, body, media)
}

// AppendGroupMsg appends a msg frame for a message sent in group. media,
// when not empty, is a media reference as stored.
func AppendGroupMsg(b []byte, id, from, device, group string, seq uint64, ts int64, body, media []byte) []byte {
	b = slices.Grow(b, msgFrameFixed+len(`","group":"`)+len(id)+len(from)+len(device)+len(group)+len(body)+len(media))
	b = appendGroupMsgHead(b, id, from, device, group, seq, ts)
	return appendMsgTail(b, body, media)
}

// AppendGroupEvent appends a msg frame that is group's system message:
// event is a GroupEvent as JSON, made by from on device.
func AppendGroupEvent(b []byte, id, from, device, group string, seq uint64, ts int64, event []byte) []byte {
	b = appendGroupMsgHead(b, id, from, device, group, seq, ts)
	b = append(b, `,"event":`...)
	b = append(b, event...)
	return append(b, '}')
}

// AppendGroupLogMsg appends a msg frame for a message sent in group and
// read from its log, where it is at gseq.
func AppendGroupLogMsg(b []byte, id, from, device, group string, gseq uint64, ts int64, body, media []byte) []byte {
	b = slices.Grow(b, msgFrameFixed+len(`","group":"`)+len(id)+len(from)+len(device)+len(group)+len(body)+len(media))
	b = appendGroupHead(b, id, from, device, group, `","gseq":`, gseq, ts)
	return appendMsgTail(b, body, media)
}

// AppendGroupLogEvent appends a msg frame that is group's system message,
// read from its log, where it is at gseq.
func AppendGroupLogEvent(b []byte, id, from, device, group string, gseq uint64, ts int64, event []byte) []byte {
	b = appendGroupHead(b, id, from, device, group, `","gseq":`, gseq, ts)
	b = append(b, `,"event":`...)
	b = append(b, event...)
	return append(b, '}')
}

func appendGroupMsgHead(b []byte, id, from, device, group string, seq uint64, ts int64) []byte {
	return appendGroupHead(b, id, from, device, group, `","seq":`, seq, ts)
}

// appendGroupHead is a group msg frame's head; seqField names its place,
// in the member's inbox or in the group's log.
func appendGroupHead(b []byte, id, from, device, group, seqField string, seq uint64, ts int64) []byte {
	b = append(b, `{"type":"msg","id":"`...)
	b = append(b, id...)
	b = append(b, `","from":"`...)
	b = append(b, from...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, `","group":"`...)
	b = append(b, group...)
	b = append(b, seqField...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	return strconv.AppendInt(b, ts, 10)
}

// EncodeGroup returns a server group frame answering request id: the
// group as it now is. The name is free text, so this goes through
// encoding/json.
func EncodeGroup(id, group, name, createdBy string, created int64, members []GroupMember) []byte {
	return EncodeGroupWithHistory(id, group, name, createdBy, created, members, 0)
}

// EncodeGroupWithHistory is EncodeGroup for a group whose history setting
// is history (omitted when 0).
func EncodeGroupWithHistory(id, group, name, createdBy string, created int64, members []GroupMember, history int) []byte {
	if members == nil {
		members = []GroupMember{}
	}
	b, _ := json.Marshal(struct {
		Type      string        `json:"type"`
		ID        string        `json:"id"`
		Group     string        `json:"group"`
		Name      string        `json:"name"`
		CreatedBy string        `json:"created_by"`
		Created   int64         `json:"created"`
		Members   []GroupMember `json:"members"`
		History   int           `json:"history,omitempty"`
	}{TypeGroup, id, group, name, createdBy, created, members, history})
	return b
}

// EncodeGroupList returns a server group frame answering list request
// id: the user's groups, by id. Names are free text, so this goes through
// encoding/json.
func EncodeGroupList(id string, groups []GroupEntry) []byte {
	if groups == nil {
		groups = []GroupEntry{}
	}
	b, _ := json.Marshal(struct {
		Type   string       `json:"type"`
		ID     string       `json:"id"`
		Op     string       `json:"op"`
		Groups []GroupEntry `json:"groups"`
	}{TypeGroup, id, GroupList, groups})
	return b
}

// AppendGroupSend appends a client send frame to a group. body must be
// valid JSON.
func AppendGroupSend(b []byte, id, group string, body []byte) []byte {
	b = append(b, `{"type":"send","id":"`...)
	b = append(b, id...)
	b = append(b, `","group":"`...)
	b = append(b, group...)
	b = append(b, `","body":`...)
	b = append(b, body...)
	return append(b, '}')
}

// AppendReceipt appends a receipt frame: by/device did status to this
// user's messages stored from fromSeq (0: the start) to toSeq; seq is the
// receipt's own sequence, which the client acks.
func AppendReceipt(b []byte, status, by, device string, fromSeq, toSeq, seq uint64, ts int64) []byte {
	b = append(b, `{"type":"receipt","status":"`...)
	b = append(b, status...)
	b = append(b, `","by":"`...)
	b = append(b, by...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, '"')
	if fromSeq > 0 {
		b = append(b, `,"from_seq":`...)
		b = strconv.AppendUint(b, fromSeq, 10)
	}
	b = append(b, `,"to_seq":`...)
	b = strconv.AppendUint(b, toSeq, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	return append(b, '}')
}

// AppendGroupReceipt appends a group receipt frame: every member of group
// but this user has (delivered) or has read (read) this user's messages
// in the group stored in its log from fromSeq to toSeq; by/device was the
// last member to get there (device empty, and left out, when a change of
// the membership made it due rather than a move). seq is the receipt's
// own sequence.
func AppendGroupReceipt(b []byte, status, group, by, device string, fromSeq, toSeq, seq uint64, ts int64) []byte {
	b = append(b, `{"type":"receipt","status":"`...)
	b = append(b, status...)
	b = append(b, `","group":"`...)
	b = append(b, group...)
	b = append(b, `","by":"`...)
	b = append(b, by...)
	if device != "" {
		b = append(b, `","device":"`...)
		b = append(b, device...)
	}
	b = append(b, `","from_seq":`...)
	b = strconv.AppendUint(b, fromSeq, 10)
	b = append(b, `,"to_seq":`...)
	b = strconv.AppendUint(b, toSeq, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	return append(b, '}')
}

// AppendTyping appends a server typing frame: from on device is typing.
func AppendTyping(b []byte, from, device string) []byte {
	b = append(b, `{"type":"typing","from":"`...)
	b = append(b, from...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	return append(b, `"}`...)
}

// AppendGroupTyping appends a server typing frame: from on device is
// typing in group.
func AppendGroupTyping(b []byte, from, device, group string) []byte {
	b = append(b, `{"type":"typing","from":"`...)
	b = append(b, from...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, `","group":"`...)
	b = append(b, group...)
	return append(b, `"}`...)
}

// AppendPresence appends a presence frame.
func AppendPresence(b []byte, user string, online bool, lastSeen int64, hidden bool) []byte {
	b = append(b, `{"type":"presence","user":"`...)
	b = append(b, user...)
	b = append(b, '"')
	switch {
	case hidden:
		b = append(b, `,"hidden":true`...)
	case online:
		b = append(b, `,"online":true`...)
	default:
		b = append(b, `,"online":false`...)
		if lastSeen > 0 {
			b = append(b, `,"last_seen":`...)
			b = strconv.AppendInt(b, lastSeen, 10)
		}
	}
	return append(b, '}')
}

// EncodeSettings returns a server settings frame with every setting,
// answering the settings frame of request id ("" when it had none).
func EncodeSettings(id string, readReceipts bool, lastSeenPrivacy string, contacts []string) []byte {
	if contacts == nil {
		contacts = []string{}
	}
	b, _ := json.Marshal(Frame{Type: TypeSettings, ID: id, ReadReceipts: &readReceipts, LastSeenPrivacy: lastSeenPrivacy, Contacts: &contacts})
	return b
}

// EncodeStatus returns a server status frame about the message stored at
// seq: each recipient's ticks.
func EncodeStatus(seq uint64, recipients map[string]Ticks) []byte {
	if recipients == nil {
		recipients = map[string]Ticks{}
	}
	b, _ := json.Marshal(struct {
		Type       string           `json:"type"`
		Seq        uint64           `json:"seq"`
		Recipients map[string]Ticks `json:"recipients"`
	}{TypeStatus, seq, recipients})
	return b
}

// EncodeGroupStatus returns a server status frame about the group
// message stored at seq in group's log: each member's ticks (the sender
// left out) and the totals.
func EncodeGroupStatus(seq uint64, group string, recipients map[string]Ticks, allDelivered, allRead bool) []byte {
	if recipients == nil {
		recipients = map[string]Ticks{}
	}
	b, _ := json.Marshal(struct {
		Type         string           `json:"type"`
		Seq          uint64           `json:"seq"`
		Group        string           `json:"group"`
		Recipients   map[string]Ticks `json:"recipients"`
		AllDelivered bool             `json:"all_delivered"`
		AllRead      bool             `json:"all_read"`
	}{TypeStatus, seq, group, recipients, allDelivered, allRead})
	return b
}

// AppendStatusGroup appends a client status frame about the message this
// user sent in group, stored at seq in the group's log.
func AppendStatusGroup(b []byte, group string, seq uint64) []byte {
	b = append(b, `{"type":"status","group":"`...)
	b = append(b, group...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}

// AppendTypingTo appends a client typing frame.
func AppendTypingTo(b []byte, to string) []byte {
	b = append(b, `{"type":"typing","to":"`...)
	b = append(b, to...)
	return append(b, `"}`...)
}

// AppendTypingGroup appends a client typing frame to a group.
func AppendTypingGroup(b []byte, group string) []byte {
	b = append(b, `{"type":"typing","group":"`...)
	b = append(b, group...)
	return append(b, `"}`...)
}

// AppendSend appends a client send frame. body must be valid JSON.
func AppendSend(b []byte, id, to string, body []byte) []byte {
	b = slices.Grow(b, len(`{"type":"send","id":"","to":"","body":}`)+len(id)+len(to)+len(body))
	b = append(b, `{"type":"send","id":"`...)
	b = append(b, id...)
	b = append(b, `","to":"`...)
	b = append(b, to...)
	b = append(b, `","body":`...)
	b = append(b, body...)
	return append(b, '}')
}

// AppendSeqFrame appends a client ack or read frame.
func AppendSeqFrame(b []byte, typ string, seq uint64) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}

// AppendGroupSeqFrame appends a client ack or read of a group read from
// its log, up to gseq there.
func AppendGroupSeqFrame(b []byte, typ, group string, gseq uint64) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","group":"`...)
	b = append(b, group...)
	b = append(b, `","gseq":`...)
	b = strconv.AppendUint(b, gseq, 10)
	return append(b, '}')
}

// AppendStatusFrame appends a status frame asking about the message
// stored at seq; to, when not empty, names its recipient (needed for a
// message sent to another region, whose seq is an OUTBOX one) and must
// be a valid id.
func AppendStatusFrame(b []byte, seq uint64, to string) []byte {
	if to == "" {
		return AppendSeqFrame(b, TypeStatus, seq)
	}
	b = append(b, `{"type":"status","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"to":"`...)
	b = append(b, to...)
	return append(b, `"}`...)
}

// EncodeError returns an error frame. The message is free text, so this one
// goes through encoding/json.
func EncodeError(code ErrorCode, message, id string, seq uint64, retryMS int64) []byte {
	b, _ := json.Marshal(Frame{Type: TypeError, Code: code, Message: message, ID: id, Seq: seq, RetryMS: retryMS})
	return b
}

// EncodeRefusal returns the error frame refusing a client frame of type
// of named by seq (an ack, a read, a status), with group for a status
// naming a group.
func EncodeRefusal(code ErrorCode, message, of, group string, seq uint64, retryMS int64) []byte {
	b, _ := json.Marshal(Frame{Type: TypeError, Code: code, Message: message, For: of, Group: group, Seq: seq, RetryMS: retryMS})
	return b
}

// EncodeWelcome returns the welcome frame sent first on every connection.
func EncodeWelcome(user, device, session string, maxFrame int) []byte {
	b, _ := json.Marshal(Frame{Type: TypeWelcome, User: user, Device: device, Session: session, Protocol: Version, MaxFrame: maxFrame})
	return b
}

// DecodeServer parses a server-to-client frame (used by the client SDK).
func DecodeServer(data []byte) (*Frame, error) {
	if f := decodeServerFast(data); f != nil {
		return f, nil
	}
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("protocol: bad server frame: %w", err)
	}
	if f.Type == "" {
		return nil, errors.New("protocol: server frame without type")
	}
	return &f, nil
}

// msgFrameFixed bounds a msg frame's bytes other than its strings, body
// and media: its keys, punctuation and two numbers (a log's "gseq" the
// longer key). A frame is made with its length known, not grown append by
// append (a copy of the body each time, a quarter of what handing a live
// message to its socket cost).
const msgFrameFixed = len(`{"type":"msg","id":"","from":"","device":"","gseq":,"ts":,"media":,"body":}`) + 2*20

// appendMsgTail ends a msg frame: its media reference, if any, and body.
func appendMsgTail(b, body, media []byte) []byte {
	if len(media) > 0 {
		b = append(b, `,"media":`...)
		b = append(b, media...)
	}
	b = append(b, `,"body":`...)
	b = append(b, body...)
	return append(b, '}')
}
