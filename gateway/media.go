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
// delivered. It returns the reference to store, or nil after answering
// the client with an error.
func (s *session) grantMedia(f *protocol.Frame) []byte {
	if protocol.MediaOwner(f.Media.Key) != s.id.User {
		s.sendError(protocol.ErrBadMedia, "media.key is not under your upload prefix", f.ID, 0, 0)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.FunctionTimeout)
	defer cancel()
	err := contract.Call(ctx, s.srv.nc, contract.MediaGrantSubject, contract.GrantRequest{
		User: s.id.User, Key: f.Media.Key, Users: []string{f.To},
		Size: f.Media.Size, SHA256: f.Media.SHA256,
	}, nil)
	var fe *contract.FnError
	switch {
	case err == nil:
	case errors.Is(err, contract.ErrUnavailable):
		s.sendError(protocol.ErrUnavailable, "media is unavailable; resend", f.ID, 0, 0)
		return nil
	case errors.As(err, &fe) && fe.Status == 404:
		s.sendError(protocol.ErrBadMedia, "media.key was not uploaded (yet)", f.ID, 0, 0)
		return nil
	case errors.As(err, &fe) && fe.Status < 500:
		s.sendError(protocol.ErrBadMedia, "media.key cannot be shared: "+fe.Message, f.ID, 0, 0)
		return nil
	default:
		s.log.Warn("media grant failed", "err", err)
		s.sendError(protocol.ErrUnavailable, "media is unavailable; resend", f.ID, 0, 0)
		return nil
	}
	ref, _ := json.Marshal(f.Media)
	return ref
}
