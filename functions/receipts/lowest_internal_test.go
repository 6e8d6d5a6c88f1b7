package receipts

import (
	"slices"
	"testing"

	"github.com/switchboard-im/switchboard/contract"
)

// Only members whose bound is at or below a track's second lowest are
// read; one read already, or above both lowest on both tracks, is not.
func TestBoundsToReadTakesTheBottomOnly(t *testing.T) {
	g := &contract.GroupRecord{ID: "g", Members: map[string]contract.GroupMember{}}
	for _, m := range []string{"a", "b", "c", "d", "e"} {
		g.Members[m] = contract.GroupMember{}
	}
	at := func(d, r uint64) memberPos { return memberPos{p: contract.GroupPosition{Delivered: d, Read: r}} }
	pos := map[string]memberPos{"a": at(5, 1), "b": at(7, 9), "c": at(9, 9), "d": at(9, 9), "e": at(9, 2)}
	got := boundsToRead(g, pos, map[string]bool{})
	slices.Sort(got)
	// Delivered: a (5) and b (7) are the bottom two; read: a (1), e (2).
	if want := []string{"a", "b", "e"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	got = boundsToRead(g, pos, map[string]bool{"a": true, "b": true, "e": true})
	if len(got) != 0 {
		t.Fatalf("read %v again, want none", got)
	}
	// Ties at the bottom are all read; a member without a bound is at 0.
	delete(pos, "d")
	pos["c"] = at(5, 1)
	got = boundsToRead(g, pos, map[string]bool{"a": true})
	slices.Sort(got)
	if want := []string{"c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}

// Two members read at a track's lowest bound settle it: nobody is below
// a bound, so the lowest and the second lowest are that bound.
func TestBoundsToReadStopsAtTwoReadAtTheBottom(t *testing.T) {
	g := &contract.GroupRecord{ID: "g", Members: map[string]contract.GroupMember{}}
	pos := map[string]memberPos{}
	for i := range 100 {
		m := string(rune('A'+i%26)) + string(rune('a'+i/26))
		g.Members[m] = contract.GroupMember{}
		pos[m] = memberPos{p: contract.GroupPosition{Delivered: 3, Read: 3}}
	}
	fresh := map[string]bool{}
	if got := boundsToRead(g, pos, fresh); len(got) != 100 {
		t.Fatalf("nobody read yet: %d to read, want all 100", len(got))
	}
	fresh["Aa"], fresh["Ba"] = true, true
	if got := boundsToRead(g, pos, fresh); len(got) != 0 {
		t.Fatalf("two read at the bottom: %v still to read", got)
	}
	// One of them is past it after all: the bottom is open again.
	pos["Ba"] = memberPos{p: contract.GroupPosition{Delivered: 4, Read: 4}}
	if got := boundsToRead(g, pos, fresh); len(got) != 98 {
		t.Fatalf("one read at the bottom: %d to read, want the 98 not read", len(got))
	}
}

// Bounds hold for the member as they joined: one added again starts over,
// one removed is forgotten, and a group made again starts over.
func TestPositionBoundsFollowMembership(t *testing.T) {
	var b positionBounds
	g := &contract.GroupRecord{ID: "g", Created: 1, Members: map[string]contract.GroupMember{"a": {Joined: 1}, "b": {Joined: 2}}}
	b.store(g, map[string]memberPos{"a": {p: contract.GroupPosition{Delivered: 10, Read: 4}}, "b": {p: contract.GroupPosition{Delivered: 8}}})
	b.store(g, map[string]memberPos{"a": {p: contract.GroupPosition{Delivered: 3}}}) // lower: kept at 10
	if got := b.load(g); got["a"].p.Delivered != 10 || got["a"].p.Read != 4 || got["b"].p.Delivered != 8 {
		t.Fatalf("bounds %+v", got)
	}
	g.Members["b"] = contract.GroupMember{Joined: 3} // removed and added again
	if _, ok := b.load(g)["b"]; ok {
		t.Fatal("a member added again kept the bound of before")
	}
	g2 := &contract.GroupRecord{ID: "g", Created: 2, Members: g.Members}
	if got := b.load(g2); len(got) != 0 {
		t.Fatalf("a group made again kept bounds %+v", got)
	}
}
