package media

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-im/switchboard/contract"
)

// Client calls the media function over NATS. The HTTP API uses it, and so
// can any component that grants on a message's behalf. Errors the function
// refused with come back as *Error (match with errors.Is); a function that
// is not running or too slow gives ErrUnavailable.
//
// A Client is safe from many goroutines.
type Client struct {
	nc      contract.Requester
	timeout time.Duration
}

// NewClient returns a client asking through nc (a gateway's
// contract.Caller, or a connection answered on its own inbox), whose calls
// time out after timeout unless the context's deadline is sooner. Zero
// means 5 seconds.
func NewClient(nc contract.Requester, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Client{nc: nc, timeout: timeout}
}

// Upload asks for an upload ticket for user.
func (c *Client) Upload(ctx context.Context, user, mime string, size int64) (*Ticket, error) {
	var t Ticket
	if err := c.call(ctx, contract.MediaUploadSubject, contract.UploadRequest{User: user, Mime: mime, Size: size}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Download asks for a download URL for key on behalf of user.
func (c *Client) Download(ctx context.Context, user, key string) (*DownloadURL, error) {
	var d DownloadURL
	if err := c.call(ctx, contract.MediaDownloadSubject, contract.DownloadRequest{User: user, Key: key}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Grant lets users download key, owned by owner.
func (c *Client) Grant(ctx context.Context, key, owner string, users []string) (*contract.GrantResult, error) {
	var g contract.GrantResult
	if err := c.call(ctx, contract.MediaGrantSubject, contract.GrantRequest{User: owner, Key: key, Users: users}, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// GrantMessage is Grant for a media message: r also carries what the
// message says of the object (Size, SHA256), and the grant is refused with
// ErrBadRequest unless the stored object matches it.
func (c *Client) GrantMessage(ctx context.Context, r contract.GrantRequest) (*contract.GrantResult, error) {
	var g contract.GrantResult
	if err := c.call(ctx, contract.MediaGrantSubject, r, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

func (c *Client) call(ctx context.Context, subject string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	err := contract.Call(ctx, c.nc, subject, in, out)
	var fe *contract.FnError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, contract.ErrUnavailable):
		if ctx.Err() != nil {
			return errorf(ErrUnavailable, "the media function did not answer within %s", c.timeout)
		}
		return errorf(ErrUnavailable, "the media function is not running")
	case errors.As(err, &fe):
		// The function's own code when it sent one; a bare micro error
		// (another implementation, an older version) maps by its status.
		base := errorForCode(fe.Code, fe.Status)
		msg := fe.Message
		if msg == "" {
			msg = base.Message
		}
		return &Error{Status: base.Status, Code: base.Code, Message: msg}
	}
	return fmt.Errorf("media: %w", err)
}
