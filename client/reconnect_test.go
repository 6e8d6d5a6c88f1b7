package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

// Each wait before a reconnect attempt is a random time up to a bound that
// starts at MinBackoff, doubles after each failed attempt up to
// MaxBackoff, and starts again after a connect.
func TestReconnectBackoffGrowsWithJitterAndResets(t *testing.T) {
	s := newScript(t)
	w := newWaiter(true)
	connected := make(chan string, 16)
	c := s.dial(t, Options{MinBackoff: 100 * time.Millisecond, MaxBackoff: 800 * time.Millisecond,
		OnConnect: func(session string) { connected <- session }}, w)
	sc := s.accept(t)
	<-s.auths

	s.refuse.Store(6) // six attempts refused with 503, the seventh connects
	sc.closeWith(protocol.CloseServiceRestart, "gateway shutting down")
	sc = s.accept(t)
	bounds := []time.Duration{100, 200, 400, 800, 800, 800, 800}
	var capped []time.Duration
	for i, bound := range bounds {
		d := w.next(t).d
		if d < time.Millisecond || d > bound*time.Millisecond {
			t.Fatalf("wait %d: %s, want 1ms..%dms", i+1, d, bound)
		}
		if bound == 800 {
			capped = append(capped, d)
		}
	}
	if len(s.auths) != len(bounds) {
		t.Fatalf("%d attempts after %d waits", len(s.auths), len(bounds))
	}
	// Jitter: the waits drawn under the same bound differ.
	distinct := map[time.Duration]bool{}
	for _, d := range capped {
		distinct[d] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("waits under the 800ms bound are all %s: no jitter", capped[0])
	}

	// Connected again: the next loss starts from MinBackoff.
	sc.closeWith(protocol.CloseGoingAway, "")
	s.accept(t)
	if d := w.next(t).d; d < time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("wait after a connect: %s, want 1ms..100ms", d)
	}
	for _, want := range []string{"session-1", "session-2", "session-3"} {
		select {
		case got := <-connected:
			if got != want {
				t.Fatalf("OnConnect(%q), want %q", got, want)
			}
		case <-time.After(stuck):
			t.Fatalf("no OnConnect for %s", want)
		}
	}
	if c.Stats().Connects != 3 {
		t.Fatalf("Connects = %d, want 3", c.Stats().Connects)
	}
}

// What the client does on each close code follows protocol.Closes: a code
// whose row says "reconnect: no" stops it with a *CloseError naming the
// code (4002 also matches ErrReplaced), and a pending send fails with it;
// any other close, a code the table does not know, or a connection lost
// without a close frame reconnects, and the pending send is resent.
func TestCloseCodesFollowTheRegistry(t *testing.T) {
	type tc struct {
		code      int // 0: the TCP connection just drops
		reason    string
		reconnect bool
	}
	var cases []tc
	for _, info := range protocol.Closes {
		cases = append(cases, tc{info.Code, "scripted " + info.Name, info.Reconnect})
	}
	cases = append(cases, tc{4999, "a code from a later version", true}, tc{0, "", true})
	for _, k := range cases {
		t.Run(strconv.Itoa(k.code), func(t *testing.T) {
			s := newScript(t)
			c := s.dial(t, Options{}, newWaiter(true))
			sc := s.accept(t)
			m1 := queue(t, c, "m1")
			sc.expectSends(t, "m1")
			if k.code == 0 {
				sc.ws.Close()
			} else {
				sc.closeWith(k.code, k.reason)
			}

			if k.reconnect {
				sc2 := s.accept(t)
				sc2.expectSends(t, "m1")
				sc2.sent("m1", 1)
				if s, err := outcome(t, c, m1); err != nil || s.Seq != 1 {
					t.Fatalf("m1 after the reconnect: %+v %v", s, err)
				}
				select {
				case <-c.Done():
					t.Fatalf("client stopped: %v", c.Err())
				default:
				}
				return
			}

			select {
			case <-c.Done():
			case <-time.After(stuck):
				t.Fatal("client did not stop")
			}
			err := c.Err()
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != k.code || ce.Reason != k.reason {
				t.Fatalf("Err() = %#v, want a CloseError with %d %q", err, k.code, k.reason)
			}
			if !strings.Contains(err.Error(), strconv.Itoa(k.code)) {
				t.Fatalf("%q does not name the code", err)
			}
			if got := errors.Is(err, ErrReplaced); got != (k.code == protocol.CloseReplaced) {
				t.Fatalf("errors.Is(%v, ErrReplaced) = %v", err, got)
			}
			if _, err := outcome(t, c, m1); !errors.As(err, &ce) {
				t.Fatalf("pending send: %v, want the CloseError", err)
			}
			if _, err := c.Send(context.Background(), "bob", "m2", []byte(`"m2"`)); !errors.As(err, &ce) {
				t.Fatalf("Send after the stop: %v, want the CloseError", err)
			}
			_ = c.Close() // returns once the connection loop has ended
			if n := len(s.auths); n != 1 {
				t.Fatalf("%d connection attempts, want 1", n)
			}
		})
	}
}

// A 1008 token_expired close reconnects, asking Options.Token again, so
// the next connection carries a fresh token.
func TestTokenExpiredReconnectsWithAFreshToken(t *testing.T) {
	s := newScript(t)
	n := 0
	tokens := func(context.Context) (string, error) {
		n++ // called by Dial, then by the connection loop: never at once
		return fmt.Sprintf("tok-%d", n), nil
	}
	s.dial(t, Options{Token: tokens}, newWaiter(true))
	sc := s.accept(t)
	if got := <-s.auths; got != "Bearer tok-1" {
		t.Fatalf("first connection: Authorization %q", got)
	}
	sc.closeWith(protocol.ClosePolicy, protocol.ReasonTokenExpired)
	s.accept(t)
	if got := <-s.auths; got != "Bearer tok-2" {
		t.Fatalf("after token_expired: Authorization %q, want Bearer tok-2", got)
	}
}
