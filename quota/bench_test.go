package quota

import (
	"context"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/redistest"
)

func BenchmarkReserve(b *testing.B) {
	rdb := testClient(b)
	tc := newTestConfig()
	s := newStore(b, rdb, tc.Config)
	id := newTenant(b, s, rdb, tc.PlanBySlug["pro"], 0, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	ctx := context.Background()
	var d Decision
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Reserve(ctx, c, &d); err != nil || d.Outcome != Admitted {
			b.Fatalf("Reserve: %v %v", d.Outcome, err)
		}
	}
}

// BenchmarkReserveLimited is BenchmarkReserve with a finite limit far
// above what the loop reaches (the bench harness' plans): the script reads
// the counter before it increments it.
func BenchmarkReserveLimited(b *testing.B) {
	rdb := testClient(b)
	tc := newTestConfig()
	s := newStore(b, rdb, tc.Config)
	id := newTenant(b, s, rdb, tc.PlanBySlug["pro"], 0, map[string]int64{"messages": 1_000_000_000_000})
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	ctx := context.Background()
	var d Decision
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Reserve(ctx, c, &d); err != nil || d.Outcome != Admitted {
			b.Fatalf("Reserve: %v %v", d.Outcome, err)
		}
	}
}

// BenchmarkReserveOverLimit measures a tenant at its limit: every request
// is refused (the harness' at-limit scenario).
func BenchmarkReserveOverLimit(b *testing.B) {
	rdb := testClient(b)
	tc := newTestConfig()
	s := newStore(b, rdb, tc.Config)
	id := newTenant(b, s, rdb, tc.PlanBySlug["free"], 0, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	ctx := context.Background()
	var d Decision
	for range 10 {
		if err := s.Reserve(ctx, c, &d); err != nil || d.Outcome != Admitted {
			b.Fatalf("Reserve: %v %v", d.Outcome, err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Reserve(ctx, c, &d); err != nil || d.Outcome != OverLimit || d.PlanName != "Free" {
			b.Fatalf("Reserve: %v %q %v", d.Outcome, d.PlanName, err)
		}
	}
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
	rdb := testClient(b)
	tc := newTestConfig()
	tc.messages.Mode = config.ModeLease
	s := newStore(b, rdb, tc.Config)
	id := newTenant(b, s, rdb, tc.PlanBySlug["pro"], 0, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	ctx := context.Background()
	var d Decision
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Reserve(ctx, c, &d); err != nil || d.Outcome != Admitted {
			b.Fatalf("Reserve: %v %v", d.Outcome, err)
		}
		s.Commit(ctx, &d, 1)
	}
}

// BenchmarkReserveLeaseParallel measures the local path under contention
// from all CPUs on one tenant.
func BenchmarkReserveLeaseParallel(b *testing.B) {
	rdb := testClient(b)
	tc := newTestConfig()
	tc.messages.Mode = config.ModeLease
	s := newStore(b, rdb, tc.Config)
	id := newTenant(b, s, rdb, tc.PlanBySlug["pro"], 0, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
	b.ReportAllocs()
	reserveParallel(b, s, c)
}

// reserveParallel reserves c from every goroutine RunParallel starts.
func reserveParallel(b *testing.B, s *Store, c *Check) {
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		var d Decision
		for pb.Next() {
			if err := s.Reserve(ctx, c, &d); err != nil || d.Outcome != Admitted {
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
	rdb := testClient(b)
	tc := newTestConfig()
	for _, bc := range []struct {
		name string
		opts []Option
	}{{"pipeline", nil}, {"pool", []Option{WithoutPipeline()}}} {
		b.Run(bc.name, func(b *testing.B) {
			s := newStore(b, rdb, tc.Config, bc.opts...)
			id := newTenant(b, s, rdb, tc.PlanBySlug["pro"], 0, map[string]int64{"messages": 1_000_000_000_000})
			c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
			b.ReportAllocs()
			b.SetParallelism(16)
			cpu0, red0 := redistest.ProcessCPU(b), redistest.ServerCPU(b, rdb)
			reserveParallel(b, s, c)
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(redistest.ProcessCPU(b)-cpu0)/float64(time.Microsecond)/n, "cpu-us/op")
			b.ReportMetric(float64(redistest.ServerCPU(b, rdb)-red0)/float64(time.Microsecond)/n, "redis-cpu-us/op")
		})
	}
}
