package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// CountInbox counts the messages stored in user's inbox whose headers
// match, read through an ordered consumer of js (the operator's).
func CountInbox(t testing.TB, js jetstream.JetStream, user string, match func(nats.Header) bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "INBOX", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"inbox." + user}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for left := int(info.NumPending); left > 0; left-- {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if match(m.Headers()) {
			n++
		}
	}
	return n
}
