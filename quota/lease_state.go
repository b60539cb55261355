package quota

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// leaseState is this instance's lease of one tenant's lease-mode feature in
// one billing period. Requests take units from avail with atomic operations
// only; a Redis call happens when avail runs short, when the lease gets
// stale, and once per lease interval from the background flush.
//
// Accounting: the instance's field in the lease hash always covers
// avail + used (+ units moving between them), so committed usage plus all
// live leases bounds everything any instance may admit.
type leaseState struct {
	key    string // counter key; also the table key
	lkey   string // lease hash tg:{tid}:lease:<feature>:<period start>
	ent    string
	field  string // this state's field in lkey: instance id and a sequence
	tenant string
	fi     *featureInfo
	anchor any       // boxed anchor the period was computed with
	end    time.Time // period end (Reset)

	avail      atomic.Int64 // leased units not yet handed out
	used       atomic.Int64 // units handed out, net of releases, since the last report
	taken      atomic.Int64 // units handed out since the last lease call (rate)
	validUntil atomic.Int64 // mono ns; avail and snap are not used after it
	lastUse    atomic.Int64 // mono ns of the last Reserve, for idle detection
	gen        atomic.Uint64
	snap       atomic.Pointer[leaseSnap]
	retired    atomic.Bool

	// mu makes lease calls single-flight: the request that finds avail
	// short calls Redis, the others wait for it (one round trip) and then
	// use its grant. Fields below are guarded by mu.
	mu       sync.Mutex
	seq      uint64
	retry    *leaseCall // a call whose reply was lost; re-sent unchanged
	rate     float64    // admitted units per second, EWMA
	lastCall int64      // mono ns when the last successful call started
}

// leaseSnap is what the last successful lease call learnt about the tenant.
type leaseSnap struct {
	used    int64 // committed usage after the call's report
	others  int64 // units leased to other instances
	limit   int64
	ceiling int64
	plan    string
	flags   string // '1'/'0' per Store.flagFields
	// refused: the call wanted units and none (or fewer than its request
	// needed) were available.
	refused bool
}

// leaseCall is one lease script call's input, kept for a retry with the
// same sequence number when its reply is lost.
type leaseCall struct {
	seq                            uint64
	consumed, returned, want, need int64
}

// take hands out n units if avail holds them.
func (ls *leaseState) take(n int64) bool {
	for range 64 {
		a := ls.avail.Load()
		if a < n {
			return false
		}
		if ls.avail.CompareAndSwap(a, a-n) {
			ls.used.Add(n)
			ls.taken.Add(n)
			return true
		}
	}
	// Heavy contention: report "short" and let the caller go through the
	// single-flight path, which always makes progress.
	return false
}

// giveBack returns n handed-out units (a released request).
func (ls *leaseState) giveBack(n int64) {
	ls.used.Add(-n)
	ls.avail.Add(n)
}

// current is the usage estimate reported in decisions: committed usage,
// every other instance's lease counted as used, and this instance's
// unreported usage.
func (ls *leaseState) current(sn *leaseSnap) int64 {
	return sn.used + sn.others + ls.used.Load()
}

// idle reports whether the state holds nothing and has not been used since
// before cutoff, so it can be dropped.
func (ls *leaseState) idle(cutoff int64) bool {
	return ls.retry == nil && ls.avail.Load() == 0 && ls.used.Load() == 0 &&
		ls.taken.Load() == 0 && ls.lastUse.Load() < cutoff
}

// monoBase anchors mono; lease timing uses the monotonic clock, not the
// store's (settable) period clock.
var monoBase = time.Now()

func mono() int64 { return int64(time.Since(monoBase)) }

// leaseShards spreads the lease table's lock over independent maps.
const leaseShards = 32

type leaseShard struct {
	mu sync.RWMutex
	m  map[string]*leaseState
}

type leaseTable struct {
	shards [leaseShards]leaseShard
}

var shardSeed = maphash.MakeSeed()

func shardOf(key []byte) uint32 {
	return uint32(maphash.Bytes(shardSeed, key) % leaseShards)
}

// get returns the state for key, or nil. string(key) in a map index does
// not allocate.
func (t *leaseTable) get(key []byte) *leaseState {
	sh := &t.shards[shardOf(key)]
	sh.mu.RLock()
	ls := sh.m[string(key)]
	sh.mu.RUnlock()
	return ls
}

// getOrAdd returns the state for key, creating it with mk when missing.
func (t *leaseTable) getOrAdd(key []byte, mk func() *leaseState) *leaseState {
	if ls := t.get(key); ls != nil {
		return ls
	}
	sh := &t.shards[shardOf(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if ls := sh.m[string(key)]; ls != nil {
		return ls
	}
	if sh.m == nil {
		sh.m = make(map[string]*leaseState)
	}
	ls := mk()
	sh.m[ls.key] = ls
	return ls
}

// remove retires ls and drops it from the table.
func (t *leaseTable) remove(ls *leaseState) {
	ls.retired.Store(true)
	sh := &t.shards[shardOf([]byte(ls.key))]
	sh.mu.Lock()
	if sh.m[ls.key] == ls {
		delete(sh.m, ls.key)
	}
	sh.mu.Unlock()
}

// all returns every state, for the flush loop and shutdown.
func (t *leaseTable) all() []*leaseState {
	var out []*leaseState
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, ls := range sh.m {
			out = append(out, ls)
		}
		sh.mu.RUnlock()
	}
	return out
}
