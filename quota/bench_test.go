package quota

import (
	"context"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/config"
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
