package client

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
)

// A body that is not UTF-8 JSON is refused before anything is queued or
// written: the gateway would close the connection on it (1007), and the
// SDK would resend it, and be closed again, on every reconnect.
func TestSendRefusesBodiesThatAreNotUTF8JSON(t *testing.T) {
	c := &Client{} // never dialled: the body is checked before the connection is used
	for _, body := range []string{"\"\xff\"", "{\"a\":\"\xc3\x28\"}", "not json", ""} {
		if _, err := c.Send(context.Background(), "bob", "m1", json.RawMessage(body)); !errors.Is(err, ErrBadBody) {
			t.Errorf("Send(%q) = %v, want ErrBadBody", body, err)
		}
	}
}
