package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
)

// fakeDevices is DEVICES for a checker: each read reports what it was
// asked and waits until the test lets it answer from the records then
// held, as the server does (only those written at or after from).
type fakeDevices struct {
	created time.Time
	asked   chan readAsked
	give    chan error

	mu      sync.Mutex
	records map[string]fakeRecord
	newest  uint64
}

type readAsked struct {
	users []string
	from  uint64
}

type fakeRecord struct {
	seq  uint64
	body []byte
}

func (d *fakeDevices) read(users []string, from uint64) (map[string][]byte, uint64, error) {
	d.asked <- readAsked{users, from}
	if err := <-d.give; err != nil {
		return nil, 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string][]byte{}
	for _, u := range users {
		if r, ok := d.records[u]; ok && r.seq >= from {
			out[u] = r.body
		}
	}
	return out, d.newest, nil
}

// put writes user's record with devices joined at starts.
func (d *fakeDevices) put(t *testing.T, user string, starts map[string]uint64) {
	t.Helper()
	ds := contract.Devices{Devices: map[string]*contract.Device{}}
	for dev, s := range starts {
		ds.Devices[dev] = &contract.Device{Start: s, Stream: d.created}
	}
	b, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.newest++
	d.records[user] = fakeRecord{d.newest, b}
}

// Questions asked while a read is under way wait for the next round,
// which reads once for every sender among them: those of sessions that
// never found their users alone for whole records, the others from the
// oldest point any of them did. Each is answered from its sender's
// record, if one was written since, and its own seq: another device
// counts if it joined at or before the message. A session learns it is
// alone only when its user has no other device at all.
func TestOwnCheckGathersQuestionsIntoTheNextRead(t *testing.T) {
	d := &fakeDevices{created: time.Now(), asked: make(chan readAsked), give: make(chan error), records: map[string]fakeRecord{}}
	d.put(t, "alice", map[string]uint64{"phone": 0, "laptop": 10}) // 1
	d.put(t, "bob", map[string]uint64{"phone": 0, "laptop": 13})   // 2
	d.put(t, "carol", map[string]uint64{"phone": 0})               // 3
	c := &ownCheck{read: d.read, created: d.created}
	answers := make(chan string, 8)
	ask := func(user, device string, seq, alone uint64) {
		c.ask(ownQuestion{user: user, device: device, seq: seq, alone: alone, answer: func(a ownAnswer) {
			switch {
			case a.other:
				answers <- user + "/" + device + ": copy, another device"
			case a.copy:
				answers <- user + "/" + device + ": copy, unknown"
			default:
				answers <- fmt.Sprintf("%s/%s: no copy, alone as of %d", user, device, a.alone)
			}
		}})
	}
	expectRead := func(users []string, from uint64) {
		t.Helper()
		if got := <-d.asked; !slices.Equal(got.users, users) || got.from != from {
			t.Fatalf("read asks %v from %d, want %v from %d", got.users, got.from, users, from)
		}
	}
	expectAnswers := func(want ...string) {
		t.Helper()
		var got []string
		for range want {
			got = append(got, <-answers)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("answers %q, want %q", got, want)
		}
	}

	ask("alice", "phone", 10, 0)
	expectRead([]string{"alice"}, 1)
	// Asked while that read is under way: the next round's.
	ask("bob", "phone", 12, 0)
	ask("carol", "phone", 12, 3)
	ask("bob", "laptop", 13, 0)
	ask("dave", "phone", 14, 0)
	d.give <- nil
	expectAnswers("alice/phone: copy, another device") // the laptop joined at the message's seq
	expectRead([]string{"bob", "dave"}, 1)
	d.give <- nil
	expectAnswers(
		"bob/phone: no copy, alone as of 0",  // the laptop joined after seq 12: not alone
		"bob/laptop: copy, another device",   // the phone was there
		"dave/phone: no copy, alone as of 3", // no record
	)
	expectRead([]string{"carol"}, 4)
	d.give <- nil
	expectAnswers("carol/phone: no copy, alone as of 3") // not written since

	// bob's phone, not alone, reads the record again: its next message
	// is the laptop's first.
	ask("bob", "phone", 13, 0)
	expectRead([]string{"bob"}, 1)
	d.give <- nil
	expectAnswers("bob/phone: copy, another device")

	// A record written since the session found its user alone is read.
	d.put(t, "erin", map[string]uint64{"phone": 0})                // 4: another user's device
	d.put(t, "carol", map[string]uint64{"phone": 0, "tablet": 16}) // 5: carol's second
	ask("carol", "phone", 16, 3)
	expectRead([]string{"carol"}, 4)
	d.give <- nil
	expectAnswers("carol/phone: copy, another device")

	// A read that fails: copied, and nothing learnt.
	ask("erin", "phone", 20, 4)
	expectRead([]string{"erin"}, 5)
	d.give <- errors.New("no answer")
	expectAnswers("erin/phone: copy, unknown")
}

// changed is the checker's first look for a round of sessions that found
// their users alone: it reports the point asked from (since) and answers
// from the records then held, or fails with fail.
func (d *fakeDevices) changed(looked chan<- uint64, fail *error) func(uint64) (bool, error) {
	return func(since uint64) (bool, error) {
		looked <- since
		d.mu.Lock()
		defer d.mu.Unlock()
		if *fail != nil {
			return false, *fail
		}
		return d.newest > since, nil
	}
}

// A round of sessions that all found their users alone first looks for
// any record written since the oldest of their points: with none, each
// is answered alone as of its own point and no sender's record is read;
// with one (whoever's), the senders' records are read as before; a look
// the bucket did not answer is answered "copy", as a failed read is.
// Sessions that never found their users alone skip it.
func TestOwnCheckLooksForAnyChangeFirst(t *testing.T) {
	d := &fakeDevices{created: time.Now(), asked: make(chan readAsked), give: make(chan error), records: map[string]fakeRecord{}}
	d.put(t, "alice", map[string]uint64{"phone": 0}) // 1
	d.put(t, "bob", map[string]uint64{"phone": 0})   // 2
	looked := make(chan uint64, 8)
	var fail error
	c := &ownCheck{read: d.read, changed: d.changed(looked, &fail), created: d.created}
	answers := make(chan string, 8)
	ask := func(user string, seq, alone uint64) {
		c.ask(ownQuestion{user: user, device: "phone", seq: seq, alone: alone, answer: func(a ownAnswer) {
			switch {
			case a.other:
				answers <- user + ": copy, another device"
			case a.copy:
				answers <- user + ": copy, unknown"
			default:
				answers <- fmt.Sprintf("%s: no copy, alone as of %d", user, a.alone)
			}
		}})
	}
	expectLook := func(since uint64) {
		t.Helper()
		if got := <-looked; got != since {
			t.Fatalf("looked past %d, want %d", got, since)
		}
	}
	expectRead := func(users []string, from uint64) {
		t.Helper()
		if got := <-d.asked; !slices.Equal(got.users, users) || got.from != from {
			t.Fatalf("read asks %v from %d, want %v from %d", got.users, got.from, users, from)
		}
	}
	expectAnswer := func(want string) {
		t.Helper()
		if got := <-answers; got != want {
			t.Fatalf("answer %q, want %q", got, want)
		}
	}

	// Never found alone: no look, the whole record is read.
	ask("alice", 5, 0)
	expectRead([]string{"alice"}, 1)
	d.give <- nil
	expectAnswer("alice: no copy, alone as of 2")

	// Alone as of 2, nothing written since: answered from the look.
	ask("alice", 6, 2)
	expectLook(2)
	expectAnswer("alice: no copy, alone as of 2")

	// Another user's device joins: the look finds it, and alice's record
	// is read, from the same point.
	d.put(t, "carol", map[string]uint64{"phone": 0}) // 3
	ask("alice", 7, 2)
	expectLook(2)
	expectRead([]string{"alice"}, 3)
	d.give <- nil
	expectAnswer("alice: no copy, alone as of 3")

	// alice's laptop joins at seq 8: found and read.
	d.put(t, "alice", map[string]uint64{"phone": 0, "laptop": 8}) // 4
	ask("alice", 8, 3)
	expectLook(3)
	expectRead([]string{"alice"}, 4)
	d.give <- nil
	expectAnswer("alice: copy, another device")

	// A look the bucket did not answer: copied, nothing read or learnt.
	fail = errors.New("no answer")
	ask("bob", 9, 4)
	expectLook(4)
	expectAnswer("bob: copy, unknown")
	select {
	case from := <-looked:
		t.Fatalf("an extra look past %d", from)
	case r := <-d.asked:
		t.Fatalf("a read of %v after the look failed", r.users)
	default:
	}
}
