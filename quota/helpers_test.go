package quota

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

func redisURL() string {
	if u := os.Getenv("TOLLGATE_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// testClient connects to the test Redis and fails the test when it is not
// there: these tests are about Redis' behaviour and prove nothing without it.
func testClient(tb testing.TB) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(redisURL())
	if err != nil {
		tb.Fatalf("TOLLGATE_TEST_REDIS_URL %q: %v", redisURL(), err)
	}
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		tb.Fatalf("redis at %s is unreachable (set TOLLGATE_TEST_REDIS_URL): %v", redisURL(), err)
	}
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// testConfig has one feature of every kind and shape the store handles.
type testConfig struct {
	*config.Config
	messages, tokens, agents, integrations, autoReply, apiCalls *config.Feature
}

func newTestConfig() *testConfig {
	tc := &testConfig{
		messages:     &config.Feature{Name: "messages", Kind: config.Metered, Warning: 0.8, Grace: 1, FailMode: config.FailOpen},
		tokens:       &config.Feature{Name: "ai_tokens", Kind: config.Metered, Warning: 0.8, Grace: 1, FailMode: config.FailOpen},
		agents:       &config.Feature{Name: "agents", Kind: config.Gauge, Warning: 0.8, Grace: 1, FailMode: config.FailClosed},
		integrations: &config.Feature{Name: "integrations", Kind: config.Flag, FailMode: config.FailClosed, ErrorCode: "feature_locked"},
		autoReply:    &config.Feature{Name: "ai_auto_reply", Kind: config.Flag, FailMode: config.FailClosed, ErrorCode: "feature_not_available"},
		apiCalls:     &config.Feature{Name: "api_calls", Kind: config.Metered, Warning: 0.8, Grace: 1.1, FailMode: config.FailOpen},
	}
	feats := []*config.Feature{tc.messages, tc.tokens, tc.agents, tc.integrations, tc.autoReply, tc.apiCalls}
	cfg := &config.Config{FeatureByName: map[string]*config.Feature{}, PlanBySlug: map[string]*config.Plan{}}
	for i, f := range feats {
		f.Index = i
		cfg.Features = append(cfg.Features, f)
		cfg.FeatureByName[f.Name] = f
	}
	plan := func(slug, name string, limit int64, agents int64, integrations, autoReply bool) *config.Plan {
		return &config.Plan{
			Slug: slug, Name: name, Currency: "USD",
			Limits: []int64{limit, limit, agents, 0, 0, limit},
			Flags:  []bool{false, false, false, integrations, autoReply, false},
		}
	}
	cfg.Plans = []*config.Plan{
		plan("free", "Free", 10, 5, false, false),
		plan("mini", "Mini", 100, 20, true, false),
		plan("pro", "Pro", config.Unlimited, config.Unlimited, true, true),
	}
	for _, p := range cfg.Plans {
		cfg.PlanBySlug[p.Slug] = p
	}
	cfg.Redis.ReconcileInterval = time.Hour // tests call Reconcile themselves
	tc.Config = cfg
	return tc
}

func newStore(tb testing.TB, rdb redis.UniversalClient, cfg *config.Config, opts ...Option) *Store {
	tb.Helper()
	s := New(rdb, cfg, opts...)
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// closeFirst closes s when tb ends, before the cleanups registered so far
// run (they run last in, first out): Close gives s's leases back and
// pushes its pending counts, which would write the keys of tenants whose
// cleanup already deleted them. Call it after newTenant when s holds
// leases of the tenant or may keep counts for it; newStore's own Close
// then does nothing.
func closeFirst(tb testing.TB, s *Store) {
	tb.Cleanup(func() { _ = s.Close() })
}

func randomTenant(tb testing.TB) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("random tenant id: %v", err)
	}
	return "test-" + hex.EncodeToString(b[:])
}

// newTenant writes a fresh tenant's entitlement and removes all of its keys
// when the test ends.
func newTenant(tb testing.TB, s *Store, rdb *redis.Client, plan *config.Plan, anchor int64, limits map[string]int64) string {
	tb.Helper()
	id := randomTenant(tb)
	cleanupTenant(tb, rdb, id)
	if err := s.PutEntitlement(context.Background(), Entitlement{TenantID: id, Plan: plan, Anchor: anchor, Limits: limits}); err != nil {
		tb.Fatalf("PutEntitlement: %v", err)
	}
	return id
}

// cleanupTenant deletes every key of the tenant (all periods, markers)
// when the test ends; other packages share this Redis, so never FLUSHDB.
func cleanupTenant(tb testing.TB, rdb *redis.Client, id string) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var cursor uint64
		for range 10000 {
			keys, next, err := rdb.Scan(ctx, cursor, tenantPrefix(id)+"*", 1000).Result()
			if err != nil {
				tb.Errorf("cleanup of tenant %s: %v", id, err)
				return
			}
			if len(keys) > 0 {
				rdb.Del(ctx, keys...)
			}
			if cursor = next; cursor == 0 {
				return
			}
		}
	})
}

// fakeClock is a settable clock safe for concurrent reads.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(t)
	return c
}
func (c *fakeClock) Now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

func fixed(f *config.Feature, n int64) *config.Meter {
	return &config.Meter{Feature: f, Source: config.AmountFixed, Amount: n}
}

func fromResponse(f *config.Feature) *config.Meter {
	return &config.Meter{Feature: f, Source: config.AmountResponseHeader, Header: "X-Tokens-Used"}
}

func mustReserve(tb testing.TB, s *Store, c *Check) Decision {
	tb.Helper()
	var d Decision
	if err := s.Reserve(context.Background(), c, &d); err != nil {
		tb.Fatalf("Reserve: %v", err)
	}
	return d
}

func usage(tb testing.TB, s *Store, tenant string, f *config.Feature) int64 {
	tb.Helper()
	n, err := s.Usage(context.Background(), tenant, f)
	if err != nil {
		tb.Fatalf("Usage: %v", err)
	}
	return n
}
