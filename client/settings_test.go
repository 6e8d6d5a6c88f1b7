package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

// settingsCall runs Settings on its own goroutine; its outcome comes on
// the channel.
func settingsCall(c *Client, ctx context.Context, change SettingsChange) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Settings(ctx, change)
		done <- err
	}()
	return done
}

func ended(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(stuck):
		t.Fatal("Settings never returned")
		return nil
	}
}

// A settings change is asked under an id of its own and answered by it:
// a refusal for now (rate_limited) has it asked again under the same id
// after the wait the refusal names, a refusal for good ends the call with
// it, and an answer to another request (a call that gave up) is not
// taken for this one's.
func TestSettingsAnsweredByItsID(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c, sc, _ := s.dialConnectedWith(t, Options{}, w)
	yes := true
	done := settingsCall(c, context.Background(), SettingsChange{ReadReceipts: &yes})
	f := sc.next(t)
	if f.Type != protocol.TypeSettings || f.ID == "" || f.ReadReceipts == nil || !*f.ReadReceipts {
		t.Fatalf("frame %+v, want a settings change with an id", f)
	}
	sc.write(protocol.EncodeError(protocol.ErrRateLimited, "too many frames", f.ID, 0, 50))
	if r := w.next(t); r.d != 50*time.Millisecond {
		t.Fatalf("waited %v before asking again, want the 50ms the refusal named", r.d)
	} else {
		r.end()
	}
	again := sc.next(t)
	if again.Type != protocol.TypeSettings || again.ID != f.ID {
		t.Fatalf("asked again as %+v, want the same id %s", again, f.ID)
	}
	sc.write(protocol.EncodeSettings("q-other", false, protocol.PrivacyNobody, nil)) // another request's
	sc.write(protocol.EncodeSettings(f.ID, true, protocol.PrivacyEveryone, []string{"bob"}))
	if err := ended(t, done); err != nil {
		t.Fatal(err)
	}

	done = settingsCall(c, context.Background(), SettingsChange{})
	f = sc.next(t)
	sc.write(protocol.EncodeError(protocol.ErrBadField, "last_seen_privacy must be everyone, contacts or nobody", f.ID, 0, 0))
	var se *ServerError
	if err := ended(t, done); !errors.As(err, &se) || se.Code != protocol.ErrBadField {
		t.Fatalf("refused for good: %v, want bad_field", err)
	}

	// What the gateway would refuse is not written.
	bad := []string{"bob", "not valid"}
	for _, change := range []SettingsChange{{LastSeenPrivacy: "friends"}, {Contacts: &bad}} {
		if _, err := c.Settings(context.Background(), change); !errors.Is(err, ErrBadSettings) {
			t.Fatalf("%+v: %v, want ErrBadSettings", change, err)
		}
	}
	sc.fence(t, c)
}

// A settings change whose connection is lost before its answer is asked
// again on the next one, under the same id; one made while the client
// reconnects waits for it. A call that gives up leaves the next one
// free: no lock outlives its context.
func TestSettingsAskedAgainOnTheNextConnection(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c, sc, connected := s.dialConnectedWith(t, Options{}, w)
	done := settingsCall(c, context.Background(), SettingsChange{})
	f := sc.next(t)
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	r := w.next(t) // disconnected, waiting to reconnect
	ctx, cancel := context.WithCancel(context.Background())
	given := settingsCall(c, ctx, SettingsChange{})
	cancel()
	if err := ended(t, given); !errors.Is(err, context.Canceled) {
		t.Fatalf("a call that gave up: %v", err)
	}
	r.end()
	sc2 := s.accept(t)
	<-connected
	again := sc2.next(t)
	if again.Type != protocol.TypeSettings || again.ID != f.ID {
		t.Fatalf("next frame %+v, want the settings change again under %s", again, f.ID)
	}
	sc2.write(protocol.EncodeSettings(f.ID, true, protocol.PrivacyContacts, nil))
	if err := ended(t, done); err != nil {
		t.Fatal(err)
	}
}

// Settings changes go one at a time, in the order of the calls: one
// asked again (refused for now) is stored before a later one is written,
// so it never undoes it. A gateway that answers without the id (from
// before settings frames had ids) answers the one change asked.
func TestSettingsChangesInTheOrderOfTheCalls(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c, sc, _ := s.dialConnectedWith(t, Options{}, w)
	first := settingsCall(c, context.Background(), SettingsChange{LastSeenPrivacy: protocol.PrivacyNobody})
	f := sc.next(t)
	second := settingsCall(c, context.Background(), SettingsChange{LastSeenPrivacy: protocol.PrivacyEveryone})
	sc.write(protocol.EncodeError(protocol.ErrRateLimited, "too many frames", f.ID, 0, 50))
	w.next(t).end()
	if again := sc.next(t); again.ID != f.ID || again.LastSeenPrivacy != protocol.PrivacyNobody {
		t.Fatalf("next frame %+v, want the first change again before the second", again)
	}
	sc.write(protocol.EncodeSettings("", true, protocol.PrivacyNobody, nil)) // an older gateway's answer
	if err := ended(t, first); err != nil {
		t.Fatal(err)
	}
	if next := sc.next(t); next.Type != protocol.TypeSettings || next.LastSeenPrivacy != protocol.PrivacyEveryone {
		t.Fatalf("next frame %+v, want the second change", next)
	} else {
		sc.write(protocol.EncodeSettings(next.ID, true, protocol.PrivacyEveryone, nil))
	}
	if err := ended(t, second); err != nil {
		t.Fatal(err)
	}
}
