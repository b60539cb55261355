package demo

import (
	"sync"
	"testing"
)

func TestCollectionEvictsOldest(t *testing.T) {
	c := newCollection[string]("x_")
	for i := 0; i < maxItems+1; i++ {
		c.add(func(id string) string { return id })
	}
	items := c.list()
	if len(items) > maxItems {
		t.Fatalf("len = %d, want at most %d", len(items), maxItems)
	}
	if last := items[len(items)-1]; last != "x_10001" {
		t.Errorf("newest = %q, want x_10001", last)
	}
	if c.remove("x_1") {
		t.Error("oldest item survived eviction")
	}
}

func TestCollectionConcurrent(t *testing.T) {
	c := newCollection[string]("x_")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				id := c.add(func(id string) string { return id })
				c.list()
				if !c.remove(id) {
					t.Errorf("remove(%q) = false right after add", id)
				}
			}
		}()
	}
	wg.Wait()
	if n := len(c.list()); n != 0 {
		t.Errorf("len = %d after removing everything, want 0", n)
	}
}
