package quota

import (
	"hash/maphash"
	"sync/atomic"
)

// go-redis takes command arguments as []any, and putting a string or a
// large int64 into an interface allocates. The exact-mode hot path sends
// the same tenant keys and TTLs over and over, so it keeps them boxed in
// small direct-mapped caches: a hit costs a hash and a compare, a miss (a
// collision or a new tenant) costs the allocations the plain path would
// have made anyway. Keys and TTLs are pure functions of their text or
// value, so the caches are shared by every Store and need no invalidation.
// Fixed sizes bound their memory whatever the number of tenants.

const (
	strCacheSlots = 1 << 13
	intCacheSlots = 1 << 8
)

var (
	strCache  [strCacheSlots]atomic.Value // each holds an any(string)
	intCache  [intCacheSlots]atomic.Value // each holds an any(int64)
	cacheSeed = maphash.MakeSeed()
)

// boxedString returns b as a string and as an interface, both shared with
// earlier calls for the same bytes when the cache still holds them.
func boxedString(b []byte) (string, any) {
	slot := &strCache[maphash.Bytes(cacheSeed, b)&(strCacheSlots-1)]
	if v := slot.Load(); v != nil {
		// string(b) in a comparison does not allocate.
		if s := v.(string); s == string(b) {
			return s, v
		}
	}
	s := string(b)
	v := any(s)
	slot.Store(v)
	return s, v
}

// boxedInt returns n as an interface, shared with earlier calls for the
// same value when the cache still holds it. Go already shares 0..255.
func boxedInt(n int64) any {
	if n >= 0 && n < 256 {
		return n
	}
	slot := &intCache[uint64(n)&(intCacheSlots-1)]
	if v := slot.Load(); v != nil && v.(int64) == n {
		return v
	}
	v := any(n)
	slot.Store(v)
	return v
}
