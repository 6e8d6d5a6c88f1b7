package gateway

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/contract"
)

// A checker's reads: each blocks until the test lets it answer.
type heldReads struct {
	asked chan []string
	give  chan readResult
}

type readResult struct {
	records map[string][]byte
	err     error
}

func (h *heldReads) read(users []string) (map[string][]byte, error) {
	h.asked <- users
	r := <-h.give
	return r.records, r.err
}

func devicesRecord(t *testing.T, created time.Time, starts map[string]uint64) []byte {
	t.Helper()
	ds := contract.Devices{Devices: map[string]*contract.Device{}}
	for d, s := range starts {
		ds.Devices[d] = &contract.Device{Start: s, Stream: created}
	}
	b, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Questions asked while a read is under way wait for the next read, which
// asks once for every sender among them; each is answered from its
// sender's record and its own seq: another device counts if it joined at
// or before the message.
func TestOwnCheckGathersQuestionsIntoTheNextRead(t *testing.T) {
	created := time.Now()
	h := &heldReads{asked: make(chan []string), give: make(chan readResult)}
	c := &ownCheck{read: h.read, created: created}
	answers := make(chan string, 8)
	ask := func(user, device string, seq uint64) {
		c.ask(ownQuestion{user: user, device: device, seq: seq, answer: func(other bool) {
			if other {
				answers <- user + "/" + device + ": copy"
			} else {
				answers <- user + "/" + device + ": none"
			}
		}})
	}
	ask("alice", "phone", 10)
	if got := <-h.asked; !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("first read asks %v, want alice", got)
	}
	// Asked while that read is under way: the next read's.
	ask("bob", "phone", 12)
	ask("carol", "phone", 12)
	ask("bob", "laptop", 13)
	ask("dave", "phone", 14)
	h.give <- readResult{records: map[string][]byte{"alice": devicesRecord(t, created, map[string]uint64{"phone": 0, "laptop": 10})}}
	if a := <-answers; a != "alice/phone: copy" {
		t.Fatalf("answer %q: the laptop joined at the message's seq", a)
	}
	if got := <-h.asked; !slices.Equal(got, []string{"bob", "carol", "dave"}) {
		t.Fatalf("second read asks %v, want bob, carol and dave once each", got)
	}
	h.give <- readResult{records: map[string][]byte{
		"bob":   devicesRecord(t, created, map[string]uint64{"phone": 0, "laptop": 13}),
		"carol": devicesRecord(t, created, map[string]uint64{"phone": 0}),
	}}
	var got []string
	for range 4 {
		got = append(got, <-answers)
	}
	want := []string{
		"bob/phone: none",   // the laptop joined after seq 12
		"carol/phone: none", // one device
		"bob/laptop: copy",  // the phone was there
		"dave/phone: none",  // no record
	}
	if !slices.Equal(got, want) {
		t.Fatalf("answers %q, want %q", got, want)
	}
	// A read that fails answers "copy" for the senders it did not read.
	ask("erin", "phone", 20)
	<-h.asked
	h.give <- readResult{err: errors.New("no answer")}
	if a := <-answers; a != "erin/phone: copy" {
		t.Fatalf("answer %q after a failed read, want a copy", a)
	}
}
