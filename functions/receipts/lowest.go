package receipts

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/switchboard-im/switchboard/contract"
)

// positionBounds keeps, per group, the members' positions this instance
// last read. They are lower bounds: a member's position only rises while
// they stay a member (one added again has a new Joined and starts over).
//
// A recompute needs exact positions only for the members that can be a
// track's lowest or second lowest: a member whose bound is above both is
// above them. Read whole, a 1,024-member group's positions were read
// again at each of the 17–44 recomputes a message took, and answering
// those batched reads was 11–13% of the all-in-one's CPU; now a
// recompute reads the members at the bottom, often a few, and the whole
// group only when most of it is there (right after a message, when
// everyone is still at the one before).
type positionBounds struct {
	mu sync.Mutex // guards m; a leaf
	m  map[string]*groupBounds
}

// groupBounds are one group's bounds, for the group as created at
// created (a group deleted and made again starts over).
type groupBounds struct {
	created int64
	pos     map[string]boundPos
}

// boundPos is a member's bound and the Joined it holds for.
type boundPos struct {
	p      contract.GroupPosition
	joined uint64
}

// boundsMaxGroups bounds the groups kept; past it the bounds start over.
const boundsMaxGroups = 256

// load returns g's members' bounds (those it has).
func (b *positionBounds) load(g *contract.GroupRecord) map[string]memberPos {
	pos := make(map[string]memberPos, len(g.Members))
	b.mu.Lock()
	defer b.mu.Unlock()
	gb := b.m[g.ID]
	if gb == nil || gb.created != g.Created {
		return pos
	}
	for m, info := range g.Members {
		if bp, ok := gb.pos[m]; ok && bp.joined == info.Joined {
			pos[m] = memberPos{p: bp.p}
		}
	}
	return pos
}

// store raises g's members' bounds to pos.
func (b *positionBounds) store(g *contract.GroupRecord, pos map[string]memberPos) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]*groupBounds{}
	}
	gb := b.m[g.ID]
	if gb == nil || gb.created != g.Created {
		if gb == nil && len(b.m) >= boundsMaxGroups {
			clear(b.m)
		}
		gb = &groupBounds{created: g.Created, pos: map[string]boundPos{}}
		b.m[g.ID] = gb
	}
	for m, info := range g.Members {
		old, ok := gb.pos[m]
		if !ok || old.joined != info.Joined {
			old = boundPos{joined: info.Joined}
		}
		p := pos[m].p
		old.p.Delivered = max(old.p.Delivered, p.Delivered)
		old.p.Read = max(old.p.Read, p.Read)
		gb.pos[m] = old
	}
	for m := range gb.pos {
		if !g.IsMember(m) {
			delete(gb.pos, m)
		}
	}
}

// lowestPositions returns g's members' positions as nextTrack needs
// them: exact for the members that decide each track's lowest and second
// lowest, and past every position for the others.
//
// It reads the members that may be at the bottom, a sample at a time in
// random order, until on each track two members read are at the lowest
// bound (then the lowest and the second lowest are that bound: nobody is
// below a bound) or every member at or below the second lowest bound has
// been read. Right after a message, when most members are still at the
// one before, a sample settles it; as they ack, their bounds rise.
func (s *Service) lowestPositions(ctx context.Context, g *contract.GroupRecord) (map[string]memberPos, error) {
	b := newMemberBounds(g, s.bounds.load(g))
	var need []int
	for {
		need = b.toRead(need)
		if len(need) == 0 {
			break
		}
		rand.Shuffle(len(need), func(i, j int) { need[i], need[j] = need[j], need[i] })
		need = need[:min(len(need), positionSample)]
		names := make([]string, len(need))
		for k, i := range need {
			names[k] = b.names[i]
		}
		got, err := s.readPositions(ctx, g, names)
		if err != nil {
			return nil, err
		}
		for _, i := range need {
			b.pos[i] = got[b.names[i]]
			b.fresh[i] = true
		}
	}
	pos := make(map[string]memberPos, len(b.names))
	out := make(map[string]memberPos, len(b.names))
	for i, m := range b.names {
		pos[m] = b.pos[i]
		if b.fresh[i] {
			out[m] = b.pos[i]
		} else {
			out[m] = memberPos{p: contract.GroupPosition{Delivered: math.MaxUint64, Read: math.MaxUint64}}
		}
	}
	s.bounds.store(g, pos)
	return out, nil
}

// positionSample is how many members lowestPositions reads at a time.
const positionSample = 32

// memberBounds are a group's members, each with the position
// lowestPositions has for them (a bound, or read: fresh), side by side in
// slices: a recompute goes over every member several times per sample it
// reads, and over a 1,024-member group looking each one up in maps was
// most of the recompute's time.
type memberBounds struct {
	names  []string
	pos    []memberPos
	fresh  []bool
	listed []bool // toRead's scratch
}

func newMemberBounds(g *contract.GroupRecord, pos map[string]memberPos) *memberBounds {
	n := len(g.Members)
	b := &memberBounds{names: make([]string, 0, n), pos: make([]memberPos, n), fresh: make([]bool, n), listed: make([]bool, n)}
	for m := range g.Members {
		b.pos[len(b.names)] = pos[m]
		b.names = append(b.names, m)
	}
	return b
}

// toRead lists, by index into need (emptied first), the members not read
// yet that may decide a track: none for a track where two members read
// are at its lowest bound, else those whose bound is at or below its
// second lowest bound.
func (b *memberBounds) toRead(need []int) []int {
	need = need[:0]
	clear(b.listed)
	n := len(b.pos)
	for _, read := range []bool{false, true} {
		// The lowest and second lowest bounds, ties counted.
		var lo1, lo2 uint64
		for i := range b.pos {
			v := b.pos[i].at(read)
			switch {
			case i == 0:
				lo1, lo2 = v, v
			case v < lo1:
				lo1, lo2 = v, lo1
			case i == 1 || v < lo2:
				lo2 = v
			}
		}
		atBottom := 0
		for i := range b.pos {
			if b.fresh[i] && b.pos[i].at(read) == lo1 {
				atBottom++
			}
		}
		if atBottom >= 2 || (atBottom == 1 && n == 1) {
			continue
		}
		for i := range b.pos {
			if !b.fresh[i] && !b.listed[i] && b.pos[i].at(read) <= lo2 {
				b.listed[i] = true
				need = append(need, i)
			}
		}
	}
	return need
}
