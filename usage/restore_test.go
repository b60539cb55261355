package usage_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
	"github.com/tollgate/tollgate/usage"
)

// Redis restarted empty: the next requests see the right plan, the keys
// and this period's counts, and at-limit stays at-limit.
func TestRestoreAfterRedisWipe(t *testing.T) {
	t.Parallel()
	cfg, rdb, store, qs := restoreSetup(t)
	ctx := testCtx(t)
	r := usage.NewRestorer(rdb, store, qs, cfg)

	tn, apiKey, err := store.CreateTenant(ctx, "Acme", "free")
	if err != nil {
		t.Fatal(err)
	}
	payg, _, err := store.CreateTenant(ctx, "Walk-in", "")
	if err != nil {
		t.Fatal(err)
	}

	// A fresh Redis is populated from PostgreSQL.
	restored, e1, err := r.RestoreIfNeeded(ctx)
	if err != nil || !restored {
		t.Fatalf("first restore: restored=%v err=%v", restored, err)
	}
	checkTenant(t, rdb.Get(ctx, "tg:apikey:"+tenant.HashKey(apiKey)).Val(), tn.ID, qs, "free")
	checkTenant(t, payg.ID, payg.ID, qs, "free") // pay-as-you-go: the default plan

	// Drive the tenant to its limits and flush.
	msgs, agents := cfg.FeatureByName["messages"], cfg.FeatureByName["agents"]
	f := usage.NewFlusher(rdb, usage.StoreSink{Store: store})
	for i := range 6 {
		d := reserve(t, qs, tn.ID, msgs, 1)
		want := quota.Admitted
		if i == 5 {
			want = quota.OverLimit
		}
		if d.Outcome != want {
			t.Fatalf("message %d: %v, want %v", i+1, d.Outcome, want)
		}
		f.Touch(d.CounterKey())
	}
	ag := reserve(t, qs, tn.ID, agents, 1)
	f.Touch(ag.CounterKey())
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if m, a := totals(t, store, tn.ID); m != 5 || a != 1 {
		t.Fatalf("flushed messages %d agents %d, want 5 and 1", m, a)
	}

	// Wipe. Nothing is flushed while Redis has no epoch.
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err == nil {
		t.Fatal("flush of a wiped Redis succeeded")
	}
	// A count landing before the restore (pushed by quota's reconcile
	// after failing open) must be kept, not overwritten.
	start, _ := thisMonth()
	rdb.IncrBy(ctx, meteredKey(tn.ID, "messages", start), 2)

	// Two restorers at once: one restores, the other finds it done or
	// locked.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var epochs []int64
	for range 2 {
		wg.Go(func() {
			other := usage.NewRestorer(rdb, store, qs, cfg)
			ok, e, err := other.RestoreIfNeeded(ctx)
			if err != nil {
				t.Errorf("restore: %v", err)
			}
			if ok {
				mu.Lock()
				epochs = append(epochs, e)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(epochs) > 1 {
		t.Fatalf("restored %d times concurrently", len(epochs))
	}
	if len(epochs) == 0 { // the loser may have run before the winner took the lock: retry once
		if ok, e, err := r.RestoreIfNeeded(ctx); err != nil || !ok {
			t.Fatalf("restore: %v %v", ok, err)
		} else {
			epochs = append(epochs, e)
		}
	}
	if epochs[0] <= e1 {
		t.Fatalf("restored under epoch %d, not after %d", epochs[0], e1)
	}
	checkTenant(t, rdb.Get(ctx, "tg:apikey:"+tenant.HashKey(apiKey)).Val(), tn.ID, qs, "free")
	if n := usageOf(t, qs, tn.ID, msgs); n != 7 {
		t.Fatalf("messages after restore %d, want 5 restored + 2 landed meanwhile", n)
	}
	if d := reserve(t, qs, tn.ID, msgs, 1); d.Outcome != quota.OverLimit || d.Current != 7 || d.Limit != 5 {
		t.Fatalf("message after restore: %+v, want still over the limit", d)
	}
	if d := reserve(t, qs, tn.ID, agents, 1); d.Outcome != quota.OverLimit || d.Current != 1 {
		t.Fatalf("agent after restore: %+v, want still at the limit", d)
	}

	// Losing only tg:epoch (a restore whose last step failed) must not
	// add the counts a second time.
	rdb.Del(ctx, usage.EpochKey)
	if ok, _, err := r.RestoreIfNeeded(ctx); err != nil || !ok {
		t.Fatalf("re-restore: %v %v", ok, err)
	}
	if n := usageOf(t, qs, tn.ID, msgs); n != 7 {
		t.Fatalf("messages after a repeated restore %d, want 7", n)
	}

	// The flusher picks up the new epoch and billing converges to Redis.
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if m, a := totals(t, store, tn.ID); m != 7 || a != 1 {
		t.Fatalf("billing after restore: messages %d agents %d, want 7 and 1", m, a)
	}
}

func TestRestorerRunRestoresWithinTheLoop(t *testing.T) {
	t.Parallel()
	cfg, rdb, store, qs := restoreSetup(t)
	ctx := testCtx(t)
	tn, _, err := store.CreateTenant(ctx, "Loop", "pro")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- usage.NewRestorer(rdb, store, qs, cfg, usage.WithCheckInterval(20_000_000)).Run(runCtx)
	}()
	eventually(t, 5e9, "the restore", func() bool { return rdb.Exists(ctx, usage.EpochKey).Val() == 1 })
	rdb.FlushAll(ctx)
	eventually(t, 5e9, "the second restore", func() bool { return rdb.Get(ctx, usage.EpochKey).Val() == "2" })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkTenant(t, tn.ID, tn.ID, qs, "pro")
}

// restoreSetup gives a restore test a private Redis (it is wiped), a
// billing store of its own and a quota store on that Redis.
func restoreSetup(t *testing.T) (*config.Config, *redis.Client, *billing.Store, *quota.Store) {
	t.Helper()
	cfg := testConfig(t)
	rdb := privateRedis(t)
	store, _ := newBilling(t, cfg)
	qs := quota.New(rdb, cfg)
	t.Cleanup(func() { qs.Close() })
	return cfg, rdb, store, qs
}

func reserve(t *testing.T, qs *quota.Store, tid string, f *config.Feature, n int64) quota.Decision {
	t.Helper()
	var d quota.Decision
	m := &config.Meter{Feature: f, Source: config.AmountFixed, Amount: n}
	if err := qs.Reserve(testCtx(t), &quota.Check{TenantID: tid, Meter: m, Amount: n}, &d); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	return d
}

func usageOf(t *testing.T, qs *quota.Store, tid string, f *config.Feature) int64 {
	t.Helper()
	n, err := qs.Usage(testCtx(t), tid, f)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func checkTenant(t *testing.T, got, want string, qs *quota.Store, plan string) {
	t.Helper()
	if got != want {
		t.Fatalf("tenant %q, want %q", got, want)
	}
	ent, ok, err := qs.GetEntitlement(testCtx(t), want)
	if err != nil || !ok || ent["plan"] != plan || ent["status"] != "active" {
		t.Fatalf("entitlement of %s = %v (ok=%v, err=%v), want plan %s", want, ent, ok, err, plan)
	}
}

// A Redis last restored from another database (its epoch is not this
// database's) is restored again, keeping the counts it holds: a flusher
// would otherwise be refused as stale forever.
func TestRestoreWhenRedisCarriesAnotherDatabasesEpoch(t *testing.T) {
	t.Parallel()
	cfg, rdb, store, qs := restoreSetup(t)
	ctx := testCtx(t)
	tn, _, err := store.CreateTenant(ctx, "Elsewhere", "pro")
	if err != nil {
		t.Fatal(err)
	}
	r := usage.NewRestorer(rdb, store, qs, cfg)
	if restored, _, err := r.RestoreIfNeeded(ctx); err != nil || !restored {
		t.Fatalf("first restore: restored=%v err=%v", restored, err)
	}
	msgs := cfg.FeatureByName["messages"]
	reserve(t, qs, tn.ID, msgs, 7)

	// Another database's restore left its own epoch behind.
	if err := rdb.Set(ctx, usage.EpochKey, 99, 0).Err(); err != nil {
		t.Fatal(err)
	}
	restored, epoch, err := r.RestoreIfNeeded(ctx)
	if err != nil || !restored {
		t.Fatalf("restore after a foreign epoch: restored=%v err=%v", restored, err)
	}
	if got := rdb.Get(ctx, usage.EpochKey).Val(); got != strconv.FormatInt(epoch, 10) {
		t.Fatalf("epoch key %q, want %d", got, epoch)
	}
	if got := usageOf(t, qs, tn.ID, msgs); got != 7 {
		t.Fatalf("messages after the second restore: %d, want the 7 Redis already held", got)
	}
	if restored, _, err := r.RestoreIfNeeded(ctx); err != nil || restored {
		t.Fatalf("restore with matching epochs: restored=%v err=%v", restored, err)
	}
	checkTenant(t, tn.ID, tn.ID, qs, "pro")
}

// A counter in Redis that holds what Tollgate never writes is left out of
// the restore, alone: the tenant's other counters get their counts (left
// at 0, the next flush would overwrite its billed usage with them), every
// other tenant is restored, and the restore completes, so one bad value
// does not hold up every flush; a second restore adds nothing twice.
func TestRestoreLeavesOutAMalformedCounter(t *testing.T) {
	t.Parallel()
	cfg, rdb, store, qs := restoreSetup(t)
	ctx := testCtx(t)
	r := usage.NewRestorer(rdb, store, qs, cfg)
	var ids []string
	for _, name := range []string{"Good", "Bad"} {
		tn, _, err := store.CreateTenant(ctx, name, "free")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tn.ID)
	}
	// The first restore writes their entitlements into the empty Redis.
	if ok, _, err := r.RestoreIfNeeded(ctx); err != nil || !ok {
		t.Fatalf("first restore: %v %v", ok, err)
	}
	msgs, agents := cfg.FeatureByName["messages"], cfg.FeatureByName["agents"]
	f := usage.NewFlusher(rdb, usage.StoreSink{Store: store})
	for _, id := range ids {
		for range 3 {
			d := reserve(t, qs, id, msgs, 1)
			f.Touch(d.CounterKey())
		}
		d := reserve(t, qs, id, agents, 1)
		f.Touch(d.CounterKey())
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	good, bad := ids[0], ids[1]

	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	start, _ := thisMonth()
	for _, c := range []struct {
		name string
		set  func(key string) error
	}{
		{"a list", func(key string) error { return rdb.RPush(ctx, key, "x").Err() }},
		{"a fraction", func(key string) error { return rdb.Set(ctx, key, "2.5", 0).Err() }},
	} {
		rdb.Del(ctx, usage.EpochKey, "tg:{"+good+"}:restored", "tg:{"+bad+"}:restored",
			meteredKey(good, "messages", start), "tg:{"+good+"}:g:agents", meteredKey(bad, "messages", start))
		gauge := "tg:{" + bad + "}:g:agents"
		rdb.Del(ctx, gauge)
		if err := c.set(gauge); err != nil {
			t.Fatal(err)
		}
		billed, _ := totals(t, store, bad)
		if billed < 3 {
			t.Fatalf("%s: billing holds %d messages before the restore, want at least 3", c.name, billed)
		}
		if ok, _, err := r.RestoreIfNeeded(ctx); err != nil || !ok {
			t.Fatalf("%s: restore: %v %v", c.name, ok, err)
		}
		if m, a := redisInt(t, rdb, meteredKey(good, "messages", start)), redisInt(t, rdb, "tg:{"+good+"}:g:agents"); m != 3 || a != 1 {
			t.Errorf("%s: the other tenant restored with messages %d agents %d, want 3 and 1", c.name, m, a)
		}
		if m := redisInt(t, rdb, meteredKey(bad, "messages", start)); m != billed {
			t.Errorf("%s: the tenant with a malformed gauge got messages %d, want its %d", c.name, m, billed)
		}
		if typ := rdb.Type(ctx, gauge).Val(); c.name == "a list" && typ != "list" {
			t.Errorf("%s: the malformed gauge was changed to a %s", c.name, typ)
		}
		// A retry (tg:epoch lost) adds nothing twice.
		rdb.Del(ctx, usage.EpochKey)
		if ok, _, err := r.RestoreIfNeeded(ctx); err != nil || !ok {
			t.Fatalf("%s: second restore: %v %v", c.name, ok, err)
		}
		if m := redisInt(t, rdb, meteredKey(bad, "messages", start)); m != billed {
			t.Errorf("%s: after a second restore messages %d, want %d", c.name, m, billed)
		}
		// The flush after the restore keeps the billed usage.
		d := reserve(t, qs, bad, msgs, 1)
		f.Touch(d.CounterKey())
		if err := f.Flush(ctx); err != nil {
			t.Fatalf("%s: flush: %v", c.name, err)
		}
		if m, _ := totals(t, store, bad); m != billed+1 {
			t.Errorf("%s: billing holds %d messages after the restore and one more, want %d", c.name, m, billed+1)
		}
	}
}
