package contract

// Worker functions' request subjects and the request and reply types on
// them, and the records gateways and functions both read. Every function
// is a NATS micro service: any number of instances answer in a queue
// group, and a refusal is a micro error (see Call).

// Presence.

// PresenceGetSubject is the request subject of the get endpoint.
const PresenceGetSubject = "sb.fn.presence.get"

// PresenceAnnounceSubject is where a gateway asks the presence function
// to publish a user's state again, under privacy settings that changed:
// followers see the new privacy at once, not at the user's next change.
// The presence function is the only publisher of presence updates.
const PresenceAnnounceSubject = "sb.fn.presence.announce"

// AnnounceRequest names the user whose state to publish again.
type AnnounceRequest struct {
	User string `json:"user"`
}

// MaxPresenceGet is the most users one get request may ask about.
const MaxPresenceGet = 256

// PresenceSubject is where a user's presence changes are published.
func PresenceSubject(user string) string { return "sb.presence." + user }

// Lease is the value of a lease key, written by the gateway that holds the
// device's session.
type Lease struct {
	Gateway string `json:"gateway"`
	Session string `json:"session"`
	Since   int64  `json:"since"` // ms since epoch the session started
}

// LeaseSubject is the KV subject of a device's lease, for gateways that
// write it with a raw publish (to set a TTL on every refresh).
func LeaseSubject(user, device string) string {
	return "$KV." + PresenceKV + "." + "lease." + user + "." + device
}

// LeaseKey is the KV key of a device's lease.
func LeaseKey(user, device string) string { return "lease." + user + "." + device }

// PresenceUpdate is published on PresenceSubject when a user comes online or goes
// offline. Visibility is the user's last_seen setting at that moment;
// gateways show the update as is to viewers when it is everyone, ask the
// get endpoint for each viewer when it is contacts, and show it to no one
// when it is nobody. A viewer already told the user is hidden is told
// nothing more, so the update's timing does not show.
type PresenceUpdate struct {
	User       string `json:"user"`
	Online     bool   `json:"online"`
	LastSeen   int64  `json:"last_seen,omitempty"`
	Visibility string `json:"visibility"`
}

// PresenceRequest asks for users' presence as Viewer may see it. The gateway
// fills in Viewer from the token.
type PresenceRequest struct {
	Viewer string   `json:"viewer"`
	Users  []string `json:"users"`
}

// PresenceView is one user's presence as one viewer may see it.
type PresenceView struct {
	User     string `json:"user"`
	Online   bool   `json:"online"`
	LastSeen int64  `json:"last_seen,omitempty"`
	Hidden   bool   `json:"hidden,omitempty"`
}

// PresenceReply answers a PresenceRequest, in the order asked.
type PresenceReply struct {
	Users []PresenceView `json:"users"`
}

// Receipts.

// StatusSubject is the request subject of the status endpoint.
const StatusSubject = "sb.fn.receipts.status"

// Tick is one recipient's status of a message: ms since epoch when it was
// delivered to and read by them, 0 when not (yet).
type Tick struct {
	Delivered int64 `json:"delivered,omitempty"`
	Read      int64 `json:"read,omitempty"`
}

// Status is the STATUS record of one message: recipient user → tick.
type Status struct {
	To map[string]*Tick `json:"to"`
}

// StatusRequest asks for the status of message ID sent by User. The
// gateway fills in User from the token, so a user can only ask about their
// own messages: the key is built from it.
type StatusRequest struct {
	User string `json:"user"`
	ID   string `json:"id"`
}

// StatusReply answers a StatusRequest.
type StatusReply struct {
	ID string           `json:"id"`
	To map[string]*Tick `json:"to"`
}

// Media.

// The media function's subjects: the micro group, each endpoint one token
// below.
const (
	MediaSubjectPrefix   = "sb.fn.media"
	MediaUploadSubject   = MediaSubjectPrefix + ".upload"
	MediaDownloadSubject = MediaSubjectPrefix + ".download"
	MediaGrantSubject    = MediaSubjectPrefix + ".grant"
)

// UploadRequest asks the function for an upload ticket. User is the
// authenticated uploader: the function trusts it, so only the gateway (or
// another trusted component) may publish on sb.fn.media.>, which the NATS
// account's permissions must ensure.
type UploadRequest struct {
	User string `json:"user"`
	Mime string `json:"mime"`
	Size int64  `json:"size"`
}

// DownloadRequest asks for a download URL on behalf of User.
type DownloadRequest struct {
	User string `json:"user"`
	Key  string `json:"key"`
}

// GrantRequest lets Users download Key; User must own it.
//
// A grant made for a media message also carries what the message says of
// the object, Size and SHA256 (hex), and is refused with ErrBadRequest
// unless the stored object matches: its size always, its digest where the
// store knows it (the embedded store; S3 does not, see doc.go). Zero
// values check nothing, as for a grant through the HTTP API.
type GrantRequest struct {
	User   string   `json:"user"`
	Key    string   `json:"key"`
	Users  []string `json:"users"`
	Size   int64    `json:"size,omitempty"`
	SHA256 string   `json:"sha256,omitempty"`
}

// GrantResult is the record after a grant: everyone who may download Key
// besides Owner.
type GrantResult struct {
	Key   string   `json:"key"`
	Owner string   `json:"owner"`
	Users []string `json:"users"`
}
