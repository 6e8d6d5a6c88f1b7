package gateway

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// grantMedia lets the recipient download the object a media send names,
// before the message is stored: a message whose recipient could not fetch
// its media, or whose size or sha256 are not those of the upload, is never
// delivered. It returns the reference to store, or the error to answer
// the client with. It waits for the media function (FunctionTimeout at
// most), so it runs as a step of the PubAck queue, off the read loop: the
// device's other frames go on meanwhile, and its later sends wait for
// this one, in order.
func (s *session) grantMedia(m protocol.Media, to string) (ref []byte, code protocol.ErrorCode, message string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
	defer cancel()
	err := contract.Call(ctx, s.srv.calls, contract.MediaGrantSubject, contract.GrantRequest{
		User: s.id.User, Key: m.Key, Users: []string{to},
		Size: m.Size, SHA256: m.SHA256, Mime: m.Mime,
	}, nil)
	var fe *contract.FnError
	switch {
	case err == nil:
	case errors.Is(err, contract.ErrUnavailable):
		return nil, protocol.ErrUnavailable, "media is unavailable; resend"
	case errors.As(err, &fe) && fe.Status == 404:
		return nil, protocol.ErrBadMedia, "media.key was not uploaded (yet)"
	case errors.As(err, &fe) && fe.Status < 500:
		return nil, protocol.ErrBadMedia, "media.key cannot be shared: " + fe.Message
	default:
		s.log.Warn("media grant failed", "err", err)
		return nil, protocol.ErrUnavailable, "media is unavailable; resend"
	}
	ref, _ = json.Marshal(m)
	return ref, "", ""
}
