package client

import (
	"container/list"
	"strconv"
)

// lru is a bounded map: adding past its size forgets the oldest key. Not
// safe for concurrent use; the Client's mutex guards it.
type lru struct {
	max   int
	order *list.List
	keys  map[string]*list.Element
}

type lruEntry struct {
	key string
	val uint64
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), keys: map[string]*list.Element{}}
}

func (l *lru) has(k string) bool { _, ok := l.keys[k]; return ok }

// get returns the value stored with k.
func (l *lru) get(k string) (uint64, bool) {
	e, ok := l.keys[k]
	if !ok {
		return 0, false
	}
	return e.Value.(*lruEntry).val, true
}

func (l *lru) add(k string) { l.put(k, 0) }

// put stores k with v unless k is already there.
func (l *lru) put(k string, v uint64) {
	if _, ok := l.keys[k]; ok {
		return
	}
	l.keys[k] = l.order.PushBack(&lruEntry{k, v})
	if l.order.Len() > l.max {
		oldest := l.order.Front()
		l.order.Remove(oldest)
		delete(l.keys, oldest.Value.(*lruEntry).key)
	}
}

// remove forgets k.
func (l *lru) remove(k string) {
	if e, ok := l.keys[k]; ok {
		l.order.Remove(e)
		delete(l.keys, k)
	}
}

func seqKey(seq uint64) string { return strconv.FormatUint(seq, 10) }
