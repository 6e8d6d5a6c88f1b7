package contract_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/internal/testkit"
)

// A Caller's requests each get their own answer, on the call prefix,
// however many are in flight; one nobody listens for is told so at once;
// one whose context ends stops waiting, and its late answer goes nowhere.
func TestCallerAnswersEachRequest(t *testing.T) {
	t.Parallel()
	n := testkit.StartStreams(t, t.TempDir())
	calls := n.Caller(t, natsauth.Gateway)
	fn := n.Connect(t, natsauth.Presence)
	late := make(chan *nats.Msg, 1)
	sub, err := fn.Subscribe(contract.PresenceGetSubject, func(m *nats.Msg) {
		if string(m.Data) == "late" {
			late <- m // answered after the asker gave up
			return
		}
		_ = m.Respond(append([]byte("re:"), m.Data...))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := fn.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprint(i)
			m, err := calls.RequestWithContext(ctx, contract.PresenceGetSubject, []byte(want))
			if err != nil || string(m.Data) != "re:"+want {
				errs <- fmt.Errorf("request %s: %v %v", want, m, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	start := time.Now() // no receipts function runs here
	if _, err := calls.RequestWithContext(ctx, contract.StatusSubject, []byte("{}")); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a request nobody listens for: %v, want no responders", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("no responders took %s", d)
	}

	short, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := calls.RequestWithContext(short, contract.PresenceGetSubject, []byte("late"))
		done <- err
	}()
	m := <-late
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a request whose context ended: %v", err)
	}
	_ = m.Respond([]byte("too late"))
	// The next request gets its own answer, not the late one.
	if got, err := calls.RequestWithContext(ctx, contract.PresenceGetSubject, []byte("next")); err != nil || string(got.Data) != "re:next" {
		t.Fatalf("after a late answer: %v %v", got, err)
	}
}
