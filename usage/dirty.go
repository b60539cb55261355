package usage

import "sync"

const dirtyShards = 64

// dirtySet is the set of counter keys changed since the last flush. The
// proxy marks a key on every metered request, so it is sharded (one mutex
// per shard) and marking a key already in the set allocates nothing.
type dirtySet struct {
	shards [dirtyShards]dirtyShard
}

type dirtyShard struct {
	mu   sync.Mutex
	keys map[string]struct{}
	_    [40]byte // keep neighbouring shards' mutexes off one cache line
}

func (d *dirtySet) mark(key string) {
	sh := &d.shards[shardOf(key)]
	sh.mu.Lock()
	if _, ok := sh.keys[key]; !ok {
		if sh.keys == nil {
			sh.keys = make(map[string]struct{})
		}
		sh.keys[key] = struct{}{}
	}
	sh.mu.Unlock()
}

// drainInto moves every marked key into dst and empties the set.
func (d *dirtySet) drainInto(dst map[string]struct{}) {
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		m := sh.keys
		if len(m) == 0 {
			// Left in place, and not read outside the lock: a Touch may
			// write it any time.
			sh.mu.Unlock()
			continue
		}
		sh.keys = make(map[string]struct{}, len(m))
		sh.mu.Unlock()
		for k := range m {
			dst[k] = struct{}{}
		}
	}
}

// clear forgets every marked key.
func (d *dirtySet) clear() {
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		sh.keys = nil
		sh.mu.Unlock()
	}
}

// shardOf is FNV-1a over the key: cheap and allocation-free.
func shardOf(key string) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % dirtyShards)
}
