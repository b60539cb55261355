package usage_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/usage"
)

func TestFlusherDeliversAbsoluteSnapshots(t *testing.T) {
	cfg := testConfig(t)
	for _, mode := range []string{"multi", "script"} {
		t.Run(mode, func(t *testing.T) {
			rdb := sharedRedis(t)
			store, _ := newBilling(t, cfg)
			epochKey, _ := newEpoch(t, rdb, store)
			prefix := tenantPrefix(t, rdb)
			opts := []usage.FlusherOption{usage.WithEpochKey(epochKey), usage.WithSweepTenants(prefix + "*")}
			if mode == "script" {
				opts = append(opts, usage.WithScriptRead())
			}
			f := usage.NewFlusher(rdb, usage.StoreSink{Store: store}, opts...)
			ctx := testCtx(t)

			tid := prefix + "-a"
			start, _ := thisMonth()
			msgKey, agentKey := meteredKey(tid, "messages", start), "tg:{"+tid+"}:g:agents"
			rdb.IncrBy(ctx, msgKey, 5)
			rdb.Set(ctx, agentKey, 2, 0)
			rdb.Set(ctx, msgKey+":d:batch-1", 1, 0) // a quota reconcile marker: not a counter

			if err := f.Flush(ctx); err != nil { // the first flush sweeps
				t.Fatal(err)
			}
			if m, a := totals(t, store, tid); m != 5 || a != 2 {
				t.Fatalf("after the first flush: messages %d agents %d, want 5 and 2", m, a)
			}
			for i, step := range []struct {
				incr, agents, want int64
			}{{3, 1, 8}, {0, 1, 8}, {10, 0, 18}} {
				rdb.IncrBy(ctx, msgKey, step.incr)
				rdb.Set(ctx, agentKey, step.agents, 0)
				f.Touch(msgKey)
				f.Touch(agentKey)
				if err := f.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if m, a := totals(t, store, tid); m != step.want || a != step.agents {
					t.Fatalf("step %d: messages %d agents %d, want %d and %d", i, m, a, step.want, step.agents)
				}
			}
			if err := f.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFlusherHoldsBackWithoutEpochAndAfterARestore(t *testing.T) {
	cfg := testConfig(t)
	rdb := sharedRedis(t)
	store, _ := newBilling(t, cfg)
	epochKey, e1 := newEpoch(t, rdb, store)
	prefix := tenantPrefix(t, rdb)
	ctx := testCtx(t)
	f := usage.NewFlusher(rdb, usage.StoreSink{Store: store},
		usage.WithEpochKey(epochKey), usage.WithSweepTenants(prefix+"*"))

	tid := prefix + "-b"
	start, _ := thisMonth()
	key := meteredKey(tid, "messages", start)
	rdb.IncrBy(ctx, key, 4)

	// No epoch (a wiped Redis): nothing may reach billing.
	rdb.Del(ctx, epochKey)
	if err := f.Flush(ctx); err == nil {
		t.Fatal("flush without an epoch succeeded")
	}
	if m, _ := totals(t, store, tid); m != 0 {
		t.Fatalf("billing got %d while Redis had no epoch", m)
	}
	rdb.Set(ctx, epochKey, e1, 0)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if m, _ := totals(t, store, tid); m != 4 {
		t.Fatalf("messages %d, want 4", m)
	}

	// Billing moved to a new epoch that this Redis does not carry: the
	// batch is refused and everything read under the old epoch dropped.
	if err := store.CompleteEpoch(ctx, e1); err != nil {
		t.Fatal(err)
	}
	e2, err := store.BeginEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rdb.IncrBy(ctx, key, 1)
	f.Touch(key)
	if err := f.Flush(ctx); !errors.Is(err, usage.ErrStaleEpoch) {
		t.Fatalf("flush under a stale epoch: err = %v, want ErrStaleEpoch", err)
	}
	if m, _ := totals(t, store, tid); m != 4 {
		t.Fatalf("a stale batch changed billing to %d", m)
	}
	// Once Redis carries the new epoch, a sweep re-reads every counter,
	// including the dropped one.
	rdb.Set(ctx, epochKey, e2, 0)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if m, _ := totals(t, store, tid); m != 5 {
		t.Fatalf("messages %d after the new epoch, want 5", m)
	}
}

// A key in Redis that looks like a counter but holds what the ingest would
// refuse (here a tenant id past its 128 characters) is never flushed: the
// ingest refuses a whole batch for one such item, and its batch-mates'
// usage would be dropped with it on every flush.
func TestFlusherLeavesOutWhatTheIngestRefuses(t *testing.T) {
	cfg := testConfig(t)
	rdb := sharedRedis(t)
	store, _ := newBilling(t, cfg)
	epochKey, _ := newEpoch(t, rdb, store)
	prefix := tenantPrefix(t, rdb)
	f := usage.NewFlusher(rdb, usage.StoreSink{Store: store}, usage.WithEpochKey(epochKey), usage.WithSweepTenants(prefix+"*"))
	ctx := testCtx(t)

	tid, long := prefix+"-a", prefix+"-"+strings.Repeat("x", 130)
	start, _ := thisMonth()
	rdb.Set(ctx, meteredKey(tid, "messages", start), 4, 0)
	rdb.Set(ctx, meteredKey(long, "messages", start), 9, 0)
	f.Touch(meteredKey(long, "messages", start))
	if err := f.Flush(ctx); err != nil {
		t.Fatalf("flush with a foreign key among the counters: %v", err)
	}
	if m, _ := totals(t, store, tid); m != 4 {
		t.Fatalf("billing holds %d messages, want 4", m)
	}
}

// TestLeaseUsageReachesBillingWithinAFlushInterval: in lease mode the
// counter changes when the lease reports, up to a lease interval after the
// proxy touched the key. The quota store names the counter then
// (quota.WithCounterChanged, wired to Touch as `serve` does), so billing
// has the usage within a flush or two rather than at the next sweep.
func TestLeaseUsageReachesBillingWithinAFlushInterval(t *testing.T) {
	cfg := testConfig(t)
	msgs := cfg.FeatureByName["messages"]
	msgs.Mode = config.ModeLease
	rdb := sharedRedis(t)
	store, _ := newBilling(t, cfg)
	epochKey, _ := newEpoch(t, rdb, store)
	prefix := tenantPrefix(t, rdb)
	ctx := testCtx(t)
	f := usage.NewFlusher(rdb, usage.StoreSink{Store: store},
		usage.WithEpochKey(epochKey), usage.WithSweepTenants(prefix+"*"),
		usage.WithInterval(100*time.Millisecond))
	// Closed before the tenant's keys are deleted: Close reports leases.
	qs := quota.New(rdb, cfg, quota.WithCounterChanged(f.Touch))
	t.Cleanup(func() { qs.Close() })

	tid := prefix + "-lease"
	if err := qs.PutEntitlement(ctx, quota.Entitlement{TenantID: tid, Plan: cfg.PlanBySlug["pro"]}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(runCtx) }() // its first flush sweeps: nothing yet
	t.Cleanup(func() {
		stop()
		<-done
	})

	for i := range 10 {
		d := reserve(t, qs, tid, msgs, 1)
		if d.Outcome != quota.Admitted {
			t.Fatalf("message %d: %v", i+1, d.Outcome)
		}
		qs.Commit(ctx, &d, 1)
		f.Touch(d.CounterKey()) // as the proxy does, before the lease reports
	}
	eventually(t, 5*time.Second, "billing to hold the 10 lease-mode messages", func() bool {
		m, _ := totals(t, store, tid)
		return m == 10
	})
}
