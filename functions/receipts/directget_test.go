package receipts_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
)

// Direct gets made at once share one reply subscription: each gets its
// own answers, all of them, and a get given up leaves nothing behind
// for the next.
func TestDirectGetsAtOnceGetTheirOwnAnswers(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv := groupTicksKV(ctx, t, e)
	const gets, keysPerGet = 64, 5
	key := func(g, k int) string { return fmt.Sprintf("g%d.m%d", g, k) }
	for g := range gets {
		for k := range keysPerGet {
			if _, err := kv.PutString(ctx, key(g, k), fmt.Sprint(g*100+k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A get given up at once: whatever of it comes late goes nowhere.
	gone, stop := context.WithCancel(ctx)
	stop()
	_, _ = s.LastValues(gone, []string{key(0, 0), key(1, 0)})

	var wg sync.WaitGroup
	errs := make(chan error, gets)
	for g := range gets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys := make([]string, keysPerGet)
			for k := range keys {
				keys[k] = key(g, k)
			}
			got, err := s.LastValues(ctx, keys)
			if err != nil {
				errs <- err
				return
			}
			if len(got) != keysPerGet {
				errs <- fmt.Errorf("get %d: %d answers, want %d: %v", g, len(got), keysPerGet, got)
				return
			}
			for k := range keysPerGet {
				subj := contract.KVSubject(contract.GroupTicksKV, key(g, k))
				if want := fmt.Sprint(g*100 + k); got[subj] != want {
					errs <- fmt.Errorf("get %d: %s is %q, want %q", g, subj, got[subj], want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The settle's leader reads see a record's value and revision, and no
// record where there is none or it was deleted.
func TestLeaderReadsSeeRecordsAndDeletes(t *testing.T) {
	e := newEnv(t)
	s, _ := e.instance(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := groupTicksKV(ctx, t, e)
	rev, err := kv.PutString(ctx, "g.alice", `{"d":3}`)
	if err != nil {
		t.Fatal(err)
	}
	if v, got, err := s.LeaderTick(ctx, "g.alice"); err != nil || string(v) != `{"d":3}` || got != rev {
		t.Fatalf("read %q at %d, %v; want {\"d\":3} at %d", v, got, err, rev)
	}
	if _, _, err := s.LeaderTick(ctx, "g.bob"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a key never written: %v, want not found", err)
	}
	if err := kv.Delete(ctx, "g.alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LeaderTick(ctx, "g.alice"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a deleted key: %v, want not found", err)
	}
}

// groupTicksKV is GROUP_TICKS, on a connection in the receipts
// function's role.
func groupTicksKV(ctx context.Context, t *testing.T, e *env) jetstream.KeyValue {
	t.Helper()
	js, _ := jetstream.New(e.n.Connect(t, natsauth.Receipts))
	kv, err := js.KeyValue(ctx, contract.GroupTicksKV)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
