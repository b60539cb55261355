package usage_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/usage"
)

// kill -9 of a flusher under load, then a new one: billing ends equal to
// what Redis admitted.
func TestKill9LosesNothing(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	rdb := sharedRedis(t)
	store, dbURL := newBilling(t, cfg)
	epochKey, _ := newEpoch(t, rdb, store)
	prefix := tenantPrefix(t, rdb)
	ctx := testCtx(t)
	tid := prefix + "-k"
	start, _ := thisMonth()
	msgKey, agentKey := meteredKey(tid, "messages", start), "tg:{"+tid+"}:g:agents"

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=flusher",
		"TOLLGATE_USAGE_TEST_DATABASE_URL="+dbURL,
		"TOLLGATE_USAGE_TEST_EPOCH_KEY="+epochKey,
		"TOLLGATE_USAGE_TEST_TENANTS="+prefix+"*")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the flusher process: %v", err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	const total = 3000
	var beforeKill int64
	for i := 1; i <= total; i++ {
		if err := rdb.IncrBy(ctx, msgKey, 1).Err(); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			rdb.Set(ctx, agentKey, i/100, 0)
		}
		if !exited && i >= total/3 && i%10 == 0 {
			if m, _ := totals(t, store, tid); m > 0 {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				_ = cmd.Wait()
				exited, beforeKill = true, m
			}
		}
		if i%20 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	if !exited {
		t.Fatal("the flusher process never delivered anything")
	}
	if m, _ := totals(t, store, tid); m >= total {
		t.Fatalf("billing already has %d after the kill; the test proves nothing", m)
	}
	t.Logf("billing had %d of %d when the flusher was killed", beforeKill, total)

	// The restarted proxy's first flush sweeps Redis.
	f := usage.NewFlusher(rdb, usage.StoreSink{Store: store},
		usage.WithEpochKey(epochKey), usage.WithSweepTenants(prefix+"*"))
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	m, a := totals(t, store, tid)
	if m != total || m != redisInt(t, rdb, msgKey) || a != redisInt(t, rdb, agentKey) {
		t.Fatalf("billing messages %d agents %d, Redis %d and %d", m, a, redisInt(t, rdb, msgKey), redisInt(t, rdb, agentKey))
	}
}

// The billing API answers 503 for 30 s of sustained traffic, then
// recovers: nothing Redis admitted is lost.
func TestBillingDown30sLosesNothing(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	rdb := sharedRedis(t)
	store, _ := newBilling(t, cfg)
	epochKey, _ := newEpoch(t, rdb, store)
	prefix := tenantPrefix(t, rdb)
	ctx := testCtx(t)

	qs := quota.New(rdb, cfg)
	defer qs.Close()
	tid := prefix + "-d"
	if err := qs.PutEntitlement(ctx, quota.Entitlement{TenantID: tid, Plan: cfg.PlanBySlug["pro"]}); err != nil {
		t.Fatal(err)
	}

	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int64
	ingest := usage.NewIngest(store, token)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			refused.Add(1)
			http.Error(w, `{"error":"store_unavailable","message":"down"}`, http.StatusServiceUnavailable)
			return
		}
		ingest.ServeHTTP(w, r)
	}))
	defer srv.Close()

	f := usage.NewFlusher(rdb, usage.NewHTTPSink(srv.URL, token, nil),
		usage.WithEpochKey(epochKey), usage.WithSweepTenants(prefix+"*"),
		usage.WithInterval(100*time.Millisecond), usage.WithMaxBackoff(time.Second))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(runCtx) }()

	meter := &config.Meter{Feature: cfg.FeatureByName["messages"], Source: config.AmountFixed, Amount: 1}
	var admitted int64
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < 100_000 && time.Now().Before(deadline); i++ {
		var d quota.Decision
		if err := qs.Reserve(ctx, &quota.Check{TenantID: tid, Meter: meter, Amount: 1}, &d); err != nil || d.Outcome != quota.Admitted {
			t.Fatalf("reserve: %v %v", d.Outcome, err)
		}
		f.Touch(d.CounterKey())
		admitted++
		time.Sleep(5 * time.Millisecond)
	}
	if m, _ := totals(t, store, tid); m != 0 || refused.Load() == 0 {
		t.Fatalf("while billing was down: billing has %d, %d batches refused", m, refused.Load())
	}
	down.Store(false)
	eventually(t, 15*time.Second, "billing to catch up", func() bool {
		m, _ := totals(t, store, tid)
		return m == admitted
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if m, _ := totals(t, store, tid); m != admitted || m != redisInt(t, rdb, meteredKey(tid, "messages", firstOf(t))) {
		t.Fatalf("billing %d, admitted %d", m, admitted)
	}
}

func firstOf(t *testing.T) int64 {
	start, _ := thisMonth()
	return start
}
