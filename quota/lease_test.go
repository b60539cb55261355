package quota

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

// newLeaseConfig is the test configuration with messages and ai_tokens in
// lease mode.
func newLeaseConfig() *testConfig {
	tc := newTestConfig()
	tc.messages.Mode = config.ModeLease
	tc.tokens.Mode = config.ModeLease
	return tc
}

// cmdCounter is a go-redis hook counting the commands a client sends.
type cmdCounter struct{ n atomic.Int64 }

func (h *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// crash stops s's background loops without giving its leases back, as if
// the process died.
func crash(s *Store) {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		<-s.leaseDone
	})
}

func mustFlush(t *testing.T, s *Store) {
	t.Helper()
	if err := s.FlushLeases(context.Background()); err != nil {
		t.Fatalf("FlushLeases: %v", err)
	}
}

func TestChunkFor(t *testing.T) {
	tests := []struct {
		rate float64
		want int64
	}{
		{0, 1},
		{-5, 1},
		{math.NaN(), 1},
		{0.1, 1},
		{0.5, 1},
		{0.51, 2},
		{1, 2},
		{250, 500},
		{1e6, 2e6},
		{math.Inf(1), maxChunk},
		{1e300, maxChunk},
	}
	for _, tt := range tests {
		if got := chunkFor(tt.rate); got != tt.want {
			t.Errorf("chunkFor(%v) = %d, want %d", tt.rate, got, tt.want)
		}
	}
}

func TestNextRate(t *testing.T) {
	tests := []struct {
		name    string
		rate    float64
		taken   int64
		elapsed time.Duration
		want    float64
	}{
		{"first sample", 0, 100, time.Second, 100},
		{"rises at once", 10, 1000, time.Second, 1000},
		{"falls by half", 100, 0, time.Second, 50},
		{"falls towards the sample", 100, 20, time.Second, 60},
		{"tiny window is floored", 0, 1, time.Microsecond, 100},
		{"no time passed", 42, 5, 0, 42},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextRate(tt.rate, tt.taken, tt.elapsed); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("nextRate = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLeaseGrantShrinks drives the lease script directly: grants follow the
// wanted chunk far from the limit and shrink to 1 near it.
func TestLeaseGrantShrinks(t *testing.T) {
	rdb := testClient(t)
	tc := newLeaseConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	fi := s.info(tc.messages)
	start, end := Period(0, s.now())

	tests := []struct {
		name       string
		used       int64
		otherLease int64 // another instance's live lease, 0 for none
		want, need int64
		grant      int64
	}{
		{"far: the chunk asked for", 0, 0, 100, 0, 100},
		{"far: at most half the rest", 0, 0, 10_000, 0, 500},
		{"near: half the rest", 990, 0, 1000, 0, 5},
		{"near: one", 998, 0, 1000, 0, 1},
		{"last unit", 999, 0, 1000, 0, 1},
		{"nothing left", 1000, 0, 1000, 0, 0},
		{"others' leases count as used", 900, 50, 1000, 0, 12},
		{"others' leases can take it all", 900, 100, 1000, 1, 0},
		{"a request's need beats the share", 900, 0, 1, 60, 60},
		{"but never past the rest", 990, 0, 1, 60, 10},
		{"give back only", 0, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, map[string]int64{"messages": 1000})
			ls := s.newLeaseState(counterKey(id, fi, start.Unix()), id, fi, zeroAnchor, start, end)
			if err := rdb.Set(ctx, ls.key, tt.used, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			if tt.otherLease > 0 {
				other := s.newLeaseState(ls.key, id, fi, zeroAnchor, start, end)
				other.mu.Lock()
				g, _, err := s.leaseCallLocked(ctx, other, tt.otherLease, tt.otherLease)
				other.mu.Unlock()
				if err != nil || g != tt.otherLease {
					t.Fatalf("other lease: %d, %v; want %d", g, err, tt.otherLease)
				}
			}
			ls.mu.Lock()
			g, code, err := s.leaseCallLocked(ctx, ls, tt.want, tt.need)
			ls.mu.Unlock()
			if err != nil || code != 1 {
				t.Fatalf("lease call: code %d, %v", code, err)
			}
			if g != tt.grant {
				t.Errorf("grant = %d, want %d", g, tt.grant)
			}
		})
	}
}

// TestLeaseNoOverAdmission races 4,000 requests over 4 instances for a
// limit of 1,000: exactly 1,000 pass and the counter ends at 1,000.
func TestLeaseNoOverAdmission(t *testing.T) {
	tc := newLeaseConfig()
	const limit, requests, instances = 1000, 4000, 4
	stores := make([]*Store, instances)
	hook := &cmdCounter{}
	for i := range stores {
		rdb := testClient(t)
		rdb.AddHook(hook)
		stores[i] = newStore(t, rdb, tc.Config)
	}
	rdb := testClient(t)
	id := newTenant(t, stores[0], rdb, tc.PlanBySlug["free"], 0, map[string]int64{"messages": limit})

	var admitted, over, other atomic.Int64
	var maxCurrent atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range requests {
		wg.Add(1)
		go func(s *Store) {
			defer wg.Done()
			<-start
			ctx := context.Background()
			var d Decision
			err := s.Reserve(ctx, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}, &d)
			switch {
			case err != nil:
				t.Errorf("Reserve: %v", err)
				other.Add(1)
			case d.Outcome == Admitted:
				admitted.Add(1)
				s.Commit(ctx, &d, 1)
				for {
					m := maxCurrent.Load()
					if d.Current <= m || maxCurrent.CompareAndSwap(m, d.Current) {
						break
					}
				}
			case d.Outcome == OverLimit:
				over.Add(1)
			default:
				other.Add(1)
			}
		}(stores[i%instances])
	}
	close(start)
	wg.Wait()
	t.Logf("%d requests on %d instances: %d Redis commands", requests, instances, hook.n.Load())

	if admitted.Load() != limit || over.Load() != requests-limit || other.Load() != 0 {
		t.Errorf("admitted %d, over limit %d, other %d; want %d, %d, 0",
			admitted.Load(), over.Load(), other.Load(), limit, requests-limit)
	}
	if m := maxCurrent.Load(); m > limit {
		t.Errorf("an admitted decision reported current %d > limit %d", m, limit)
	}
	for _, s := range stores {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if n := usage(t, stores[0], id, tc.messages); n != limit {
		t.Errorf("counter after the final flush = %d, want %d", n, limit)
	}
}

// TestLeaseCommandsPerRequest counts the Redis commands of 10,000 metered
// requests far below the limit.
func TestLeaseCommandsPerRequest(t *testing.T) {
	rdb := testClient(t)
	hook := &cmdCounter{}
	rdb.AddHook(hook)
	tc := newLeaseConfig()
	s := newStore(t, rdb, tc.Config)
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, map[string]int64{"messages": 1_000_000})
	closeFirst(t, s)
	ctx := context.Background()
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}

	const requests = 10_000
	before := hook.n.Load()
	for i := range requests {
		var d Decision
		if err := s.Reserve(ctx, c, &d); err != nil || d.Outcome != Admitted {
			t.Fatalf("request %d: %v %v", i, d.Outcome, err)
		}
		s.Commit(ctx, &d, 1)
	}
	mustFlush(t, s)
	cmds := hook.n.Load() - before
	ratio := float64(cmds) / requests
	t.Logf("lease mode: %d Redis commands for %d requests (incl. the final flush) = %.4f per request", cmds, requests, ratio)
	if ratio > 0.02 {
		t.Errorf("%.4f commands per request, want <= 0.02", ratio)
	}
	if n := usage(t, s, id, tc.messages); n != requests {
		t.Errorf("counter = %d, want %d", n, requests)
	}
}

// leaseUnits reads the units each live lease field holds.
func leaseUnits(t *testing.T, rdb *redis.Client, lkey string) map[string]int64 {
	t.Helper()
	h, err := rdb.HGetAll(context.Background(), lkey).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for k, v := range h {
		parts := strings.Split(v, ":")
		n, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || len(parts) != 4 {
			t.Fatalf("lease field %s = %q", k, v)
		}
		out[k] = n
	}
	return out
}

// TestLeaseExpiryReturnsUnits: an instance that leased units and crashed
// holds them only until its lease expires; then another instance gets them.
func TestLeaseExpiryReturnsUnits(t *testing.T) {
	const ttl = time.Second
	tc := newLeaseConfig()
	rdbA, rdbB := testClient(t), testClient(t)
	a := newStore(t, rdbA, tc.Config, WithLeaseTTL(ttl))
	b := newStore(t, rdbB, tc.Config, WithLeaseTTL(ttl))
	const limit = 20
	id := newTenant(t, a, rdbA, tc.PlanBySlug["free"], 0, map[string]int64{"messages": limit})
	closeFirst(t, a)
	closeFirst(t, b)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	ctx := context.Background()

	// A's second call asks for a chunk from the rate of its first request.
	for range 2 {
		if d := mustReserve(t, a, c); d.Outcome != Admitted {
			t.Fatalf("a: %v", d.Outcome)
		}
	}
	crash(a)
	start, _ := Period(0, a.now())
	lkey := leaseKey(id, a.info(tc.messages), start.Unix())
	held := leaseUnits(t, rdbA, lkey)
	if len(held) != 1 {
		t.Fatalf("lease fields after a's requests: %v, want one", held)
	}
	var heldA int64
	for _, n := range held {
		heldA = n
	}
	committed := usage(t, a, id, tc.messages)
	if heldA < 2 || committed+heldA > limit {
		t.Fatalf("a holds %d units with %d committed; want >= 2 (some unused) within %d", heldA, committed, limit)
	}

	admit := func() int64 {
		var n int64
		for range 2 * limit {
			d := mustReserve(t, b, c)
			if d.Outcome != Admitted {
				return n
			}
			n++
		}
		return n
	}
	if n := admit(); n != limit-committed-heldA {
		t.Errorf("b admitted %d while a's lease lives, want %d", n, limit-committed-heldA)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	if n := admit(); n != heldA {
		t.Errorf("b admitted %d after a's lease expired, want a's %d units back", n, heldA)
	}
	mustFlush(t, b)
	if n, err := rdbB.Get(ctx, counterKey(id, b.info(tc.messages), start.Unix())).Int64(); err != nil || n != limit {
		t.Errorf("counter = %d, %v; want %d", n, err, limit)
	}
}

func TestLeaseOutcomes(t *testing.T) {
	rdb := testClient(t)
	tc := newLeaseConfig()

	type want struct {
		outcome  Outcome
		feature  *config.Feature
		plan     string
		current  int64
		limit    int64
		ceiling  int64
		warning  bool
		reserved int64
	}
	tests := []struct {
		name    string
		plan    string
		unknown bool
		check   Check
		before  int
		want    want
		usage   int64
	}{
		{name: "first", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1},
			want: want{Admitted, tc.messages, "", 1, 10, 10, false, 1}, usage: 1},
		{name: "8th of 10 warns", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 7,
			want: want{Admitted, tc.messages, "", 8, 10, 10, true, 1}, usage: 8},
		{name: "last one", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 9,
			want: want{Admitted, tc.messages, "", 10, 10, 10, true, 1}, usage: 10},
		{name: "over limit", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 10,
			want: want{OverLimit, tc.messages, "Free", 10, 10, 10, true, 0}, usage: 10},
		{name: "amount must fit whole", plan: "free", check: Check{Meter: fixed(tc.messages, 4), Amount: 4}, before: 2,
			want: want{OverLimit, tc.messages, "Free", 8, 10, 10, true, 0}, usage: 8},
		{name: "amount fits exactly", plan: "free", check: Check{Meter: fixed(tc.messages, 5), Amount: 5}, before: 1,
			want: want{Admitted, tc.messages, "", 10, 10, 10, true, 5}, usage: 10},
		{name: "unlimited counts", plan: "pro", check: Check{Meter: fixed(tc.messages, 1000), Amount: 1000}, before: 3,
			want: want{Admitted, tc.messages, "", 4000, -1, -1, false, 1000}, usage: 4000},
		{name: "response amount reserves nothing", plan: "free", check: Check{Meter: fromResponse(tc.tokens)},
			want: want{Admitted, tc.tokens, "", 0, 10, 10, false, 0}, usage: 0},
		{name: "flag off", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1, Flags: []*config.Feature{tc.integrations}},
			want: want{outcome: Locked, feature: tc.integrations, plan: "Free"}},
		{name: "flags on", plan: "pro", check: Check{Meter: fixed(tc.messages, 1), Amount: 1, Flags: []*config.Feature{tc.integrations, tc.autoReply}},
			want: want{Admitted, tc.messages, "", 1, -1, -1, false, 1}, usage: 1},
		{name: "unknown tenant", unknown: true, check: Check{Meter: fixed(tc.messages, 1), Amount: 1},
			want: want{outcome: UnknownTenant, feature: tc.messages}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A store per case: it holds the case's lease until closed,
			// which must happen before the tenant's cleanup.
			s := newStore(t, rdb, tc.Config)
			_, end := Period(0, s.now())
			var id string
			if tt.unknown {
				id = randomTenant(t)
				cleanupTenant(t, rdb, id)
			} else {
				id = newTenant(t, s, rdb, tc.PlanBySlug[tt.plan], 0, nil)
			}
			closeFirst(t, s)
			c := tt.check
			c.TenantID = id
			for i := range tt.before {
				if d := mustReserve(t, s, &c); d.Outcome != Admitted {
					t.Fatalf("reserve %d before the checked one: %v", i+1, d.Outcome)
				}
			}
			d := mustReserve(t, s, &c)
			got := want{d.Outcome, d.Feature, d.PlanName, d.Current, d.Limit, d.Ceiling, d.Warning, d.Reserved}
			if got != tt.want {
				t.Errorf("decision\n got %+v\nwant %+v", got, tt.want)
			}
			if !d.Reset.Equal(end) {
				t.Errorf("reset = %s, want %s", d.Reset, end)
			}
			if !tt.unknown && tt.want.outcome != Locked {
				mustFlush(t, s)
				if n := usage(t, s, id, c.Meter.Feature); n != tt.usage {
					t.Errorf("usage after flush = %d, want %d", n, tt.usage)
				}
			}
		})
	}
}

func TestLeaseReleaseAndCommit(t *testing.T) {
	rdb := testClient(t)
	tc := newLeaseConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()

	tests := []struct {
		name   string
		meter  *config.Meter
		settle func(t *testing.T, d *Decision)
		usage  int64
	}{
		{"release gives back", fixed(tc.messages, 3),
			func(t *testing.T, d *Decision) { s.Release(ctx, d) }, 0},
		{"release twice gives back once", fixed(tc.messages, 3),
			func(t *testing.T, d *Decision) { s.Release(ctx, d); s.Release(ctx, d) }, 0},
		{"release after the usage was reported", fixed(tc.messages, 3),
			func(t *testing.T, d *Decision) { mustFlush(t, s); s.Release(ctx, d) }, 0},
		{"commit keeps it", fixed(tc.messages, 3),
			func(t *testing.T, d *Decision) { s.Commit(ctx, d, 3) }, 3},
		{"response amount within the lease", fromResponse(tc.tokens),
			func(t *testing.T, d *Decision) { s.Commit(ctx, d, 1) }, 1},
		{"response amount past the lease", fromResponse(tc.tokens),
			func(t *testing.T, d *Decision) { s.Commit(ctx, d, 7) }, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
			d := mustReserve(t, s, &Check{TenantID: id, Meter: tt.meter, Amount: tt.meter.Amount})
			if d.Outcome != Admitted {
				t.Fatalf("reserve: %v", d.Outcome)
			}
			tt.settle(t, &d)
			mustFlush(t, s)
			if n := usage(t, s, id, tt.meter.Feature); n != tt.usage {
				t.Errorf("usage = %d, want %d", n, tt.usage)
			}
			// The whole limit is still usable: nothing leaked.
			var admitted int64
			for range 20 {
				if d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tt.meter.Feature, 1), Amount: 1}); d.Outcome == Admitted {
					admitted++
				}
			}
			if admitted != 10-tt.usage {
				t.Errorf("admitted %d more, want %d", admitted, 10-tt.usage)
			}
		})
	}
}

func TestLeasePeriodRollover(t *testing.T) {
	rdb := testClient(t)
	tc := newLeaseConfig()
	clock := newFakeClock(utc(2025, 1, 31, 23, 59, 0))
	s := newStore(t, rdb, tc.Config, WithClock(clock.Now))
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	closeFirst(t, s)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}

	for range 10 {
		if d := mustReserve(t, s, c); d.Outcome != Admitted {
			t.Fatalf("january: %v", d.Outcome)
		}
	}
	if d := mustReserve(t, s, c); d.Outcome != OverLimit {
		t.Fatalf("january 11th: %v, want over limit", d.Outcome)
	}
	clock.Set(utc(2025, 2, 1, 0, 0, 0))
	d := mustReserve(t, s, c)
	if d.Outcome != Admitted || d.Current != 1 || !d.Reset.Equal(utc(2025, 3, 1, 0, 0, 0)) {
		t.Fatalf("february: %v current %d reset %s, want admitted 1, March 1", d.Outcome, d.Current, d.Reset)
	}
	mustFlush(t, s)
	jan := counterKey(id, s.info(tc.messages), utc(2025, 1, 1, 0, 0, 0).Unix())
	feb := counterKey(id, s.info(tc.messages), utc(2025, 2, 1, 0, 0, 0).Unix())
	for key, want := range map[string]int64{jan: 10, feb: 1} {
		if n, err := rdb.Get(ctx, key).Int64(); err != nil || n != want {
			t.Errorf("%s = %d, %v; want %d", key, n, err, want)
		}
	}
	// The ended period's lease is given back and then forgotten.
	mustFlush(t, s)
	for _, ls := range s.leases.all() {
		if ls.key == jan && (ls.avail.Load() != 0 || ls.used.Load() != 0) {
			t.Errorf("january lease still holds %d units, %d unreported", ls.avail.Load(), ls.used.Load())
		}
	}
}

// TestLeasePlanChangeWithinBound: a downgrade (limit and flags) applies on
// this instance at the latest LeaseBound after it was written, even though
// the instance held units leased under the old plan.
func TestLeasePlanChangeWithinBound(t *testing.T) {
	rdb := testClient(t)
	tc := newLeaseConfig()
	s := newStore(t, rdb, tc.Config, WithLeaseTTL(400*time.Millisecond))
	other := newStore(t, testClient(t), tc.Config)
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], 0, nil)
	closeFirst(t, s)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1, Flags: []*config.Feature{tc.integrations}}

	for range 20 {
		if d := mustReserve(t, s, c); d.Outcome != Admitted {
			t.Fatalf("mini: %v", d.Outcome)
		}
	}
	if err := other.PutEntitlement(ctx, Entitlement{TenantID: id, Plan: tc.PlanBySlug["free"]}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(s.LeaseBound())
	if d := mustReserve(t, s, c); d.Outcome != Locked || d.PlanName != "Free" {
		t.Errorf("flag after downgrade: %v %q, want locked on Free", d.Outcome, d.PlanName)
	}
	c.Flags = nil
	d := mustReserve(t, s, c)
	if d.Outcome != OverLimit || d.Limit != 10 || d.Current != 20 {
		t.Errorf("after downgrade: %v current %d limit %d, want over limit 20/10", d.Outcome, d.Current, d.Limit)
	}
}

// TestLeaseRedisDown: a lease keeps admitting while Redis is away until it
// goes stale, then the fail mode applies; usage is reported exactly once.
func TestLeaseRedisDown(t *testing.T) {
	tc := newLeaseConfig()
	sw := &switchRedis{}
	rdb := testClient(t)
	s := newStore(t, switchClient(t, sw), tc.Config, WithLeaseTTL(400*time.Millisecond))
	id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], 0, nil)
	closeFirst(t, s)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	ctx := context.Background()

	for range 5 {
		if d := mustReserve(t, s, c); d.Outcome != Admitted {
			t.Fatalf("up: %v", d.Outcome)
		}
	}
	sw.down.Store(true)
	var failedOpen int64
	for range 5 {
		var d Decision
		err := s.Reserve(ctx, c, &d)
		switch d.Outcome {
		case Admitted:
		case FailedOpen:
			if err == nil {
				t.Error("failed open without an error")
			}
			failedOpen++
			s.Commit(ctx, &d, 1)
		default:
			t.Fatalf("down: %v %v", d.Outcome, err)
		}
	}
	time.Sleep(s.LeaseBound())
	var d Decision
	if err := s.Reserve(ctx, c, &d); err == nil || d.Outcome != FailedOpen {
		t.Fatalf("stale lease with redis down: %v %v, want failed open", d.Outcome, err)
	}
	s.Commit(ctx, &d, 1)
	failedOpen++
	_ = s.FlushLeases(ctx) // fails: Redis is down

	sw.down.Store(false)
	mustFlush(t, s)
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if n := usage(t, s, id, tc.messages); n != 11 {
		t.Errorf("usage = %d, want 11 (%d of them counted while down)", n, failedOpen)
	}
}

// TestLeaseRetryAfterLostReply: a lease call that Redis applied but whose
// reply was lost is sent again unchanged and not applied twice.
func TestLeaseRetryAfterLostReply(t *testing.T) {
	tc := newLeaseConfig()
	rdb := testClient(t)
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], 0, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	for range 3 {
		mustReserve(t, s, c)
	}
	ls := leaseOf(t, s, id)
	ls.mu.Lock()
	// Apply a call, then pretend its reply never came.
	ls.seq++
	call := leaseCall{seq: ls.seq, returned: ls.avail.Swap(0), consumed: ls.used.Swap(0), want: 5}
	lost, _, err := s.runLease(ctx, ls, call)
	if err != nil {
		ls.mu.Unlock()
		t.Fatal(err)
	}
	ls.retry = &call
	ls.mu.Unlock()

	if lost <= 0 {
		t.Fatalf("the lost call granted %d, want > 0", lost)
	}
	mustFlush(t, s)
	start, _ := Period(0, s.now())
	lkey := leaseKey(id, s.info(tc.messages), start.Unix())
	if got, want := leaseUnits(t, rdb, lkey)[ls.field], ls.avail.Load()+ls.used.Load(); got != want {
		t.Errorf("lease field holds %d units, the instance %d: the lost grant was not reconciled", got, want)
	}
	if n := usage(t, s, id, tc.messages); n != 3 {
		t.Errorf("usage = %d, want 3 (the lost call's report applied once)", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for f, n := range leaseUnits(t, rdb, lkey) {
		if n != 0 {
			t.Errorf("lease %s holds %d units after Close, want 0", f, n)
		}
	}
}

// TestLeaseMalformedValues: a lease call that meets a value Tollgate does
// not write (a limit or counter that is no integer within +-2^53, a key of
// another type) fails the request with the fail mode and an error naming
// it, and writes nothing: no lease, no count.
func TestLeaseMalformedValues(t *testing.T) {
	rdb := testClient(t)
	tc := newLeaseConfig()
	ctx := context.Background()
	reserve := Check{Meter: fixed(tc.messages, 1), Amount: 1}
	response := Check{Meter: fromResponse(tc.messages)}
	const badLimit, badCounter = "malformed limit l:messages of tenant ", "malformed counter "
	limit := func(v string) func(ent, counter, lease string) error {
		return func(ent, _, _ string) error { return rdb.HSet(ctx, ent, "l:messages", v).Err() }
	}
	counter := func(v string) func(ent, counter, lease string) error {
		return func(_, c, _ string) error { return rdb.Set(ctx, c, v, time.Hour).Err() }
	}
	tests := []struct {
		name  string
		check Check
		spoil func(ent, counter, lease string) error
		err   string // "" for admitted
	}{
		{"limit nan", reserve, limit("nan"), badLimit},
		{"limit inf", reserve, limit("inf"), badLimit},
		{"limit 1e400", reserve, limit("1e400"), badLimit},
		{"limit abc", reserve, limit("abc"), badLimit},
		{"limit 2.5", reserve, limit("2.5"), badLimit},
		{"limit nan, response amount", response, limit("nan"), badLimit},
		{"counter nan", reserve, counter("nan"), badCounter},
		{"counter 5.5", reserve, counter("5.5"), badCounter},
		{"counter inf", reserve, counter("inf"), badCounter},
		{"counter abc", reserve, counter("abc"), badCounter},
		{"counter nan, response amount", response, counter("nan"), badCounter},
		{"counter 5.5, response amount", response, counter("5.5"), badCounter},
		{"counter ' 5' is read as 5", response, counter(" 5"), ""},
		{"counter 0x3 is read as 3", reserve, counter("0x3"), ""},
		{"counter is a list", reserve, func(_, c, _ string) error { return rdb.RPush(ctx, c, "1").Err() }, badCounter},
		{"entitlement is a string", reserve, func(e, _, _ string) error { return rdb.Set(ctx, e, "free", 0).Err() }, "not a hash"},
		{"lease hash is a string", reserve, func(_, _, l string) error { return rdb.Set(ctx, l, "x", 0).Err() }, "malformed lease hash "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, rdb, tc.Config)
			id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
			closeFirst(t, s)
			start, _ := Period(0, s.now())
			key := counterKey(id, s.info(tc.messages), start.Unix())
			lkey := leaseKey(id, s.info(tc.messages), start.Unix())
			if err := tt.spoil(entKey(id), key, lkey); err != nil {
				t.Fatal(err)
			}
			before := dumpKeys(t, rdb, entKey(id), key, lkey)
			c := tt.check
			c.TenantID = id
			var d Decision
			err := s.Reserve(ctx, &c, &d)
			if tt.err == "" {
				if err != nil || d.Outcome != Admitted {
					t.Errorf("Reserve: %v %v, want admitted", d.Outcome, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || d.Outcome != FailedOpen {
				t.Errorf("Reserve: %v %v, want failed open and an error containing %q", d.Outcome, err, tt.err)
			}
			if after := dumpKeys(t, rdb, entKey(id), key, lkey); after != before {
				t.Errorf("the call wrote:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// dumpKeys is the keys' serialized values, to tell whether a call wrote
// any of them.
func dumpKeys(t *testing.T, rdb *redis.Client, keys ...string) string {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		v, err := rdb.Dump(context.Background(), k).Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		b.WriteString(strconv.Quote(v) + " ")
	}
	return b.String()
}

// TestLeaseReportAfterMalformedValue: a lease report that meets a
// malformed value fails with nothing applied, and its retry, once the
// value is repaired, counts the usage once.
func TestLeaseReportAfterMalformedValue(t *testing.T) {
	rdb := testClient(t)
	tc := newLeaseConfig()
	ctx := context.Background()
	tests := []struct {
		name          string
		spoil, repair func(s *Store, id string) error
	}{
		{"entitlement becomes a string",
			func(s *Store, id string) error { return rdb.Set(ctx, entKey(id), "free", 0).Err() },
			func(s *Store, id string) error {
				if err := rdb.Del(ctx, entKey(id)).Err(); err != nil {
					return err
				}
				return s.PutEntitlement(ctx, Entitlement{TenantID: id, Plan: tc.PlanBySlug["mini"]})
			}},
		{"limit becomes nan",
			func(s *Store, id string) error { return rdb.HSet(ctx, entKey(id), "l:messages", "nan").Err() },
			func(s *Store, id string) error { return rdb.HSet(ctx, entKey(id), "l:messages", "100").Err() }},
		{"lease hash becomes a string",
			func(s *Store, id string) error {
				start, _ := Period(0, s.now())
				return rdb.Set(ctx, leaseKey(id, s.info(tc.messages), start.Unix()), "x", 0).Err()
			},
			func(s *Store, id string) error {
				start, _ := Period(0, s.now())
				return rdb.Del(ctx, leaseKey(id, s.info(tc.messages), start.Unix())).Err()
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, rdb, tc.Config)
			id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], 0, nil)
			closeFirst(t, s)
			c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
			for range 5 {
				if d := mustReserve(t, s, c); d.Outcome != Admitted {
					t.Fatalf("reserve: %v", d.Outcome)
				}
			}
			if err := tt.spoil(s, id); err != nil {
				t.Fatal(err)
			}
			if err := s.FlushLeases(ctx); err == nil {
				t.Fatal("FlushLeases with a malformed value returned no error")
			}
			if err := tt.repair(s, id); err != nil {
				t.Fatal(err)
			}
			mustFlush(t, s)
			if n := usage(t, s, id, tc.messages); n != 5 {
				t.Errorf("usage = %d, want 5", n)
			}
		})
	}
}

// meteredTotal sums a tenant's counters of f over every period key in
// Redis (delivery markers left out).
func meteredTotal(t *testing.T, rdb *redis.Client, id string, f *config.Feature) int64 {
	t.Helper()
	ctx := context.Background()
	seen := map[string]bool{} // SCAN may return a key twice
	var cursor uint64
	for range 10000 {
		keys, next, err := rdb.Scan(ctx, cursor, tenantPrefix(id)+":m:"+f.Name+":*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			seen[k] = !strings.Contains(k, ":d:")
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	var sum int64
	for k, counter := range seen {
		if !counter {
			continue
		}
		n, err := rdb.Get(ctx, k).Int64()
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		sum += n
	}
	return sum
}

// TestLeaseAnchorChangeLosesNoUsage: a tenant's anchor flips back and forth
// while requests keep reserving from their leases. A lease that learns its
// period was wrong is retired; what it had handed out and not yet reported
// (units taken while its last call was on its way, releases that raced
// it) is still reported, and nothing is admitted from it afterwards. The
// counters over all periods end at exactly what was let through.
func TestLeaseAnchorChangeLosesNoUsage(t *testing.T) {
	tc := newLeaseConfig()
	rdb := testClient(t)
	s := newStore(t, rdb, tc.Config)
	flipper := newStore(t, testClient(t), tc.Config)
	id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], 0, map[string]int64{"messages": 1_000_000_000})
	closeFirst(t, s)
	ctx := context.Background()

	// Two anchors naming different periods: calendar months, and months
	// starting at 12:00:17 on the 2nd.
	calendar, _ := Period(0, time.Now())
	anchors := [2]int64{0, calendar.Add(36*time.Hour + 17*time.Second).Unix()}

	const workers = 16
	var let, released, failedOpen atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var d Decision
				err := s.Reserve(ctx, c, &d)
				switch d.Outcome {
				case Admitted:
					let.Add(1)
					if (i+w)%5 == 0 {
						s.Release(ctx, &d)
						released.Add(1)
					} else {
						s.Commit(ctx, &d, 1)
					}
				case FailedOpen:
					// The anchor changed under every attempt: counted
					// locally and reconciled.
					let.Add(1)
					failedOpen.Add(1)
					s.Commit(ctx, &d, 1)
				default:
					t.Errorf("Reserve: %v %v", d.Outcome, err)
					return
				}
			}
		})
	}
	for i := range 60 {
		time.Sleep(50 * time.Millisecond)
		if err := flipper.PutEntitlement(ctx, Entitlement{TenantID: id, Plan: tc.PlanBySlug["mini"],
			Anchor: anchors[(i+1)%2], Limits: map[string]int64{"messages": 1_000_000_000}}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want := let.Load() - released.Load()
	t.Logf("%d let through (%d failed open), %d released", let.Load(), failedOpen.Load(), released.Load())
	if got := meteredTotal(t, rdb, id, tc.messages); got != want {
		t.Errorf("counters over all periods sum to %d, want %d (let through %d, released %d)",
			got, want, let.Load(), released.Load())
	}
}

// TestLeaseRetiredStateIsSettled: a lease whose call learns the anchor
// changed is retired. Nothing is admitted from it any more, and units
// moved in it afterwards (a take or release that raced the retirement)
// are still reported to its counter by the next flush.
func TestLeaseRetiredStateIsSettled(t *testing.T) {
	tc := newLeaseConfig()
	rdb := testClient(t)
	s := newStore(t, rdb, tc.Config)
	other := newStore(t, testClient(t), tc.Config)
	id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], 0, nil)
	closeFirst(t, s)
	ctx := context.Background()
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	for range 3 {
		if d := mustReserve(t, s, c); d.Outcome != Admitted {
			t.Fatalf("reserve: %v", d.Outcome)
		}
	}
	ls := leaseOf(t, s, id)
	oldKey := ls.key

	calendar, _ := Period(0, time.Now())
	anchor := calendar.Add(36*time.Hour + 17*time.Second).Unix()
	if err := other.PutEntitlement(ctx, Entitlement{TenantID: id, Plan: tc.PlanBySlug["mini"], Anchor: anchor}); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, s) // its report is answered "anchor mismatch": retired
	if !ls.retired.Load() {
		t.Fatal("the lease was not retired by a call that met another anchor")
	}
	if got := rdb.Get(ctx, oldKey).Val(); got != "3" {
		t.Fatalf("old period's counter = %q after the retiring call, want 3", got)
	}
	// A take that passed its check before the retirement moves its units
	// now; a release that raced it gives one back.
	ls.avail.Add(3)
	if !ls.take(3) {
		t.Fatal("take from the retired lease's units failed")
	}
	ls.giveBack(1)

	var d Decision
	if s.admitLocal(ls, c, &d, modeReserve, 1) {
		t.Fatal("a retired lease admitted a request")
	}
	if d := mustReserve(t, s, c); d.Outcome != Admitted || d.key == oldKey {
		t.Fatalf("reserve after the anchor change: %v on %s, want admitted on the new period", d.Outcome, d.key)
	}
	mustFlush(t, s)
	if got := rdb.Get(ctx, oldKey).Val(); got != "5" {
		t.Errorf("old period's counter = %q after the flush, want 5 (3 + 2 moved after the retirement)", got)
	}
	if ls.used.Load() != 0 || ls.avail.Load() != 0 {
		t.Errorf("retired lease still holds %d unreported, %d unused", ls.used.Load(), ls.avail.Load())
	}
	start, _ := Period(anchor, s.now())
	if n := usage(t, s, id, tc.messages); n != 1 || counterKey(id, s.info(tc.messages), start.Unix()) == oldKey {
		t.Errorf("new period's usage = %d, want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(s.retiredLeases()); n != 0 {
		t.Errorf("%d retired leases left after Close", n)
	}
}

// TestCounterChanged: the store names every counter it changes after the
// request that counted the units was settled — a lease call's report and
// a reconcile's delivery — so a usage flusher can mark it; calls that
// report nothing name nothing.
func TestCounterChanged(t *testing.T) {
	tc := newLeaseConfig()
	rdb := testClient(t)
	var mu sync.Mutex
	changed := map[string]int{}
	s := newStore(t, rdb, tc.Config, WithCounterChanged(func(key string) {
		mu.Lock()
		changed[key]++
		mu.Unlock()
	}))
	id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], 0, nil)
	closeFirst(t, s)
	times := func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return changed[key]
	}
	ctx := context.Background()

	d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1})
	if d.Outcome != Admitted {
		t.Fatalf("reserve: %v", d.Outcome)
	}
	if n := times(d.key); n != 0 {
		t.Errorf("the first lease call reported nothing, yet named the counter %d times", n)
	}
	mustFlush(t, s) // reports the unit
	if n := times(d.key); n != 1 {
		t.Errorf("after the lease report: counter named %d times, want 1", n)
	}
	mustFlush(t, s) // gives the unused units back, reports nothing
	if n := times(d.key); n != 1 {
		t.Errorf("after a give-back: counter named %d times, want still 1", n)
	}

	s.addPending(d.key, 2, d.expiry())
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if n := times(d.key); n != 2 {
		t.Errorf("after a reconcile delivery: counter named %d times, want 2", n)
	}
	if n := usage(t, s, id, tc.messages); n != 3 {
		t.Errorf("usage = %d, want 3", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changed) != 1 {
		t.Errorf("named %v, want only %s", changed, d.key)
	}
}

// leaseOf is the store's lease state of tenant id; the test fails without
// one.
func leaseOf(t *testing.T, s *Store, id string) *leaseState {
	t.Helper()
	for _, l := range s.leases.all() {
		if l.tenant == id {
			return l
		}
	}
	t.Fatal("no lease state")
	return nil
}
