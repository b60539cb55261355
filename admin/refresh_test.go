package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/admin"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/quota"
)

// changedConfig is the example configuration with each old text replaced
// by its new one (pairs), parsed as loadConfig parses it.
func changedConfig(t *testing.T, pairs ...string) *config.Config {
	t.Helper()
	data, err := os.ReadFile("../examples/pingback/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		if !bytes.Contains(data, []byte(pairs[i])) {
			t.Fatalf("the example configuration has no %q", pairs[i])
		}
		data = bytes.Replace(data, []byte(pairs[i]), []byte(pairs[i+1]), 1)
	}
	env := map[string]string{"TOLLGATE_ADMIN_TOKEN": token}
	cfg, err := config.Parse("tollgate.yaml", data, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// restart does what a start of `tollgate serve` with cfg does on the
// test's database: SyncPlans, then an admin API on rdb told to write
// through the tenants of the plans the sync updated, with Run running
// until the test ends.
func (e *env) restart(cfg *config.Config, rdb redis.UniversalClient) billing.SyncResult {
	e.t.Helper()
	res, err := e.db.SyncPlans(testCtx(e.t), cfg.Plans, cfg.Features)
	if err != nil {
		e.t.Fatal(err)
	}
	store := quota.New(rdb, cfg)
	api := admin.New(cfg, e.db, rdb, store, nil)
	api.RefreshPlans(res.Updated...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); api.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done; store.Close() })
	return res
}

// TestPlanChangedInFileReachesTenants: a limit changed in the YAML reaches
// the entitlements of the plan's tenants after a restart. SyncPlans used to
// update the plan row only, and the tenants kept the old limit in Redis.
func TestPlanChangedInFileReachesTenants(t *testing.T) {
	e := setup(t)
	mini, _ := e.createTenant("Mini", "mini")
	pro, _ := e.createTenant("Pro", "pro")
	if got := e.ent(mini)["l:messages"]; got != "2500" {
		t.Fatalf("mini tenant's messages limit before: %s", got)
	}

	res := e.restart(changedConfig(t, "limits: {messages: 2500,", "limits: {messages: 3000,"), e.rdb)
	if !slices.Equal(res.Updated, []string{"mini"}) {
		t.Fatalf("sync result %+v, want mini updated", res)
	}
	eventually(t, "the mini tenant's entitlement reads the new limit", func() bool {
		return e.ent(mini)["l:messages"] == "3000"
	})
	if ent := e.ent(mini); ent["plan"] != "mini" || ent["status"] != "active" || ent["l:agents"] != "2" {
		t.Fatalf("mini tenant after the refresh: %v", ent)
	}
	if got := e.ent(pro)["l:messages"]; got != "25000" {
		t.Fatalf("pro tenant's messages limit: %s", got)
	}
}

// TestDefaultPlanChangedReachesPayAsYouGo: when the default plan changes,
// the tenants without a live subscription (never subscribed, or canceled)
// are written through too, since they are entitled to it.
func TestDefaultPlanChangedReachesPayAsYouGo(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	free, _ := e.createTenant("Free", "free")
	gone, _ := e.createTenant("Gone", "mini")
	e.must(200, "PUT", "/admin/v1/tenants/"+gone+"/subscription",
		`{"plan":"mini","status":"canceled","period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"}`)
	walkIn, _, err := e.db.CreateTenant(ctx, "Walk-in", "")
	if err != nil {
		t.Fatal(err)
	}
	e.cleanupTenant(walkIn.ID)
	if err := e.api.SyncTenant(ctx, walkIn.ID); err != nil {
		t.Fatal(err)
	}

	res := e.restart(changedConfig(t, "limits: {messages: 250,", "limits: {messages: 300,"), e.rdb)
	if !slices.Equal(res.Updated, []string{e.cfg.DefaultPlan}) {
		t.Fatalf("sync result %+v, want the default plan updated", res)
	}
	for _, id := range []string{free, gone, walkIn.ID} {
		eventually(t, "tenant "+id+" reads the default plan's new limit", func() bool {
			return e.ent(id)["l:messages"] == "300"
		})
	}
}

// TestPlanRefreshWaitsOutRedis: a refresh that meets Redis down keeps
// its tenants and writes them once Redis is back.
func TestPlanRefreshWaitsOutRedis(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Patient", "mini")
	e.rdb.down.Store(true)
	e.restart(changedConfig(t, "limits: {messages: 2500,", "limits: {messages: 3000,"), e.rdb)

	live := redis.NewClient(mustParse(t))
	t.Cleanup(func() { live.Close() })
	time.Sleep(2500 * time.Millisecond) // a few of Run's rounds against a down Redis
	if got := live.HGet(testCtx(t), "tg:{"+id+"}:ent", "l:messages").Val(); got != "2500" {
		t.Fatalf("limit while redis was down: %q", got)
	}
	e.rdb.down.Store(false)
	eventually(t, "the refresh writes the tenant once redis is back", func() bool {
		return live.HGet(context.Background(), "tg:{"+id+"}:ent", "l:messages").Val() == "3000"
	})
}

// TestPlanRefreshPages: a refresh goes through many tenants page by page,
// writing exactly those on the changed plan.
func TestPlanRefreshPages(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	priv := redis.NewClient(&redis.Options{Addr: redistest.Private(t)})
	t.Cleanup(func() { priv.Close() })
	const n = 1100 // three pages
	start, end := billing.MonthPeriod(time.Now())
	insert := func(prefix, plan string, count int) {
		t.Helper()
		_, err := e.db.Pool().Exec(ctx, `
			INSERT INTO tenants (id, name) SELECT $1 || lpad(i::text, 5, '0'), 'Bulk ' || i FROM generate_series(1, $2) i`,
			prefix, count)
		if err == nil && plan != "" {
			_, err = e.db.Pool().Exec(ctx, `
				INSERT INTO subscriptions (id, tenant_id, plan_slug, status, period_start, period_end)
				SELECT 'sub_' || $1 || lpad(i::text, 5, '0'), $1 || lpad(i::text, 5, '0'), $3, 'active', $4, $5
				FROM generate_series(1, $2) i`, prefix, count, plan, start, end)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	insert("ten_mini_", "mini", n)
	insert("ten_pro_", "pro", 5)
	insert("ten_payg_", "", 5)

	e.restart(changedConfig(t, "limits: {messages: 2500,", "limits: {messages: 3000,"), priv)
	deadline := time.Now().Add(60 * time.Second)
	for {
		cmds, err := priv.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := 1; i <= n; i++ {
				p.HGet(ctx, fmt.Sprintf("tg:{ten_mini_%05d}:ent", i), "l:messages")
			}
			return nil
		})
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		left := 0
		for _, c := range cmds {
			if c.(*redis.StringCmd).Val() != "3000" {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tenants not written through within 60 s", left, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := priv.DBSize(ctx).Val(); got != n {
		t.Fatalf("%d keys in redis, want only the %d mini tenants' entitlements", got, n)
	}
}
