package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/admin"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/billingtest"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
)

const (
	token  = "s3cret-admin"
	bearer = "Bearer " + token
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// switchableRedis is a client of the real Redis whose dialer can be turned
// off, to take Redis "down" and bring it back within one test. Retries are
// off so a down Redis fails fast.
type switchableRedis struct {
	*redis.Client
	down atomic.Bool
}

// switchableConn fails every read and write while down, so connections
// pooled before the switch stop working too.
type switchableConn struct {
	net.Conn
	down *atomic.Bool
}

var errSwitchedOff = errors.New("redis switched off by the test")

func (c *switchableConn) Read(b []byte) (int, error) {
	if c.down.Load() {
		return 0, errSwitchedOff
	}
	return c.Conn.Read(b)
}

func (c *switchableConn) Write(b []byte) (int, error) {
	if c.down.Load() {
		return 0, errSwitchedOff
	}
	return c.Conn.Write(b)
}

func newRedis(t *testing.T) *switchableRedis {
	t.Helper()
	s := &switchableRedis{}
	s.Client = redistest.NewClient(t, func(opt *redis.Options) {
		opt.MaxRetries = -1
		opt.DialerRetries = 1
		opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if s.down.Load() {
				return nil, errSwitchedOff
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &switchableConn{Conn: c, down: &s.down}, nil
		}
	})
	return s
}

func loadConfig(t *testing.T) *config.Config {
	t.Helper()
	env := map[string]string{"TOLLGATE_ADMIN_TOKEN": token}
	data, err := os.ReadFile("../examples/pingback/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("tollgate.yaml", data, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type env struct {
	t     *testing.T
	cfg   *config.Config
	db    *billing.Store
	rdb   *switchableRedis
	quota *quota.Store
	api   *admin.API
	srv   *httptest.Server
}

// setup builds the admin API on a fresh schema and the live Redis.
func setup(t *testing.T) *env {
	t.Helper()
	cfg := loadConfig(t)
	// Packages testing in parallel share the database: a fresh schema each.
	e := &env{t: t, cfg: cfg, db: billingtest.NewStore(t, cfg, billingtest.MaxConns(4)), rdb: newRedis(t)}
	e.api, e.quota, e.srv = e.serve(e.rdb)
	return e
}

// serve starts another admin API on the same database and the given Redis.
func (e *env) serve(rdb redis.UniversalClient) (*admin.API, *quota.Store, *httptest.Server) {
	return e.serveWith(rdb, nil)
}

// serveWith is serve with the quota store wrapped by wrap (nil: as is),
// for a worker whose Redis writes a test holds up.
func (e *env) serveWith(rdb redis.UniversalClient, wrap func(*quota.Store) admin.Entitlements) (*admin.API, *quota.Store, *httptest.Server) {
	store := quota.New(rdb, e.cfg)
	e.t.Cleanup(func() { store.Close() })
	var ents admin.Entitlements = store
	if wrap != nil {
		ents = wrap(store)
	}
	api := admin.New(e.cfg, e.db, rdb, ents, nil)
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	e.t.Cleanup(srv.Close)
	return api, store, srv
}

type obj = map[string]any

func (e *env) call(method, path, auth, body string) (int, obj) {
	return callAt(e.t, e.srv, method, path, auth, body)
}

func callAt(t *testing.T, srv *httptest.Server, method, path, auth, body string) (int, obj) {
	t.Helper()
	status, out, err := doCall(srv, method, path, auth, body)
	if err != nil {
		t.Fatal(err)
	}
	return status, out
}

// doCall is callAt without the test, for goroutines.
func doCall(srv *httptest.Server, method, path, auth, body string) (int, obj, error) {
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return 0, nil, fmt.Errorf("%s %s: content type %q", method, path, ct)
	}
	raw, _ := io.ReadAll(resp.Body)
	out := obj{}
	if err := json.Unmarshal(raw, &out); err != nil {
		return 0, nil, fmt.Errorf("%s %s: body %s is not a JSON object: %w", method, path, raw, err)
	}
	return resp.StatusCode, out, nil
}

// must calls and fails the test unless the status is want.
func (e *env) must(want int, method, path, body string) obj {
	e.t.Helper()
	status, got := e.call(method, path, bearer, body)
	if status != want {
		e.t.Fatalf("%s %s: %d %v, want %d", method, path, status, got, want)
	}
	return got
}

// createTenant creates a tenant through the API and removes its Redis keys
// when the test ends.
func (e *env) createTenant(name, plan string) (id, key string) {
	e.t.Helper()
	body := `{"name":"` + name + `"}`
	if plan != "" {
		body = `{"name":"` + name + `","plan":"` + plan + `"}`
	}
	got := e.must(http.StatusCreated, "POST", "/admin/v1/tenants", body)
	id, _ = got["id"].(string)
	key, _ = got["api_key"].(string)
	e.cleanupTenant(id)
	return id, key
}

// cleanupTenant deletes the tenant's Redis keys at the end of the test;
// registered after the pool, so it runs while the pool is open.
func (e *env) cleanupTenant(id string) {
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rdb := redis.NewClient(mustParse(e.t))
		defer rdb.Close()
		if live, revoked, err := e.db.KeyHashes(ctx, id); err == nil {
			for _, h := range append(live, revoked...) {
				rdb.Del(ctx, "tg:apikey:"+h)
			}
		}
		iter := rdb.Scan(ctx, 0, "tg:{"+id+"}:*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
}

func mustParse(t *testing.T) *redis.Options {
	opt, err := redis.ParseURL(redistest.URL())
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

func (e *env) ent(id string) map[string]string {
	e.t.Helper()
	h, err := e.rdb.HGetAll(testCtx(e.t), "tg:{"+id+"}:ent").Result()
	if err != nil {
		e.t.Fatalf("read entitlements of %s: %v", id, err)
	}
	return h
}

// eventually polls cond every 20 ms for at most 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10 s", what)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// pgxpoolNew makes a pool without connecting, for an unreachable server.
func pgxpoolNew(url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	return pgxpool.NewWithConfig(context.Background(), cfg)
}

// quietLogger drops go-redis' own log lines, which the Redis-down tests
// would otherwise fill with expected dial failures.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	os.Exit(m.Run())
}

// resolver returns the proxy's view of an API key: the tenant it resolves
// to through a tenant.Resolver on e's Redis, as a proxy would.
func (e *env) resolver(ctx context.Context) func(key string) (string, error) {
	e.t.Helper()
	res, err := tenant.NewResolver(ctx, e.cfg.Tenant, e.rdb)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { res.Close() })
	return func(key string) (string, error) {
		var h fasthttp.RequestHeader
		h.Set("Authorization", "Bearer "+key)
		return res.Resolve(ctx, &h)
	}
}
