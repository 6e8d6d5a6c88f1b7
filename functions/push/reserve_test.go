package push

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// Two attempts at one message (its own delivery and a lease gone, say)
// hold its claim at once: a device one of them reserved is left to it,
// another device is the other's, what one posted stays posted whatever
// the other writes, and a reservation abandoned (older than the wait
// given) is taken over.
func TestReservationKeepsTheOtherAttemptOff(t *testing.T) {
	n := tk.StartNATS(t)
	push := kv(t, n.JS, contract.PushKV)
	ctx := context.Background()
	attempt := func() *ticket {
		t.Helper()
		tic, ours, err := acquire(ctx, n.JS, push, "bob", 7, time.Minute, time.Hour)
		if err != nil || !ours {
			t.Fatalf("acquire: ours %v, %v", ours, err)
		}
		return tic
	}
	a, b := attempt(), attempt()
	if ok, err := a.reserve(ctx, "phone", time.Minute, time.Minute); !ok || err != nil {
		t.Fatalf("a reserves the phone: %v %v", ok, err)
	}
	if _, err := b.reserve(ctx, "phone", time.Minute, time.Minute); !errors.Is(err, errBusy) {
		t.Fatalf("b reserving the phone a holds: %v, want errBusy", err)
	}
	if ok, err := b.reserve(ctx, "tablet", time.Minute, time.Minute); !ok || err != nil {
		t.Fatalf("b reserves the tablet: %v %v", ok, err)
	}
	a.end("phone", true, false)
	if err := a.save(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	b.end("tablet", false, false) // failed: given back
	if err := b.save(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	c := attempt()
	if !slices.Equal(c.st.Sent, []string{"phone"}) || len(c.st.Posting) != 0 {
		t.Fatalf("claim %+v, want the phone sent and nothing reserved", c.st)
	}
	if ok, err := c.reserve(ctx, "phone", time.Minute, time.Minute); ok || err != nil {
		t.Fatalf("reserving a device sent: %v %v, want false", ok, err)
	}
	// An attempt that reserved the tablet and died: after the wait it is
	// another's.
	if ok, err := c.reserve(ctx, "tablet", time.Minute, time.Minute); !ok || err != nil {
		t.Fatalf("c reserves the tablet: %v %v", ok, err)
	}
	d := attempt()
	if _, err := d.reserve(ctx, "tablet", time.Minute, time.Minute); !errors.Is(err, errBusy) {
		t.Fatalf("d reserving the tablet c holds: %v, want errBusy", err)
	}
	if ok, err := d.reserve(ctx, "tablet", 0, time.Minute); !ok || err != nil {
		t.Fatalf("d taking over an abandoned reservation: %v %v", ok, err)
	}
}
