package proxy_test

import (
	"context"
	"net"
	"os"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
)

// BenchmarkHandler measures whole requests through the metering handler
// (client, proxy and a fasthttp upstream in one process; real Redis), so
// unmetered and metered figures are comparable within one run.
func BenchmarkHandler(b *testing.B) {
	upAddr := startBenchUpstream(b)

	data, err := os.ReadFile("../examples/pingback/tollgate.yaml")
	if err != nil {
		b.Fatal(err)
	}
	env := map[string]string{"TOLLGATE_UPSTREAM_URL": "http://" + upAddr, "TOLLGATE_REDIS_URL": redistest.URL()}
	cfg, err := config.Parse("tollgate.yaml", data, func(k string) string { return env[k] })
	if err != nil {
		b.Fatal(err)
	}
	rdb := newRedis(b)
	store := quota.New(rdb, cfg)
	defer store.Close()
	resolver, err := tenant.NewResolver(context.Background(), cfg.Tenant, rdb)
	if err != nil {
		b.Fatal(err)
	}
	defer resolver.Close()
	fwd, err := proxy.NewForwarder(cfg.Upstream)
	if err != nil {
		b.Fatal(err)
	}
	h := proxy.NewHandler(cfg, resolver, store, fwd)
	srv := proxy.NewServer(h.Serve, "bench", nil)
	ln := fasthttputil.NewInmemoryListener()
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown() }()

	ctx := context.Background()
	tid := "ten_bench" + randomSuffix(b)
	if err := store.PutEntitlement(ctx, quota.Entitlement{TenantID: tid, Plan: cfg.PlanBySlug["pro"]}); err != nil {
		b.Fatal(err)
	}
	// Unlimited messages: the benchmark must never hit the limit.
	if err := rdb.HSet(ctx, "tg:{"+tid+"}:ent", "l:messages", -1).Err(); err != nil {
		b.Fatal(err)
	}
	defer deleteTenantKeys(rdb, tid)
	key, err := tenant.IssueKey(ctx, rdb, tid)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tenant.RevokeKey(ctx, rdb, key) }()

	client := &fasthttp.HostClient{Addr: "proxy", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	for _, bc := range []struct {
		name, method, path string
		status             int
	}{
		{"unmetered", "GET", "/api/v1/agents", 200},
		{"metered-exact", "POST", "/api/v1/messages", 201},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := fasthttp.AcquireRequest()
			defer fasthttp.ReleaseRequest(req)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://proxy" + bc.path)
			req.Header.SetMethod(bc.method)
			req.Header.Set("Authorization", "Bearer "+key)
			if bc.method == "POST" {
				req.SetBodyString(`{"text":"hi"}`)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := client.Do(req, resp); err != nil {
					b.Fatal(err)
				}
				if resp.StatusCode() != bc.status {
					b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
				}
			}
		})
	}
	if n, _ := store.Usage(ctx, tid, cfg.FeatureByName["messages"]); n == 0 {
		b.Fatal("metered requests were not counted")
	}
}

// startBenchUpstream runs a minimal fasthttp upstream (201 for POST, 200
// otherwise, a small JSON body) until the benchmark ends, so the handler
// rather than the upstream is what is measured.
func startBenchUpstream(b *testing.B) string {
	b.Helper()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if ctx.IsPost() {
			ctx.SetStatusCode(fasthttp.StatusCreated)
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"ok":true}`)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}
