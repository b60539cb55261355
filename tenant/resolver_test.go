package tenant

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"github.com/tollgate/tollgate/config"
)

var apiKeyCfg = config.TenantIdentification{Source: config.TenantAPIKey, Header: "Authorization"}

func TestResolveAPIKey(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	revoked := issueTestKey(t, rdb, tid)
	if err := RevokeKey(context.Background(), rdb, revoked); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	unknown := "tg_" + randHex(t, 20)
	r := newTestResolver(t, apiKeyCfg, rdb)

	tests := []struct {
		name, header, value string
		want                string
		err                 error
	}{
		{"good", "Authorization", "Bearer " + key, tid, nil},
		{"good lower-case scheme", "Authorization", "bearer " + key, tid, nil},
		{"missing header", "", "", "", ErrMissing},
		{"empty header", "Authorization", "", "", ErrMissing},
		{"other header only", "X-Api-Key", key, "", ErrMissing},
		{"wrong scheme", "Authorization", "Basic " + key, "", ErrInvalid},
		{"no scheme", "Authorization", key, "", ErrInvalid},
		{"malformed key", "Authorization", "Bearer tg_short", "", ErrInvalid},
		{"unknown key", "Authorization", "Bearer " + unknown, "", ErrUnknown},
		{"revoked key", "Authorization", "Bearer " + revoked, "", ErrUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Twice: the second answer comes from the cache.
			for i := range 2 {
				got, err := r.Resolve(context.Background(), hdr(tt.header, tt.value))
				if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
					t.Fatalf("call %d: got %q, %v; want %q, %v", i, got, err, tt.want, tt.err)
				}
			}
		})
	}
}

func TestResolveCustomHeader(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	r := newTestResolver(t, config.TenantIdentification{Source: config.TenantAPIKey, Header: "X-Gateway-Auth"}, rdb)
	if got, err := r.Resolve(context.Background(), hdr("X-Gateway-Auth", "Bearer "+key)); err != nil || got != tid {
		t.Fatalf("got %q, %v; want %q", got, err, tid)
	}
	if _, err := r.Resolve(context.Background(), hdr("Authorization", "Bearer "+key)); !errors.Is(err, ErrMissing) {
		t.Fatalf("Authorization must be ignored when another header is configured: err = %v", err)
	}
}

// The cache really answers: after the key disappears from Redis without an
// invalidation, the cached answer stands until its TTL.
func TestResolveServesFromCache(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	r := newTestResolver(t, apiKeyCfg, rdb)
	h := hdr("Authorization", "Bearer "+key)
	if got, err := r.Resolve(context.Background(), h); err != nil || got != tid {
		t.Fatalf("first: got %q, %v", got, err)
	}
	rdb.Del(context.Background(), apiKeyRedisKey(HashKey(key)))
	if got, err := r.Resolve(context.Background(), h); err != nil || got != tid {
		t.Fatalf("cached: got %q, %v", got, err)
	}
}

func TestRevokeEvictsOtherResolvers(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	a := newTestResolver(t, apiKeyCfg, rdb)
	b := newTestResolver(t, apiKeyCfg, testRedis(t))
	h := hdr("Authorization", "Bearer "+key)
	for _, r := range []*Resolver{a, b} {
		if got, err := r.Resolve(context.Background(), h); err != nil || got != tid {
			t.Fatalf("before revoke: got %q, %v", got, err)
		}
	}
	if err := RevokeKey(context.Background(), rdb, key); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	// The positive TTL is 60s, so ErrUnknown within 2s can only come from
	// the pub/sub eviction.
	for name, r := range map[string]*Resolver{"a": a, "b": b} {
		if !eventually(2*time.Second, func() bool {
			_, err := r.Resolve(context.Background(), h)
			return errors.Is(err, ErrUnknown)
		}) {
			t.Fatalf("resolver %s still resolves the revoked key", name)
		}
	}
}

func TestRevokeErrors(t *testing.T) {
	rdb := testRedis(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		revoke func() error
		err    error
	}{
		{"malformed key", func() error { return RevokeKey(ctx, rdb, "nope") }, ErrInvalid},
		{"malformed hash", func() error { return RevokeKeyHash(ctx, rdb, "xyz") }, ErrInvalid},
		{"unknown key", func() error { return RevokeKey(ctx, rdb, "tg_"+randHex(t, 20)) }, ErrUnknown},
		{"hash upper case", func() error {
			key := issueTestKey(t, rdb, createTenant(t, rdb))
			return RevokeKeyHash(ctx, rdb, strings.ToUpper(HashKey(key)))
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.revoke()
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestIssueKey(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	seen := map[string]bool{}
	for range 5 {
		key := issueTestKey(t, rdb, tid)
		if !wellFormedKey(key) || seen[key] {
			t.Fatalf("IssueKey = %q: malformed or repeated", key)
		}
		seen[key] = true
		got, err := rdb.Get(context.Background(), apiKeyRedisKey(HashKey(key))).Result()
		if err != nil || got != tid {
			t.Fatalf("stored mapping: %q, %v", got, err)
		}
		if n, _ := rdb.Exists(context.Background(), "tg:apikey:"+key).Result(); n != 0 {
			t.Fatal("plain key stored")
		}
	}
	if _, err := IssueKey(context.Background(), rdb, "bad id"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad tenant id: err = %v", err)
	}
}

func TestResolveHeaderSource(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	unknown := "ten_test_" + randHex(t, 8)
	r := newTestResolver(t, config.TenantIdentification{Source: config.TenantHeader}, rdb)

	tests := []struct {
		name, header, value string
		want                string
		err                 error
	}{
		{"valid", "X-Tenant-Id", tid, tid, nil},
		{"missing", "", "", "", ErrMissing},
		{"empty", "X-Tenant-Id", "", "", ErrMissing},
		{"invalid chars", "X-Tenant-Id", "ten{1}", "", ErrInvalid},
		{"too long", "X-Tenant-Id", strings.Repeat("a", 65), "", ErrInvalid},
		{"unknown", "X-Tenant-Id", unknown, "", ErrUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 2 {
				got, err := r.Resolve(context.Background(), hdr(tt.header, tt.value))
				if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
					t.Fatalf("call %d: got %q, %v; want %q, %v", i, got, err, tt.want, tt.err)
				}
			}
		})
	}
}

// The header a source reads, sent more than once, is ErrRepeated (an
// ErrInvalid) whatever its lines hold: a front proxy that adds X-Tenant-Id
// instead of replacing it leaves the client's line first, and an upstream
// reading the last one would act for another tenant than the one metered.
// The check comes before the cache, so a warm cache does not let it through;
// the other source's header may repeat.
func TestResolveRepeatedHeader(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	other := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	otherKey := issueTestKey(t, rdb, other)
	tok := hsToken(t, testSecret, jwt.MapClaims{"tenant_id": tid})
	otherTok := hsToken(t, testSecret, jwt.MapClaims{"tenant_id": other})
	resolvers := map[config.TenantSource]*Resolver{
		config.TenantAPIKey: newTestResolver(t, apiKeyCfg, rdb),
		config.TenantHeader: newTestResolver(t, config.TenantIdentification{Source: config.TenantHeader}, rdb),
		config.TenantJWT: newTestResolver(t, config.TenantIdentification{Source: config.TenantJWT,
			JWT: config.JWT{Algorithm: "HS256", Secret: testSecret}}, rdb),
	}
	// Every value below is cached before the table runs.
	for src, vals := range map[config.TenantSource][]string{
		config.TenantAPIKey: {"Authorization: Bearer " + key, "Authorization: Bearer " + otherKey},
		config.TenantHeader: {"X-Tenant-Id: " + tid, "X-Tenant-Id: " + other},
		config.TenantJWT:    {"Authorization: Bearer " + tok, "Authorization: Bearer " + otherTok},
	} {
		for _, v := range vals {
			if _, err := resolvers[src].Resolve(context.Background(), rawHdr(t, v)); err != nil {
				t.Fatalf("%s: warm-up %q: %v", src, v, err)
			}
		}
	}

	tests := []struct {
		name   string
		source config.TenantSource
		lines  []string
		want   string
		err    error
	}{
		{"header once", config.TenantHeader, []string{"X-Tenant-Id: " + tid}, tid, nil},
		{"header added after the client's", config.TenantHeader,
			[]string{"X-Tenant-Id: " + other, "X-Tenant-Id: " + tid}, "", ErrRepeated},
		{"header twice, same value", config.TenantHeader,
			[]string{"X-Tenant-Id: " + tid, "X-Tenant-Id: " + tid}, "", ErrRepeated},
		{"header twice, first empty", config.TenantHeader,
			[]string{"X-Tenant-Id:", "X-Tenant-Id: " + tid}, "", ErrRepeated},
		{"header twice, other spellings", config.TenantHeader,
			[]string{"x-tenant-id: " + other, "X-TENANT-ID: " + tid}, "", ErrRepeated},
		{"header twice, apart", config.TenantHeader,
			[]string{"X-Tenant-Id: " + other, "Accept: */*", "X-Tenant-Id: " + tid}, "", ErrRepeated},
		{"header once, authorization twice", config.TenantHeader,
			[]string{"X-Tenant-Id: " + tid, "Authorization: Bearer " + otherKey, "Authorization: Bearer " + key}, tid, nil},
		{"api key once", config.TenantAPIKey, []string{"Authorization: Bearer " + key}, tid, nil},
		{"api key added after the client's", config.TenantAPIKey,
			[]string{"Authorization: Bearer " + otherKey, "Authorization: Bearer " + key}, "", ErrRepeated},
		{"api key twice, same key", config.TenantAPIKey,
			[]string{"Authorization: Bearer " + key, "Authorization: Bearer " + key}, "", ErrRepeated},
		{"api key twice, first not bearer", config.TenantAPIKey,
			[]string{"Authorization: Basic dXNlcjpwYXNz", "Authorization: Bearer " + key}, "", ErrRepeated},
		{"api key once, tenant header twice", config.TenantAPIKey,
			[]string{"Authorization: Bearer " + key, "X-Tenant-Id: " + other, "X-Tenant-Id: " + tid}, tid, nil},
		{"jwt once", config.TenantJWT, []string{"Authorization: Bearer " + tok}, tid, nil},
		{"jwt added after the client's", config.TenantJWT,
			[]string{"Authorization: Bearer " + otherTok, "Authorization: Bearer " + tok}, "", ErrRepeated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := resolvers[tt.source]
			for i := range 2 {
				got, err := r.Resolve(context.Background(), rawHdr(t, tt.lines...))
				if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
					t.Fatalf("call %d: got %q, %v; want %q, %v", i, got, err, tt.want, tt.err)
				}
				if tt.err == ErrRepeated && !errors.Is(err, ErrInvalid) {
					t.Fatalf("call %d: %v is not ErrInvalid", i, err)
				}
			}
		})
	}
}

// A tenant looked up before it existed is cached as unknown; Invalidate makes
// every Resolver look again.
func TestInvalidateTenant(t *testing.T) {
	rdb := testRedis(t)
	tid := "ten_test_" + randHex(t, 8)
	r := newTestResolver(t, config.TenantIdentification{Source: config.TenantHeader}, rdb)
	h := hdr("X-Tenant-Id", tid)
	if _, err := r.Resolve(context.Background(), h); !errors.Is(err, ErrUnknown) {
		t.Fatalf("before create: err = %v", err)
	}
	addTenant(t, rdb, tid)
	if _, err := r.Resolve(context.Background(), h); !errors.Is(err, ErrUnknown) {
		t.Fatalf("negative answer not cached: err = %v", err)
	}
	if err := Invalidate(context.Background(), rdb, tid); err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	if !eventually(2*time.Second, func() bool {
		got, err := r.Resolve(context.Background(), h)
		return err == nil && got == tid
	}) {
		t.Fatal("tenant still unknown after Invalidate")
	}
	if err := Invalidate(context.Background(), rdb, "bad id"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad tenant id: err = %v", err)
	}
}

// Invalidate(tenant) also drops the tenant's cached API keys.
func TestInvalidateTenantDropsKeys(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	r := newTestResolver(t, apiKeyCfg, rdb)
	h := hdr("Authorization", "Bearer "+key)
	if _, err := r.Resolve(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	rdb.Del(context.Background(), apiKeyRedisKey(HashKey(key))) // deleted without a key message
	if err := Invalidate(context.Background(), rdb, tid); err != nil {
		t.Fatal(err)
	}
	if !eventually(2*time.Second, func() bool {
		_, err := r.Resolve(context.Background(), h)
		return errors.Is(err, ErrUnknown)
	}) {
		t.Fatal("key still cached after tenant invalidation")
	}
}

// Killing the subscription connection makes go-redis reconnect; the Resolver
// must then drop its cache because it may have missed invalidations.
func TestReconnectDropsCache(t *testing.T) {
	name := "tenant-test-" + randHex(t, 6)
	rdb := testRedisNamed(t, name)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	r := newTestResolver(t, apiKeyCfg, rdb)
	h := hdr("Authorization", "Bearer "+key)
	if _, err := r.Resolve(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	// Missed invalidation: the key is gone but nothing was published.
	rdb.Del(context.Background(), apiKeyRedisKey(HashKey(key)))
	killSubscriber(t, rdb, name)
	if !eventually(5*time.Second, func() bool {
		_, err := r.Resolve(context.Background(), h)
		return errors.Is(err, ErrUnknown)
	}) {
		t.Fatal("cache survived a subscription reconnect")
	}
}

// killSubscriber kills this test's pub/sub connection only: other tests share
// the Redis server.
func killSubscriber(t *testing.T, rdb *redis.Client, name string) {
	t.Helper()
	ctx := context.Background()
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	killed := 0
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		fields := map[string]string{}
		for _, f := range strings.Fields(sc.Text()) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		if fields["name"] != name || fields["sub"] == "0" || fields["sub"] == "" {
			continue
		}
		if err := rdb.ClientKillByFilter(ctx, "ID", fields["id"]).Err(); err != nil {
			t.Fatalf("CLIENT KILL ID %s: %v", fields["id"], err)
		}
		killed++
	}
	if killed != 1 {
		t.Fatalf("found %d subscriber connections named %s, want 1", killed, name)
	}
}

func TestRedisErrorIsNotASentinel(t *testing.T) {
	dead := deadRedis(t)
	cfgs := map[string]config.TenantIdentification{
		"api_key": apiKeyCfg,
		"header":  {Source: config.TenantHeader},
	}
	values := map[string]*struct{ name, value string }{
		"api_key": {"Authorization", "Bearer " + goodKey},
		"header":  {"X-Tenant-Id", "ten_1"},
	}
	for src, cfg := range cfgs {
		t.Run(src, func(t *testing.T) {
			r, err := NewResolver(context.Background(), cfg, dead)
			if err != nil {
				t.Fatalf("NewResolver must not need Redis: %v", err)
			}
			defer r.Close()
			v := values[src]
			_, err = r.Resolve(context.Background(), hdr(v.name, v.value))
			if err == nil || isSentinel(err) {
				t.Fatalf("err = %v, want a store error that is no sentinel", err)
			}
		})
	}
}

// Garbage is rejected before any Redis call: against a dead Redis the
// answers are still the sentinels, not store errors.
func TestGarbageNeverReachesRedis(t *testing.T) {
	r, err := NewResolver(context.Background(), apiKeyCfg, deadRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, v := range []string{"", "Bearer", "Basic abc", "Bearer tg_x", "Bearer " + strings.ToUpper(goodKey), "Bearer " + goodKey + "0"} {
		_, err := r.Resolve(context.Background(), hdr("Authorization", v))
		if !errors.Is(err, ErrMissing) && !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: err = %v", v, err)
		}
	}
	twice := rawHdr(t, "Authorization: Bearer "+goodKey, "Authorization: Bearer "+goodKey)
	if _, err := r.Resolve(context.Background(), twice); !errors.Is(err, ErrRepeated) {
		t.Errorf("Authorization twice: err = %v, want ErrRepeated", err)
	}
}

func TestResolveAfterCloseBypassesCache(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	r, err := NewResolver(context.Background(), apiKeyCfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	h := hdr("Authorization", "Bearer "+key)
	if _, err := r.Resolve(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	rdb.Del(context.Background(), apiKeyRedisKey(HashKey(key)))
	if _, err := r.Resolve(context.Background(), h); !errors.Is(err, ErrUnknown) {
		t.Fatalf("closed resolver answered from a cache nobody invalidates: err = %v", err)
	}
}

func TestContextEndStopsSubscription(t *testing.T) {
	rdb := testRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := NewResolver(ctx, apiKeyCfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cancel()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("subscription still running after context end")
	}
	if r.live.Load() {
		t.Fatal("cache still in use without a subscription")
	}
}

func TestNewResolverConfigErrors(t *testing.T) {
	rdb := deadRedis(t)
	tests := []struct {
		name string
		cfg  config.TenantIdentification
	}{
		{"unknown source", config.TenantIdentification{Source: "cookie"}},
		{"hs256 without secret", config.TenantIdentification{Source: config.TenantJWT, JWT: config.JWT{Algorithm: "HS256"}}},
		{"rs256 bad pem", config.TenantIdentification{Source: config.TenantJWT, JWT: config.JWT{Algorithm: "RS256", PublicKeyPEM: []byte("nope")}}},
		{"unsupported alg", config.TenantIdentification{Source: config.TenantJWT, JWT: config.JWT{Algorithm: "ES256", Secret: []byte("x")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, err := NewResolver(context.Background(), tt.cfg, rdb); err == nil {
				r.Close()
				t.Fatal("want an error")
			}
		})
	}
	if _, err := NewResolver(context.Background(), apiKeyCfg, nil); err == nil {
		t.Fatal("nil client: want an error")
	}
}

// Concurrent resolves and invalidations, for the race detector.
func TestResolveConcurrent(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	r := newTestResolver(t, apiKeyCfg, rdb)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			h := hdr("Authorization", "Bearer "+key)
			for range 200 {
				if got, err := r.Resolve(context.Background(), h); err != nil || got != tid {
					t.Errorf("got %q, %v", got, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			r.apply("tenant:" + tid)
			r.apply("key:" + HashKey(key))
		}
		r.resetCaches()
	})
	wg.Wait()
}
