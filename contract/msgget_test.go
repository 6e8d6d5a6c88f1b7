package contract_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/testkit"
)

// A read from a stream that does not exist fails, and not with ErrNoMsg:
// a caller must not take a missing stream for a missing message.
func TestGetMsgOfAMissingStreamIsNotNoMsg(t *testing.T) {
	t.Parallel()
	n := testkit.StartStreams(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := contract.GetMsg(ctx, n.Conn, "NO_SUCH_STREAM", 1, "")
	if err == nil || errors.Is(err, contract.ErrNoMsg) {
		t.Fatalf("GetMsg on a stream that does not exist: %v; want an error other than ErrNoMsg", err)
	}
}

// A stream that exists but holds nothing where GetMsg looks, by sequence
// or as the last on a subject, answers ErrNoMsg.
func TestGetMsgOfAMissingMessageIsNoMsg(t *testing.T) {
	t.Parallel()
	n := testkit.StartStreams(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := contract.GetMsg(ctx, n.Conn, contract.Inbox, 1, ""); !errors.Is(err, contract.ErrNoMsg) {
		t.Fatalf("GetMsg of sequence 1 of an empty %s: %v; want ErrNoMsg", contract.Inbox, err)
	}
	if _, err := contract.GetMsg(ctx, n.Conn, contract.Inbox, 0, contract.InboxSubject("bob")); !errors.Is(err, contract.ErrNoMsg) {
		t.Fatalf("GetMsg of the last message for bob in an empty %s: %v; want ErrNoMsg", contract.Inbox, err)
	}
}
