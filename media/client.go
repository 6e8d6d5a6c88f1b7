package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Client calls the media function over NATS. The HTTP API uses it, and so
// can any component that grants on a message's behalf. Errors the function
// refused with come back as *Error (match with errors.Is); a function that
// is not running or too slow gives ErrUnavailable.
//
// A Client is safe from many goroutines.
type Client struct {
	nc      *nats.Conn
	timeout time.Duration
}

// NewClient returns a client whose calls time out after timeout unless the
// context's deadline is sooner. Zero means 5 seconds.
func NewClient(nc *nats.Conn, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Client{nc: nc, timeout: timeout}
}

// Upload asks for an upload ticket for user.
func (c *Client) Upload(ctx context.Context, user, mime string, size int64) (*Ticket, error) {
	var t Ticket
	if err := c.call(ctx, SubjectUpload, UploadRequest{User: user, Mime: mime, Size: size}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Download asks for a download URL for key on behalf of user.
func (c *Client) Download(ctx context.Context, user, key string) (*DownloadURL, error) {
	var d DownloadURL
	if err := c.call(ctx, SubjectDownload, DownloadRequest{User: user, Key: key}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Grant lets users download key, owned by owner.
func (c *Client) Grant(ctx context.Context, key, owner string, users []string) (*GrantResult, error) {
	var g GrantResult
	if err := c.call(ctx, SubjectGrant, GrantRequest{User: owner, Key: key, Users: users}, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// GrantMessage is Grant for a media message: r also carries what the
// message says of the object (Size, SHA256), and the grant is refused with
// ErrBadRequest unless the stored object matches it.
func (c *Client) GrantMessage(ctx context.Context, r GrantRequest) (*GrantResult, error) {
	var g GrantResult
	if err := c.call(ctx, SubjectGrant, r, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

func (c *Client) call(ctx context.Context, subject string, in, out any) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return errorf(ErrUnavailable, "the media function is not running")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return errorf(ErrUnavailable, "the media function did not answer within %s", c.timeout)
	case err != nil:
		return fmt.Errorf("media: request %s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return remoteError(code, msg.Header.Get(micro.ErrorHeader), msg.Data)
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("media: response on %s: %w", subject, err)
	}
	return nil
}

// remoteError rebuilds the *Error a function answered with. The data
// carries the code and message; a bare micro error (another
// implementation, an older version) still maps through its status.
func remoteError(code, description string, data []byte) error {
	status, _ := strconv.Atoi(code)
	var e Error
	if json.Unmarshal(data, &e) == nil && e.Code != "" {
		base := errorForCode(e.Code, status)
		e.Status = base.Status
		return &e
	}
	base := errorForCode("", status)
	return &Error{Status: base.Status, Code: base.Code, Message: description}
}
