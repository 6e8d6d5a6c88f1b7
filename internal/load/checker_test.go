package load

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
)

// handlerEnv is an env with a ledger for one sender, and one connected
// device (recipient 1's), whose handlers a test calls directly.
func handlerEnv(t *testing.T) (*env, *device) {
	t.Helper()
	tg := target(t)
	cfg := tiny(ScenarioPairs).withDefaults()
	e := &env{cfg: cfg, target: tg, run: runID(), errs: newErrorCounts()}
	e.fleet = newFleet(tg, cfg, e.run, e.errs)
	e.ledger = newLedger(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := e.fleet.dial(ctx, e.fleet.user("r", 1), 16, handlers{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.fleet.closeRest)
	return e, d
}

// A message the app gets twice under the same sequence is counted as
// duplicated, not also as reordered.
func TestDuplicateIsNotAlsoReordered(t *testing.T) {
	e, d := handlerEnv(t)
	l := e.ledger
	now := time.Now()
	n := l.begin(0, 1, now, true)
	l.confirmed(0, n, 5, now)
	h := e.recipientHandlers(1, map[string]int{"alice": 0}, &inbox{}, nil)
	m := client.Message{ID: msgID(n), From: "alice", Seq: 5, Body: putBody(make([]byte, 64), now)}
	h.msg(d, m)
	h.msg(d, m) // the same stored message again
	c := l.count()
	if c.Duplicated != 1 || c.Reordered != 0 {
		t.Fatalf("one duplicate: duplicated %d, reordered %d (want 1, 0)", c.Duplicated, c.Reordered)
	}
}

// Alice's message to recipient 0 that reaches recipient 1's device
// instead is not counted as delivered: it stays lost for recipient 0 and
// is a foreign message for recipient 1.
func TestMisdeliveredMessageIsCaught(t *testing.T) {
	e, d := handlerEnv(t)
	l := e.ledger
	now := time.Now()
	n := l.begin(0, 0, now, true) // to recipient 0
	l.confirmed(0, n, 5, now)
	h := e.recipientHandlers(1, map[string]int{"alice": 0}, &inbox{}, nil)
	h.msg(d, client.Message{ID: msgID(n), From: "alice", Seq: 5, Body: putBody(make([]byte, 64), now)})
	c := l.count()
	errs, _ := e.errs.snapshot()
	if c.Delivered != 0 || c.Lost != 1 || errs["foreign_message"] != 1 {
		t.Fatalf("a message delivered to the wrong recipient passed the checker: %+v, errors %v, owed %d",
			c, errs, l.owedMsgs.Load())
	}
}
