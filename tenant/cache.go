package tenant

import (
	"sync"
)

const (
	numShards = 64
	// evictScan bounds the work of making room in a full shard.
	evictScan = 8
)

// entry is one cached answer. An empty tenant is a cached "no such
// key/tenant".
type entry struct {
	tenant  string
	expires int64 // unix nanos of the coarse clock
}

// shard is padded to its own cache lines so readers of different shards do
// not contend on the RWMutex's reader count.
type shard struct {
	mu sync.RWMutex
	// gen changes whenever entries are invalidated. A lookup that missed
	// remembers it and only stores its Redis answer if it is unchanged, so an
	// invalidation that lands while the answer is in flight is not undone.
	gen uint64
	m   map[string]entry
	_   [88]byte
}

// cache maps keys to tenants with bounded memory: each shard holds at most
// perShard entries, so a flood of distinct garbage credentials can evict
// useful entries but never grow memory.
type cache struct {
	shards   [numShards]shard
	perShard int
}

func newCache(maxEntries int) *cache {
	per := max(maxEntries/numShards, 1)
	c := &cache{perShard: per}
	for i := range c.shards {
		c.shards[i].m = make(map[string]entry, min(per, 64))
	}
	return c
}

// shardOf is FNV-1a, good enough to spread keys and free of allocation.
func shardOf[T string | []byte](k T) int {
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return int(h % numShards)
}

// get returns the live entry for k and the shard generation to pass to put
// on a miss. It does not allocate.
func (c *cache) get(k []byte, now int64) (entry, bool, uint64) {
	s := &c.shards[shardOf(k)]
	s.mu.RLock()
	e, ok := s.m[string(k)]
	gen := s.gen
	s.mu.RUnlock()
	if !ok || e.expires <= now {
		return entry{}, false, gen
	}
	return e, true, gen
}

// getString is get for a string key.
func (c *cache) getString(k string, now int64) (entry, bool, uint64) {
	s := &c.shards[shardOf(k)]
	s.mu.RLock()
	e, ok := s.m[k]
	gen := s.gen
	s.mu.RUnlock()
	if !ok || e.expires <= now {
		return entry{}, false, gen
	}
	return e, true, gen
}

// put stores e under k unless the shard was invalidated since gen was read.
func (c *cache) put(k string, e entry, gen uint64, now int64) {
	s := &c.shards[shardOf(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	if _, exists := s.m[k]; !exists && len(s.m) >= c.perShard {
		s.makeRoom(now)
	}
	s.m[k] = e
}

// makeRoom drops expired entries among the first few the (randomised) map
// iteration yields, or one arbitrary entry if none had expired.
func (s *shard) makeRoom(now int64) {
	var victim string
	dropped, seen := 0, 0
	for k, e := range s.m {
		if seen == 0 {
			victim = k
		}
		if e.expires <= now {
			delete(s.m, k)
			dropped++
		}
		seen++
		if seen >= evictScan {
			break
		}
	}
	if dropped == 0 {
		delete(s.m, victim)
	}
}

// evictKey forgets k.
func (c *cache) evictKey(k string) {
	s := &c.shards[shardOf(k)]
	s.mu.Lock()
	s.gen++
	delete(s.m, k)
	s.mu.Unlock()
}

// evictTenant forgets every entry keyed by or resolving to tenantID. It scans
// the whole cache; invalidations are rare and the cache is bounded.
func (c *cache) evictTenant(tenantID string) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		for k, e := range s.m {
			if k == tenantID || e.tenant == tenantID {
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// reset forgets everything.
func (c *cache) reset() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		clear(s.m)
		s.mu.Unlock()
	}
}

// len counts entries, for tests and metrics.
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
