package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

// ErrProvider wraps an argument that cannot make a provider request.
var ErrProvider = errors.New("push: provider request")

// ProviderTTL is how long FCM and APNs keep trying to reach a device that
// is off the network. INBOX keeps the message far longer, so a wake-up a
// day late still finds it; past that the user has opened the app anyway.
const ProviderTTL = 24 * time.Hour

// FCMEndpoint is FCM's HTTP v1 send URL, %s being the Firebase project.
const FCMEndpoint = "https://fcm.googleapis.com/v1/projects/%s/messages:send"

// APNsEndpoint is APNs' production URL, %s being the device token.
const APNsEndpoint = "https://api.push.apple.com/3/device/%s"

// fcmData is the notification as FCM data: every value a string (FCM's
// rule), and From renamed to sender because "from" is a key FCM reserves
// and rejects.
type fcmData struct {
	User      string `json:"user"`
	Device    string `json:"device"`
	MessageID string `json:"message_id"`
	Sender    string `json:"sender"`
	Pending   string `json:"pending"`
	Seq       string `json:"seq"`
	TS        string `json:"ts"`
	Group     string `json:"group,omitempty"`
	GSeq      string `json:"gseq,omitempty"`
}

type fcmMessage struct {
	Message struct {
		Token   string  `json:"token"`
		Data    fcmData `json:"data"`
		Android struct {
			Priority    string `json:"priority"`
			CollapseKey string `json:"collapse_key"`
			TTL         string `json:"ttl"`
		} `json:"android"`
		APNs struct {
			Headers map[string]string `json:"headers"`
			Payload struct {
				APS aps `json:"aps"`
			} `json:"payload"`
		} `json:"apns"`
	} `json:"message"`
}

type aps struct {
	ContentAvailable int `json:"content-available"`
}

// FCMRequest builds the FCM HTTP v1 request that carries n to an Android
// (or FCM-registered iOS) device. It is data only, with no title or body:
// the app wakes, fetches over its own session and shows what it decrypts.
// High priority is what wakes a dozing Android device; the collapse key
// (the user) makes FCM keep only the newest of a user's undelivered
// wake-ups. accessToken is an OAuth 2 token for the project's service
// account; the caller mints and refreshes it.
func FCMRequest(projectID, deviceToken, accessToken string, n Notification) (*http.Request, error) {
	if !validProject(projectID) {
		return nil, fmt.Errorf("%w: FCM project id %q", ErrProvider, projectID)
	}
	if !printable(deviceToken) || !printable(accessToken) {
		return nil, fmt.Errorf("%w: FCM device token and access token must be non-empty and printable", ErrProvider)
	}
	if !protocol.ValidID(n.User) {
		return nil, fmt.Errorf("%w: user %q", ErrProvider, n.User)
	}
	var m fcmMessage
	m.Message.Token = deviceToken
	m.Message.Data = fcmData{
		User:      n.User,
		Device:    n.Device,
		MessageID: n.MessageID,
		Sender:    n.From,
		Pending:   strconv.FormatUint(n.Pending, 10),
		Seq:       strconv.FormatUint(n.Seq, 10),
		TS:        strconv.FormatInt(n.TS, 10),
		Group:     n.Group,
	}
	if n.GSeq > 0 {
		m.Message.Data.GSeq = strconv.FormatUint(n.GSeq, 10)
	}
	m.Message.Android.Priority = "high"
	m.Message.Android.CollapseKey = n.User
	m.Message.Android.TTL = strconv.Itoa(int(ProviderTTL/time.Second)) + "s"
	m.Message.APNs.Headers = apnsHeaders(n)
	m.Message.APNs.Payload.APS.ContentAvailable = 1
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf(FCMEndpoint, projectID), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// APNsRequest builds the APNs request that carries n to an iOS device as
// a background (silent) notification: content-available with no alert,
// which iOS requires to go at priority 5, and the notification under "sb"
// for the app. The collapse id (the user) makes APNs keep only the newest
// of a user's undelivered wake-ups. APNs authentication is the caller's:
// a TLS client certificate on the transport, or an "authorization: bearer
// <provider JWT>" header added to the request. APNs speaks HTTP/2 only.
func APNsRequest(topic, deviceToken string, n Notification) (*http.Request, error) {
	if !printable(topic) {
		return nil, fmt.Errorf("%w: APNs topic %q", ErrProvider, topic)
	}
	if !isHex(deviceToken) {
		return nil, fmt.Errorf("%w: APNs device token must be hex", ErrProvider)
	}
	if !protocol.ValidID(n.User) {
		return nil, fmt.Errorf("%w: user %q", ErrProvider, n.User)
	}
	body, err := json.Marshal(struct {
		APS aps          `json:"aps"`
		SB  Notification `json:"sb"`
	}{aps{ContentAvailable: 1}, n})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf(APNsEndpoint, deviceToken), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range apnsHeaders(n) {
		// APNs header names are lower case; keep them so rather than let
		// net/http canonicalise them (HTTP/2 lower-cases on the wire anyway).
		req.Header[k] = []string{v}
	}
	req.Header["apns-topic"] = []string{topic}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// apnsHeaders are the APNs headers both paths send. The expiry counts from
// when the message was accepted, not from now, so a retried request does
// not live longer than the first.
func apnsHeaders(n Notification) map[string]string {
	exp := time.UnixMilli(n.TS).Add(ProviderTTL).Unix()
	return map[string]string{
		"apns-push-type":   "background",
		"apns-priority":    "5",
		"apns-collapse-id": n.User,
		"apns-expiration":  strconv.FormatInt(exp, 10),
	}
}

func validProject(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f })
}

func isHex(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}
