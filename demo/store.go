package demo

import (
	"slices"
	"strconv"
	"sync"
)

// maxItems bounds each collection so a long benchmark or a load test against
// the demo cannot grow its memory without limit; the oldest items go first.
const maxItems = 10000

// collection is an insertion-ordered, concurrency-safe list of items with
// generated ids. Deletion is linear, which is fine at demo sizes.
type collection[T any] struct {
	mu     sync.Mutex
	prefix string
	next   uint64
	items  []entry[T]
}

type entry[T any] struct {
	id   string
	item T
}

func newCollection[T any](prefix string) *collection[T] {
	return &collection[T]{prefix: prefix}
}

// add stores the item built by mk from a fresh id and returns it.
func (c *collection[T]) add(mk func(id string) T) T {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	id := c.prefix + strconv.FormatUint(c.next, 10)
	item := mk(id)
	if len(c.items) >= maxItems {
		// Drop a tenth at once so eviction is amortised, not a copy per add.
		n := copy(c.items, c.items[maxItems/10:])
		clear(c.items[n:])
		c.items = c.items[:n]
	}
	c.items = append(c.items, entry[T]{id: id, item: item})
	return item
}

// list returns a snapshot in insertion order; never nil so it encodes as [].
func (c *collection[T]) list() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]T, len(c.items))
	for i, e := range c.items {
		out[i] = e.item
	}
	return out
}

// remove deletes the item with the id and reports whether it existed.
func (c *collection[T]) remove(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.items {
		if e.id == id {
			// slices.Delete zeroes the vacated slot, so no item is retained.
			c.items = slices.Delete(c.items, i, i+1)
			return true
		}
	}
	return false
}
