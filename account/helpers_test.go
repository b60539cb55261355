package account

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/billingtest"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/configtest"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
	"github.com/tollgate/tollgate/usage"
)

const jwtSecret = "account-test-dashboard-secret"

// deadAddr refuses connections at once: the way tests take a store down.
const deadAddr = "127.0.0.1:1"

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// deadPool is a pool on a port nothing listens on: PostgreSQL is down.
func deadPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://postgres@"+deadAddr+"/test?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatalf("dead pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// proxySettings are the proxy's Redis settings: short timeouts, no retries.
func proxySettings(opt *redis.Options) {
	opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	opt.DialTimeout = 200 * time.Millisecond
	opt.MaxRetries, opt.DialerRetries = -1, 1
}

// deadRedis is a client for a port nothing listens on: Redis is down.
func deadRedis(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL("redis://" + deadAddr + "/0")
	if err != nil {
		t.Fatalf("parse redis url: %v", err)
	}
	proxySettings(opt)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func liveRedis(t testing.TB) *redis.Client {
	t.Helper()
	return redistest.NewClient(t, proxySettings)
}

// loadConfig parses testdata/tollgate.yaml with upstream as the upstream.
func loadConfig(t testing.TB, upstream string) *config.Config {
	t.Helper()
	return configtest.Load(t, filepath.Join("testdata", "tollgate.yaml"), map[string]string{
		config.EnvUpstreamURL:       upstream,
		config.EnvRedisURL:          redistest.URL(),
		"TEST_DASHBOARD_JWT_SECRET": jwtSecret,
	})
}

type envOpts struct {
	// pgDown points the API's store at a dead PostgreSQL; setup still
	// writes to the live one.
	pgDown bool
	// redisDown points the API's usage reader at a dead Redis.
	redisDown bool
}

// env is the whole stack: PostgreSQL in a fresh schema, the real Redis, the
// API on a root mux like the API listener's, and a proxy with the API
// mounted in front of a counting upstream.
type env struct {
	t        testing.TB
	cfg      *config.Config
	db       *billing.Store // the live store setup writes to
	rdb      *redis.Client
	quota    *quota.Store
	api      *API
	apiURL   string
	proxyURL string
	upHits   atomic.Int64
	client   *http.Client
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{t: t, rdb: liveRedis(t), client: &http.Client{Timeout: 15 * time.Second}}
	t.Cleanup(e.client.CloseIdleConnections)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		e.upHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		status := http.StatusOK
		if r.Method == http.MethodPost {
			status = http.StatusCreated
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"upstream":true}`)
	}))
	t.Cleanup(up.Close)
	e.cfg = loadConfig(t, up.URL)

	// Packages testing in parallel share the database: a fresh schema each.
	e.db = billingtest.NewStore(t, e.cfg, billingtest.MaxConns(4))
	e.quota = quota.New(e.rdb, e.cfg)
	t.Cleanup(func() { e.quota.Close() })

	apiStore := e.db
	if o.pgDown {
		apiStore = billing.New(deadPool(t))
	}
	var usage UsageReader = e.quota
	if o.redisDown {
		dead := quota.New(deadRedis(t), e.cfg)
		t.Cleanup(func() { dead.Close() })
		usage = dead
	}
	api, err := New(e.cfg, apiStore, usage, WithTimeout(2*time.Second))
	if err != nil {
		t.Fatalf("new api: %v", err)
	}
	e.api = api

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	api.Register(mux)
	apiSrv := httptest.NewServer(mux)
	t.Cleanup(apiSrv.Close)
	e.apiURL = apiSrv.URL

	resolver, err := tenant.NewResolver(context.Background(), e.cfg.Tenant, e.rdb, tenant.WithLookupTimeout(time.Second))
	if err != nil {
		t.Fatalf("tenant resolver: %v", err)
	}
	t.Cleanup(func() { resolver.Close() })
	fwd, err := proxy.NewForwarder(e.cfg.Upstream)
	if err != nil {
		t.Fatalf("forwarder: %v", err)
	}
	h := proxy.NewHandler(e.cfg, resolver, e.quota, fwd, proxy.WithMount(api.Mounts(), api))
	srv := proxy.NewServer(h.Serve, "tollgate-account-test", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	e.proxyURL = "http://" + ln.Addr().String()
	return e
}

// apiAt serves another API on the env's PostgreSQL with Redis down and its
// clock stopped at now, and returns its URL.
func (e *env) apiAt(now time.Time) string {
	e.t.Helper()
	dead := quota.New(deadRedis(e.t), e.cfg)
	e.t.Cleanup(func() { dead.Close() })
	api, err := New(e.cfg, e.db, dead, WithTimeout(2*time.Second), WithClock(func() time.Time { return now }))
	if err != nil {
		e.t.Fatalf("new api: %v", err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	e.t.Cleanup(srv.Close)
	return srv.URL
}

// fixture is a tenant in PostgreSQL, and in Redis as the admin API would
// write it through: entitlement and API key hash.
type fixture struct {
	billing.Tenant
	key string
}

// tenantOn creates a tenant on plan ("" for pay-as-you-go).
func (e *env) tenantOn(plan string) fixture {
	e.t.Helper()
	ctx := testCtx(e.t)
	tn, key, err := e.db.CreateTenant(ctx, "acme-"+randomHex(e.t, 3), plan)
	if err != nil {
		e.t.Fatalf("create tenant on %q: %v", plan, err)
	}
	hash := "tg:apikey:" + tenant.HashKey(key)
	e.t.Cleanup(func() {
		ctx := context.Background()
		e.rdb.Del(ctx, hash)
		iter := e.rdb.Scan(ctx, 0, "tg:{"+tn.ID+"}:*", 100).Iterator()
		for iter.Next(ctx) {
			e.rdb.Del(ctx, iter.Val())
		}
	})
	if plan != "" {
		if err := e.quota.PutEntitlement(ctx, quota.Entitlement{TenantID: tn.ID, Plan: e.cfg.PlanBySlug[plan]}); err != nil {
			e.t.Fatalf("put entitlement: %v", err)
		}
		// The proxy's key lookup (see tenant.IssueKey): the same key works
		// on the proxy and on the billing API.
		if err := e.rdb.Set(ctx, hash, tn.ID, 0).Err(); err != nil {
			e.t.Fatalf("store key hash: %v", err)
		}
	}
	return fixture{Tenant: tn, key: key}
}

// flush stores items as a proxy's flusher does (usage.StoreSink →
// ApplySnapshots): metered counters per period in usage, gauges without a
// period in gauges. Items without an observation time get now's.
func (e *env) flush(items ...usage.Item) {
	e.t.Helper()
	ctx := testCtx(e.t)
	epoch, err := e.db.BeginEpoch(ctx)
	if err != nil {
		e.t.Fatalf("begin epoch: %v", err)
	}
	for i := range items {
		if items[i].ObservedAtUS == 0 {
			items[i].ObservedAtUS = time.Now().UnixMicro()
		}
	}
	b := usage.Batch{ID: "b-" + randomHex(e.t, 4), ProxyID: "test", Epoch: epoch, Items: items}
	if _, err := e.db.ApplySnapshots(ctx, b); err != nil {
		e.t.Fatalf("apply snapshots: %v", err)
	}
}

// metered is a flushed metered counter of the period [start, end).
func metered(tenantID, feature string, start, end time.Time, used int64) usage.Item {
	return usage.Item{TenantID: tenantID, Feature: feature, PeriodStart: start.Unix(), PeriodEnd: end.Unix(), Used: used}
}

// gauge is a flushed gauge: no period.
func gauge(tenantID, feature string, n int64) usage.Item {
	return usage.Item{TenantID: tenantID, Feature: feature, Used: n}
}

// token signs a dashboard token for tenants (a []string or a string).
func signToken(t testing.TB, tenants any, mutate ...func(jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "user_1", "tenants": tenants, "exp": time.Now().Add(time.Hour).Unix()}
	for _, m := range mutate {
		m(claims)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic value, failing on anything but JSON.
func (r reply) json(t testing.TB) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.body)
	}
	return v
}

// get sends a GET to base+path with an Authorization bearer (when cred is
// set) and extra headers as name, value pairs.
func (e *env) get(base, path, cred string, hdr ...string) reply {
	e.t.Helper()
	return e.do(http.MethodGet, base+path, cred, hdr...)
}

func (e *env) do(method, url, cred string, hdr ...string) reply {
	e.t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read: %v", method, url, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// bases are where the API answers: the API listener's root and the proxy
// under each mount prefix.
func (e *env) bases() map[string]string {
	out := map[string]string{"root": e.apiURL}
	for _, m := range e.cfg.Account.Mounts {
		out["proxy"+m] = e.proxyURL + m
	}
	return out
}

// wantError checks a JSON error answer.
func wantError(t testing.TB, r reply, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q, want JSON: %s", ct, r.body)
	}
	v := r.json(t)
	if v["error"] != code {
		t.Fatalf("error = %v, want %q: %s", v["error"], code, r.body)
	}
	if m, ok := v["message"].(string); !ok || m == "" {
		t.Fatalf("no message: %s", r.body)
	}
}
