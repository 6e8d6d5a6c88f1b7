package client

import (
	"container/list"
	"sort"
	"strconv"
)

// lru is a bounded set: adding past its size forgets the oldest key. Not
// safe for concurrent use; the Client's mutex guards it.
type lru struct {
	max   int
	order *list.List
	keys  map[string]*list.Element
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), keys: map[string]*list.Element{}}
}

func (l *lru) has(k string) bool { _, ok := l.keys[k]; return ok }

func (l *lru) add(k string) {
	if _, ok := l.keys[k]; ok {
		return
	}
	l.keys[k] = l.order.PushBack(k)
	if l.order.Len() > l.max {
		oldest := l.order.Front()
		l.order.Remove(oldest)
		delete(l.keys, oldest.Value.(string))
	}
}

func seqKey(seq uint64) string { return strconv.FormatUint(seq, 10) }

func sortBySeq(o []*outgoing) { sort.Slice(o, func(i, j int) bool { return o[i].seq < o[j].seq }) }
