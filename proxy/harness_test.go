package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/admin"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/billingtest"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/rawconn"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
)

const adminToken = "test-admin-token"

// newRedis connects to the real Redis and fails the test when it is not
// there: a quota test that skips proves nothing.
func newRedis(t testing.TB) *redis.Client {
	t.Helper()
	return redistest.NewClient(t, func(opt *redis.Options) { opt.PoolSize = 64 })
}

// upstream is the API behind the proxy in tests. Each request's answer is
// steered by headers: X-Test-Status picks the status, X-Test-Sleep delays
// the answer, X-Test-Tokens is echoed as X-Tokens-Used.
type upstream struct {
	srv  *httptest.Server
	hits sync.Map // "METHOD /path" → *atomic.Int64
	all  atomic.Int64
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		u.all.Add(1)
		c, _ := u.hits.LoadOrStore(r.Method+" "+r.URL.Path, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
		if d := r.Header.Get("X-Test-Sleep"); d != "" {
			dur, _ := time.ParseDuration(d)
			select {
			case <-time.After(dur):
			case <-r.Context().Done():
			}
		}
		if tok := r.Header.Get("X-Test-Tokens"); tok != "" {
			w.Header().Set("X-Tokens-Used", tok)
		}
		status := http.StatusOK
		switch r.Method {
		case http.MethodPost:
			status = http.StatusCreated
		case http.MethodDelete:
			status = http.StatusNoContent
		}
		if s := r.Header.Get("X-Test-Status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status != http.StatusNoContent {
			_, _ = io.WriteString(w, `{"ok":true}`)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) count(method, path string) int64 {
	c, ok := u.hits.Load(method + " " + path)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

// instance is one Tollgate proxy (handler, quota store, tenant resolver,
// its own Redis client) listening on loopback.
type instance struct {
	url   string
	store *quota.Store
	rdb   *redis.Client
}

type harness struct {
	t        testing.TB
	cfg      *config.Config
	rdb      *redis.Client
	db       *billing.Store
	up       *upstream
	proxies  []*instance
	adminURL string
	client   *http.Client
}

type harnessOpts struct {
	configPath string
	instances  int
	clock      func() time.Time
	// edit changes the configuration file's text before it is parsed.
	edit func(string) string
	// upstreamURL replaces the test upstream (e.g. a closed port).
	upstreamURL string
	// quotaRedisURL points the quota store at another Redis (e.g. a dead one).
	quotaRedisURL string
	redisTimeout  time.Duration
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	if o.configPath == "" {
		o.configPath = "../examples/pingback/tollgate.yaml"
	}
	if o.instances == 0 {
		o.instances = 1
	}
	h := &harness{t: t, rdb: newRedis(t), up: newUpstream(t)}
	upURL := h.up.srv.URL
	if o.upstreamURL != "" {
		upURL = o.upstreamURL
	}
	data, err := os.ReadFile(o.configPath)
	if err != nil {
		t.Fatalf("read config: %v", err)
	}
	text := string(data)
	if o.edit != nil {
		text = o.edit(text)
	}
	env := map[string]string{
		"TOLLGATE_UPSTREAM_URL": upURL,
		"TOLLGATE_REDIS_URL":    redistest.URL(),
		"TOLLGATE_ADMIN_TOKEN":  adminToken,
		"TOLLGATE_LISTEN":       "127.0.0.1:0",
		"TOLLGATE_API_LISTEN":   "127.0.0.1:0",
	}
	cfg, err := config.Parse(o.configPath, []byte(text), func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	if o.redisTimeout > 0 {
		cfg.Redis.Timeout = o.redisTimeout
	}
	h.cfg = cfg

	for i := 0; i < o.instances; i++ {
		h.proxies = append(h.proxies, h.startInstance(o))
	}

	// The admin API writes entitlements through a store on the live Redis,
	// whatever Redis the proxies' quota stores point at.
	adminStore := quota.New(h.rdb, cfg)
	t.Cleanup(func() { adminStore.Close() })
	mux := http.NewServeMux()
	h.db = billingtest.NewStore(t, cfg)
	admin.New(cfg, h.db, h.rdb, adminStore, nil).Register(mux)
	adminSrv := httptest.NewServer(mux)
	t.Cleanup(adminSrv.Close)
	h.adminURL = adminSrv.URL

	h.client = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 512,
			MaxConnsPerHost:     0,
		},
	}
	t.Cleanup(h.client.CloseIdleConnections)
	return h
}

func (h *harness) startInstance(o harnessOpts) *instance {
	t := h.t
	qURL := redistest.URL()
	if o.quotaRedisURL != "" {
		qURL = o.quotaRedisURL
	}
	opt, err := redis.ParseURL(qURL)
	if err != nil {
		t.Fatalf("parse redis url: %v", err)
	}
	opt.ReadTimeout = h.cfg.Redis.Timeout
	opt.WriteTimeout = h.cfg.Redis.Timeout
	opt.DialTimeout = max(h.cfg.Redis.Timeout, 100*time.Millisecond)
	opt.PoolTimeout = h.cfg.Redis.Timeout
	opt.MaxRetries = -1
	// go-redis retries a failed dial with pauses by default, which would
	// hold a request far past the timeout while Redis is down.
	opt.DialerRetries = 1
	opt.PoolSize = 64
	qrdb := redis.NewClient(opt)
	t.Cleanup(func() { qrdb.Close() })

	var qopts []quota.Option
	var popts []proxy.Option
	if o.clock != nil {
		qopts = append(qopts, quota.WithClock(o.clock))
		popts = append(popts, proxy.WithClock(o.clock))
	}
	store := quota.New(qrdb, h.cfg, qopts...)
	t.Cleanup(func() { store.Close() })

	// Tenants are resolved against the live Redis when the quota store's
	// Redis is made dead on purpose, so fail-open/closed can be observed.
	resolverRDB := qrdb
	if o.quotaRedisURL != "" {
		resolverRDB = h.rdb
	}
	resolver, err := tenant.NewResolver(context.Background(), h.cfg.Tenant, resolverRDB, tenant.WithLookupTimeout(time.Second))
	if err != nil {
		t.Fatalf("tenant resolver: %v", err)
	}
	t.Cleanup(func() { resolver.Close() })
	fwd, err := proxy.NewForwarder(h.cfg.Upstream)
	if err != nil {
		t.Fatalf("forwarder: %v", err)
	}
	handler := proxy.NewHandler(h.cfg, resolver, store, fwd, popts...)
	srv := proxy.NewServer(handler.Serve, "tollgate-test", nil)
	// The listener tollgate serve uses, so these tests cover its connections.
	ln, err := rawconn.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return &instance{url: "http://" + ln.Addr().String(), store: store, rdb: qrdb}
}

// tenant is a tenant created through the admin API.
type testTenant struct {
	ID     string `json:"id"`
	Plan   string `json:"plan"`
	APIKey string `json:"api_key"`
}

func (h *harness) createTenant(plan string) testTenant {
	h.t.Helper()
	status, body := h.adminCall(http.MethodPost, "/admin/v1/tenants", fmt.Sprintf(`{"name":"acme","plan":%q}`, plan))
	if status != http.StatusCreated {
		h.t.Fatalf("create tenant: %d %s", status, body)
	}
	var tt testTenant
	if err := json.Unmarshal(body, &tt); err != nil {
		h.t.Fatalf("create tenant: %v in %s", err, body)
	}
	h.t.Cleanup(func() { h.deleteTenantKeys(tt.ID) })
	return tt
}

func (h *harness) deleteTenantKeys(id string) { deleteTenantKeys(h.rdb, id) }

func deleteTenantKeys(rdb *redis.Client, id string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, "tg:{"+id+"}:*", 100).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

func randomSuffix(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func (h *harness) setPlan(id, plan string) {
	h.t.Helper()
	status, body := h.adminCall(http.MethodPut, "/admin/v1/tenants/"+id+"/plan", fmt.Sprintf(`{"plan":%q}`, plan))
	if status != http.StatusOK {
		h.t.Fatalf("set plan: %d %s", status, body)
	}
}

func (h *harness) adminCall(method, path, body string) (int, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.adminURL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request through proxy instance i. Extra headers come as
// name, value pairs.
func (h *harness) do(i int, key, method, path, body string, hdr ...string) (response, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.proxies[i].url+path, r)
	if err != nil {
		return response{}, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for j := 0; j+1 < len(hdr); j += 2 {
		req.Header.Set(hdr[j], hdr[j+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// call is do on instance 0, failing the test on transport errors.
func (h *harness) call(key, method, path, body string, hdr ...string) response {
	h.t.Helper()
	resp, err := h.do(0, key, method, path, body, hdr...)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func (h *harness) usage(tenantID, feature string) int64 {
	h.t.Helper()
	n, err := h.proxies[0].store.Usage(context.Background(), tenantID, h.cfg.FeatureByName[feature])
	if err != nil {
		h.t.Fatalf("usage %s: %v", feature, err)
	}
	return n
}

// golden compares body with testdata/NAME, byte for byte.
func golden(t testing.TB, name string, body []byte) {
	t.Helper()
	want, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatalf("golden %s: %v", name, err)
	}
	want = bytes.TrimRight(want, "\n")
	if !bytes.Equal(body, want) {
		t.Fatalf("body differs from testdata/%s\n got: %s\nwant: %s", name, body, want)
	}
}

// rawCall sends raw bytes to proxy instance 0, so a test controls every
// byte of the request line and header, and returns the status and body.
func (h *harness) rawCall(raw string) (int, []byte) {
	h.t.Helper()
	resp, body := fwdRawDo(h.t, strings.TrimPrefix(h.proxies[0].url, "http://"), raw)
	return resp.StatusCode, body
}
