package proxy_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
)

// BenchmarkHandlerLease compares, in one run, an unmetered request with a
// metered one in exact mode and in lease mode (the example configuration
// with mode: lease on messages), through the real handler: in-process
// client and fasthttp upstream, real Redis. The tenant's message limit is
// finite and far above what the run uses, so lease mode works below 50 % of
// its limit. Metrics beside ns/op, which a loaded machine skews most:
//
//   - redis-calls/op: commands the client sent (a script call or a
//     go-redis pipeline is one; the quota store's own pipeline counts
//     each command it carries), background lease flushes included;
//   - cpu-us/op: CPU time of this whole process (client, proxy, upstream,
//     GC) per request, steadier than wall time when other work shares the
//     cores;
//   - redis-cpu-us/op: Redis' own CPU time per request, server-wide, so it
//     only means something on a Redis nobody else uses
//     (TOLLGATE_TEST_REDIS_URL pointing at a private one).
//
// The -parallel variants keep 16 requests per CPU in flight on the same
// tenant (32 on 2 cores, the harness' connection count), so ns/op there is
// the inverse of throughput and lease contention shows.
func BenchmarkHandlerLease(b *testing.B) {
	upAddr := startBenchUpstream(b)

	exactYAML, err := os.ReadFile("../examples/pingback/tollgate.yaml")
	if err != nil {
		b.Fatal(err)
	}
	const metered = "  messages:\n    kind: metered\n"
	leaseYAML := bytes.Replace(exactYAML, []byte(metered), []byte(metered+"    mode: lease\n"), 1)
	if bytes.Equal(leaseYAML, exactYAML) {
		b.Fatal("example configuration changed: cannot set mode: lease on messages")
	}
	env := map[string]string{"TOLLGATE_UPSTREAM_URL": "http://" + upAddr, "TOLLGATE_REDIS_URL": redistest.URL()}

	rdb := newRedis(b)
	calls := &callCounter{}
	rdb.AddHook(calls)
	ctx := context.Background()

	type stack struct {
		cfg    *config.Config
		store  *quota.Store
		client *fasthttp.HostClient
	}
	build := func(data []byte) *stack {
		cfg, err := config.Parse("tollgate.yaml", data, func(k string) string { return env[k] })
		if err != nil {
			b.Fatal(err)
		}
		store := quota.New(rdb, cfg)
		b.Cleanup(func() { _ = store.Close() })
		resolver, err := tenant.NewResolver(ctx, cfg.Tenant, rdb)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = resolver.Close() })
		fwd, err := proxy.NewForwarder(cfg.Upstream)
		if err != nil {
			b.Fatal(err)
		}
		srv := proxy.NewServer(proxy.NewHandler(cfg, resolver, store, fwd).Serve, "bench", nil)
		ln := fasthttputil.NewInmemoryListener()
		go func() { _ = srv.Serve(ln) }()
		b.Cleanup(func() { _ = srv.Shutdown() })
		return &stack{cfg: cfg, store: store, client: &fasthttp.HostClient{
			Addr: "proxy", Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConns: 64,
		}}
	}
	exact, lease := build(exactYAML), build(leaseYAML)
	sent := func() int64 {
		return calls.n.Load() + int64(exact.store.PipelinedCommands()+lease.store.PipelinedCommands())
	}
	if f := lease.cfg.FeatureByName["messages"]; f.Mode != config.ModeLease {
		b.Fatalf("messages mode = %v, want lease", f.Mode)
	}

	tid := "ten_bench" + randomSuffix(b)
	const limit = 1_000_000_000
	if err := exact.store.PutEntitlement(ctx, quota.Entitlement{
		TenantID: tid, Plan: exact.cfg.PlanBySlug["pro"], Limits: map[string]int64{"messages": limit},
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteTenantKeys(rdb, tid) })
	key, err := tenant.IssueKey(ctx, rdb, tid)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tenant.RevokeKey(ctx, rdb, key) })

	cases := []struct {
		name, method, path string
		status             int
		st                 *stack
	}{
		{"unmetered", "GET", "/api/v1/agents", 200, exact},
		{"metered-exact", "POST", "/api/v1/messages", 201, exact},
		{"metered-lease", "POST", "/api/v1/messages", 201, lease},
	}
	// meteredSent counts the requests to the metered route that ran, so the
	// final check holds whichever sub-benchmarks a -bench filter picked.
	var meteredSent atomic.Int64
	newReq := func(method, path string) *fasthttp.Request {
		req := fasthttp.AcquireRequest()
		req.SetRequestURI("http://proxy" + path)
		req.Header.SetMethod(method)
		req.Header.Set("Authorization", "Bearer "+key)
		if method == "POST" {
			req.SetBodyString(`{"text":"hi"}`)
		}
		return req
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			req := newReq(bc.method, bc.path)
			defer fasthttp.ReleaseRequest(req)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseResponse(resp)
			b.ReportAllocs()
			m := startMeasure(b, rdb, sent)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := bc.st.client.Do(req, resp); err != nil {
					b.Fatal(err)
				}
				if resp.StatusCode() != bc.status {
					b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
				}
			}
			b.StopTimer()
			if bc.path == "/api/v1/messages" {
				meteredSent.Add(int64(b.N))
			}
			m.report(b)
		})
	}
	for _, bc := range cases {
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16)
			m := startMeasure(b, rdb, sent)
			b.RunParallel(func(pb *testing.PB) {
				req := newReq(bc.method, bc.path)
				defer fasthttp.ReleaseRequest(req)
				resp := fasthttp.AcquireResponse()
				defer fasthttp.ReleaseResponse(resp)
				for pb.Next() {
					if err := bc.st.client.Do(req, resp); err != nil {
						b.Error(err)
						return
					}
					if resp.StatusCode() != bc.status {
						b.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
						return
					}
					if bc.path == "/api/v1/messages" {
						meteredSent.Add(1)
					}
				}
			})
			b.StopTimer()
			m.report(b)
		})
	}

	// Both modes must count every admitted request: after the lease
	// store's final report each one is in the counter, once.
	_ = lease.store.Close()
	n, err := exact.store.Usage(ctx, tid, exact.cfg.FeatureByName["messages"])
	if err != nil || n != meteredSent.Load() {
		b.Fatalf("usage %d (%v) after %d metered requests", n, err, meteredSent.Load())
	}
}

// measure holds the counters at the start of a sub-benchmark.
type measure struct {
	rdb      *redis.Client
	sent     func() int64
	n0       int64
	cpu0     time.Duration
	redisCPU time.Duration
}

func startMeasure(b *testing.B, rdb *redis.Client, sent func() int64) *measure {
	return &measure{rdb: rdb, sent: sent, n0: sent(), cpu0: redistest.ProcessCPU(b), redisCPU: redistest.ServerCPU(b, rdb)}
}

func (m *measure) report(b *testing.B) {
	n := float64(b.N)
	b.ReportMetric(float64(m.sent()-m.n0)/n, "redis-calls/op")
	b.ReportMetric(float64(redistest.ProcessCPU(b)-m.cpu0)/float64(time.Microsecond)/n, "cpu-us/op")
	b.ReportMetric(float64(redistest.ServerCPU(b, m.rdb)-m.redisCPU)/float64(time.Microsecond)/n, "redis-cpu-us/op")
}

// callCounter counts the client's round trips.
type callCounter struct{ n atomic.Int64 }

func (c *callCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *callCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *callCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}
