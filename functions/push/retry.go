package push

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// HdrSeq on a dead letter is the INBOX sequence of the message whose
// notification failed, or its GROUPS sequence for a message of a group
// read from its log (also in Sb-Origin-Seq, which every function's dead
// letters carry, with Sb-Origin-Stream naming the stream; this one is the
// push contract's name for it).
const HdrSeq = "Sb-Seq"

// maxReason bounds Sb-Reason, as streams.DeadLetter does.
const maxReason = 512

// DeadLetterSubject is where a user's failed notifications are kept for an
// operator: `nats stream view DLQ --subject dlq.push.bob`.
func DeadLetterSubject(user string) string { return contract.DLQPrefix + "push." + user }

// backoff is the delay before the attempt after attempt (1-based):
// base·2^(attempt-1) capped at limit, with equal jitter (half fixed, half
// random) so instances that failed together do not retry together, and
// never under what the receiver asked for with Retry-After (within limit).
func backoff(attempt uint64, base, limit, asked time.Duration) time.Duration {
	d := base
	for i := uint64(1); i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	d = d/2 + rand.N(d/2+1)
	if asked > d {
		d = min(asked, limit)
	}
	return d
}

// deadLetter stores n on dlq.push.<user>: the notification JSON, never the
// message body, so the DLQ holds no content. The dedup id is per message
// and device, so dead-lettering again after a crash stores one copy.
func deadLetter(ctx context.Context, js jetstream.JetStream, n Notification, subject string, reason string, attempts uint64) error {
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	reason = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, reason)
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	stream, seq, user, dedup := contract.Inbox, strconv.FormatUint(n.Seq, 10), lastToken(subject), ""
	if n.Group != "" {
		// A group's message, on the group's subject: filed under the
		// member, once per member and device.
		stream, seq, user, dedup = contract.GroupsStream, strconv.FormatUint(n.GSeq, 10), n.User, n.User+":"
	}
	m := &nats.Msg{
		Subject: DeadLetterSubject(user),
		Header: nats.Header{
			contract.HdrMsgID:       {"dlq:push:" + stream + ":" + seq + ":" + dedup + n.Device},
			contract.HdrReason:      {reason},
			contract.HdrAttempts:    {strconv.FormatUint(attempts, 10)},
			HdrSeq:                  {seq},
			contract.HdrOrigStream:  {stream},
			contract.HdrOrigSubject: {subject},
			contract.HdrOrigSeq:     {seq},
		},
		Data: body,
	}
	_, err = js.PublishMsg(ctx, m)
	return err
}
