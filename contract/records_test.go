package contract_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
)

// A direct get nobody answers ends Waiting within its bound, even for a
// caller whose context has none (the push function's workers). The
// server here has no JetStream; a subscriber takes the request and keeps
// it, as a server that never answers would.
func TestWaitingIsBoundedWhenNobodyAnswers(t *testing.T) {
	t.Parallel()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe(contract.DirectGetSubject(contract.Inbox), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := contract.Waiting(context.Background(), nc, "bob", 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an unanswered direct get was taken for an answer")
		}
	case <-time.After(contract.WaitingTimeout + 10*time.Second):
		t.Fatalf("Waiting still waits %v after an unanswered request", contract.WaitingTimeout+10*time.Second)
	}
}
