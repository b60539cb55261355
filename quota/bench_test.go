package quota

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/redistest"
)

// benchTenant is one benchmark's store and a one-message check for a fresh
// tenant on plan (limits overriding the plan's); lease puts messages in
// lease mode.
type benchTenant struct {
	rdb *redis.Client
	s   *Store
	c   *Check
}

func newBenchTenant(b *testing.B, plan string, limits map[string]int64, lease bool, opts ...Option) benchTenant {
	b.Helper()
	rdb := testClient(b)
	tc := newTestConfig()
	if lease {
		tc.messages.Mode = config.ModeLease
	}
	s := newStore(b, rdb, tc.Config, opts...)
	id := newTenant(b, s, rdb, tc.PlanBySlug[plan], 0, limits)
	closeFirst(b, s)
	return benchTenant{rdb: rdb, s: s, c: &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}}
}

// reserveLoop reserves bt's check b.N times, each time expecting want
// (and plan as the decision's plan name); commit also commits each
// admitted unit.
func reserveLoop(b *testing.B, bt benchTenant, want Outcome, plan string, commit bool) {
	ctx := context.Background()
	var d Decision
	b.ReportAllocs()
	for b.Loop() {
		if err := bt.s.Reserve(ctx, bt.c, &d); err != nil || d.Outcome != want || d.PlanName != plan {
			b.Fatalf("Reserve: %v %q %v, want %v %q", d.Outcome, d.PlanName, err, want, plan)
		}
		if commit {
			bt.s.Commit(ctx, &d, 1)
		}
	}
}

func BenchmarkReserve(b *testing.B) {
	reserveLoop(b, newBenchTenant(b, "pro", nil, false), Admitted, "", false)
}

// BenchmarkReserveLimited is BenchmarkReserve with a finite limit far
// above what the loop reaches (the bench harness' plans): the script reads
// the counter before it increments it.
func BenchmarkReserveLimited(b *testing.B) {
	reserveLoop(b, newBenchTenant(b, "pro", map[string]int64{"messages": 1_000_000_000_000}, false), Admitted, "", false)
}

// BenchmarkReserveOverLimit measures a tenant at its limit: every request
// is refused (the harness' at-limit scenario).
func BenchmarkReserveOverLimit(b *testing.B) {
	bt := newBenchTenant(b, "free", nil, false)
	ctx := context.Background()
	var d Decision
	for range 10 {
		if err := bt.s.Reserve(ctx, bt.c, &d); err != nil || d.Outcome != Admitted {
			b.Fatalf("Reserve: %v %v", d.Outcome, err)
		}
	}
	reserveLoop(b, bt, OverLimit, "Free", false)
}

func BenchmarkWriteHeaders(b *testing.B) {
	tc := newTestConfig()
	d := Decision{Outcome: Admitted, Feature: tc.messages, Current: 8, Limit: 10, Ceiling: 10, Warning: true, Reset: utc(2025, 6, 1, 0, 0, 0)}
	var h fasthttp.ResponseHeader
	b.ReportAllocs()
	for b.Loop() {
		d.WriteHeaders(&h)
	}
}

// BenchmarkReserveLease is BenchmarkReserve with the feature in lease mode:
// most requests are decided from the local lease without a Redis call.
func BenchmarkReserveLease(b *testing.B) {
	reserveLoop(b, newBenchTenant(b, "pro", nil, true), Admitted, "", true)
}

// BenchmarkReserveLeaseParallel measures the local path under contention
// from all CPUs on one tenant.
func BenchmarkReserveLeaseParallel(b *testing.B) {
	bt := newBenchTenant(b, "pro", nil, true)
	b.ReportAllocs()
	reserveParallel(b, bt)
}

// reserveParallel reserves bt's check from every goroutine RunParallel
// starts.
func reserveParallel(b *testing.B, bt benchTenant) {
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		var d Decision
		for pb.Next() {
			if err := bt.s.Reserve(ctx, bt.c, &d); err != nil || d.Outcome != Admitted {
				b.Errorf("Reserve: %v %v", d.Outcome, err)
				return
			}
		}
	})
}

// BenchmarkReserveParallel is the exact path with 16 calls per CPU in
// flight on one tenant (32 on 2 cores: the harness' connection count),
// through the pipeline and through go-redis's pool. Beside ns/op (the
// inverse of throughput) it reports this process's CPU per call and, on a
// Redis nobody else uses, the server's.
func BenchmarkReserveParallel(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []Option
	}{{"pipeline", nil}, {"pool", []Option{WithoutPipeline()}}} {
		b.Run(bc.name, func(b *testing.B) {
			bt := newBenchTenant(b, "pro", map[string]int64{"messages": 1_000_000_000_000}, false, bc.opts...)
			b.ReportAllocs()
			b.SetParallelism(16)
			cpu0, red0 := redistest.ProcessCPU(b), redistest.ServerCPU(b, bt.rdb)
			sent0 := bt.s.PipelinedCommands()
			reserveParallel(b, bt)
			b.StopTimer()
			n := float64(b.N)
			if bt.s.pipe != nil {
				// Below 1 when concurrent reserves left as one batch.
				b.ReportMetric(float64(bt.s.PipelinedCommands()-sent0)/n, "cmds/op")
			}
			b.ReportMetric(float64(redistest.ProcessCPU(b)-cpu0)/float64(time.Microsecond)/n, "cpu-us/op")
			b.ReportMetric(float64(redistest.ServerCPU(b, bt.rdb)-red0)/float64(time.Microsecond)/n, "redis-cpu-us/op")
		})
	}
}

// BenchmarkReserveScript is Redis's own time for the reserve decisions
// the pipeline sends (INFO commandstats, so it excludes the network and
// both processes' system calls), per request decided: a batch script run
// of eight identical requests (one tenant, one route), a batch of eight
// tenants' single requests, and, the baseline, the single-request script;
// "empty" is a script run that does nothing, for scale. Run it on a Redis
// nobody else uses: commandstats counts every client's EVALSHA.
func BenchmarkReserveScript(b *testing.B) {
	rdb := testClient(b)
	ctx := context.Background()
	const n = 8
	argv := func(tenant string) (keys []string, args []any) {
		return []string{entKey(tenant), "tg:{" + tenant + "}:m:0"}, []any{"0", "1", "1.1", "5", "3600", "l:m"}
	}
	tenants := make([]string, n)
	for i := range tenants {
		tenants[i] = randomTenant(b)
		if err := rdb.HSet(ctx, entKey(tenants[i]), "plan", "pro", "anchor", "0", "plan_name", "Pro", "l:m", "1000000000000").Err(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cleanupTenant(b, rdb, tenants[i]) })
	}
	// batch is one run per tenant given, count requests each.
	batch := func(count int, ts ...string) (keys []string, args []any) {
		for _, t := range ts {
			k, a := argv(t)
			keys = append(keys, k...)
			args = append(append(args, len(k), len(a), count), a...)
		}
		return keys, args
	}
	batchScript := redis.NewScript(reserveCore + "\n" + reserveBatch)
	oneKeys, oneArgs := argv(tenants[0])
	runKeys, runArgs := batch(n, tenants[0])
	allKeys, allArgs := batch(1, tenants...)
	for _, bc := range []struct {
		name   string
		script *redis.Script
		reqs   int // requests one script run decides
		keys   []string
		args   []any
	}{
		{"batch-one-run", batchScript, n, runKeys, runArgs},
		{"batch-eight-tenants", batchScript, n, allKeys, allArgs},
		{"one", reserveScript, 1, oneKeys, oneArgs},
		{"empty", redis.NewScript("return {}"), 1, nil, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if err := bc.script.Load(ctx, rdb).Err(); err != nil {
				b.Fatal(err)
			}
			us0, calls0 := evalshaStats(b, rdb)
			for b.Loop() {
				if err := bc.script.EvalSha(ctx, rdb, bc.keys, bc.args...).Err(); err != nil {
					b.Fatal(err)
				}
			}
			us, calls := evalshaStats(b, rdb)
			if calls-calls0 < int64(b.N) {
				b.Fatalf("commandstats counted %d EVALSHA, sent %d", calls-calls0, b.N)
			}
			b.ReportMetric(float64(us-us0)/float64(b.N*bc.reqs), "redis-us/req")
		})
	}
}

// evalshaStats is Redis's total time in EVALSHA, in µs, and its calls.
func evalshaStats(tb testing.TB, rdb *redis.Client) (us, calls int64) {
	tb.Helper()
	s, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				calls, err = strconv.ParseInt(v, 10, 64)
			case "usec":
				us, err = strconv.ParseInt(v, 10, 64)
			}
			if err != nil {
				tb.Fatalf("INFO commandstats %q: %v", line, err)
			}
		}
		return us, calls
	}
	return 0, 0
}
