package receipts

import (
	"math/rand/v2"
	"slices"
	"strconv"
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

// boundsToRead is toRead by member name, for the tests.
func boundsToRead(g *contract.GroupRecord, pos map[string]memberPos, fresh map[string]bool) []string {
	b := newMemberBounds(g, pos)
	for i, m := range b.names {
		b.fresh[i] = fresh[m]
	}
	var out []string
	for _, i := range b.toRead(nil) {
		out = append(out, b.names[i])
	}
	return out
}

// boundsToReadByMaps is toRead as it was written first, over maps: the
// rule stated once more, plainly, for toRead to be checked against.
func boundsToReadByMaps(g *contract.GroupRecord, pos map[string]memberPos, fresh map[string]bool) []string {
	var need []string
	listed := map[string]bool{}
	for _, read := range []bool{false, true} {
		var lo1, lo2 uint64
		n := 0
		for m := range g.Members {
			v := pos[m].at(read)
			switch {
			case n == 0 || v < lo1:
				lo1, lo2 = v, lo1
				if n == 0 {
					lo2 = v
				}
			case n == 1 || v < lo2:
				lo2 = v
			}
			n++
		}
		atBottom := 0
		for m := range g.Members {
			if fresh[m] && pos[m].at(read) == lo1 {
				atBottom++
			}
		}
		if atBottom >= 2 || (atBottom == 1 && n == 1) {
			continue
		}
		for m := range g.Members {
			if !fresh[m] && !listed[m] && pos[m].at(read) <= lo2 {
				listed[m] = true
				need = append(need, m)
			}
		}
	}
	return need
}

// randomBounds is a group of n members with positions from a few values,
// so ties are common, some members without a bound, and some read.
func randomBounds(r *rand.Rand, n int) (*contract.GroupRecord, map[string]memberPos, map[string]bool) {
	g := &contract.GroupRecord{ID: "g", Members: map[string]contract.GroupMember{}}
	pos, fresh := map[string]memberPos{}, map[string]bool{}
	for i := range n {
		m := "m" + strconv.Itoa(i)
		g.Members[m] = contract.GroupMember{}
		if r.IntN(8) > 0 {
			pos[m] = memberPos{p: contract.GroupPosition{Delivered: r.Uint64N(5), Read: r.Uint64N(4)}}
		}
		fresh[m] = r.IntN(3) == 0
	}
	return g, pos, fresh
}

// The members toRead lists are those the rule names, for groups of every
// size from one member up, whatever the ties and reads.
func TestToReadListsWhatTheRuleNames(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for k := range 5000 {
		g, pos, fresh := randomBounds(r, 1+k%40)
		got, want := boundsToRead(g, pos, fresh), boundsToReadByMaps(g, pos, fresh)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("case %d (%d members): toRead lists %v, the rule %v", k, len(g.Members), got, want)
		}
	}
}

// One recompute's pass over a 1,024-member group right after a message:
// everyone at the bottom, a sample read.
func BenchmarkToRead(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	g, pos, _ := randomBounds(r, 1024)
	for m := range g.Members {
		pos[m] = memberPos{p: contract.GroupPosition{Delivered: 7, Read: 7}}
	}
	fresh := map[string]bool{}
	b.Run("maps", func(b *testing.B) {
		for b.Loop() {
			boundsToReadByMaps(g, pos, fresh)
		}
	})
	b.Run("slices", func(b *testing.B) {
		mb := newMemberBounds(g, pos)
		var need []int
		for b.Loop() {
			need = mb.toRead(need)
		}
	})
}
