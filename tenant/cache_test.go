package tenant

import (
	"fmt"
	"testing"
)

func TestCacheGetPutExpiry(t *testing.T) {
	c := newCache(1024)
	_, ok, gen := c.getString("a", 100)
	if ok {
		t.Fatal("hit on empty cache")
	}
	c.put("a", entry{tenant: "t1", expires: 200}, gen, 100)
	tests := []struct {
		now  int64
		want bool
	}{{100, true}, {199, true}, {200, false}, {300, false}}
	for _, tt := range tests {
		e, ok, _ := c.get([]byte("a"), tt.now)
		if ok != tt.want || (ok && e.tenant != "t1") {
			t.Errorf("now=%d: got %+v, %v; want hit=%v", tt.now, e, ok, tt.want)
		}
	}
}

// An invalidation landing between a miss and the store of its answer must
// win: otherwise a revoked key could be cached again for a full TTL.
func TestCacheInvalidationBeatsInFlightLookup(t *testing.T) {
	tests := []struct {
		name       string
		invalidate func(c *cache)
	}{
		{"key", func(c *cache) { c.evictKey("k") }},
		{"tenant", func(c *cache) { c.evictTenant("t1") }},
		{"reset", func(c *cache) { c.reset() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(1024)
			_, _, gen := c.getString("k", 0)
			tt.invalidate(c)
			c.put("k", entry{tenant: "t1", expires: 10}, gen, 0)
			if _, ok, _ := c.getString("k", 0); ok {
				t.Fatal("stale answer stored after invalidation")
			}
		})
	}
}

func TestCacheEvictTenant(t *testing.T) {
	c := newCache(1024)
	put := func(k, tid string) {
		_, _, gen := c.getString(k, 0)
		c.put(k, entry{tenant: tid, expires: 10}, gen, 0)
	}
	put("hash1", "t1")
	put("hash2", "t1")
	put("hash3", "t2")
	put("t1", "t1")
	put("t3", "") // negative
	c.evictTenant("t1")
	c.evictTenant("t3")
	for k, want := range map[string]bool{"hash1": false, "hash2": false, "hash3": true, "t1": false, "t3": false} {
		if _, ok, _ := c.getString(k, 0); ok != want {
			t.Errorf("%s: present=%v, want %v", k, ok, want)
		}
	}
}

func TestCacheBounded(t *testing.T) {
	const max = 256
	c := newCache(max)
	for i := range 20 * max {
		k := fmt.Sprintf("garbage-%d", i)
		_, _, gen := c.getString(k, 0)
		c.put(k, entry{expires: 10}, gen, 0)
	}
	if n := c.len(); n > max {
		t.Fatalf("cache holds %d entries, bound is %d", n, max)
	}
	// Expired entries are the first to go.
	c.reset()
	for i := range max / numShards * numShards {
		k := fmt.Sprintf("old-%d", i)
		_, _, gen := c.getString(k, 0)
		c.put(k, entry{expires: 5}, gen, 0)
	}
	_, _, gen := c.getString("fresh", 6)
	c.put("fresh", entry{tenant: "t", expires: 100}, gen, 6)
	if _, ok, _ := c.getString("fresh", 6); !ok {
		t.Fatal("fresh entry not stored in a full shard")
	}
}
