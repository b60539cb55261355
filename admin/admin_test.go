package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/tenant"
	"github.com/tollgate/tollgate/usage"
)

func TestCreateGetAndChangePlan(t *testing.T) {
	e := setup(t)
	id, key := e.createTenant("Acme", "mini")
	if !strings.HasPrefix(id, "ten_") || !strings.HasPrefix(key, "tg_") {
		t.Fatalf("create answered id %q key %q", id, key)
	}
	ctx := testCtx(t)
	// Written through: the key's hash (never the key) and the entitlements.
	if got, err := e.rdb.Get(ctx, "tg:apikey:"+tenant.HashKey(key)).Result(); err != nil || got != id {
		t.Fatalf("api key hash in redis: %q, %v; want %q", got, err, id)
	}
	if n, _ := e.rdb.Exists(ctx, "tg:apikey:"+key).Result(); n != 0 {
		t.Fatal("the API key is stored in clear")
	}
	ent := e.ent(id)
	if ent["plan"] != "mini" || ent["plan_name"] != "Mini" || ent["status"] != "active" || ent["anchor"] != "0" ||
		ent["l:agents"] != "2" || ent["f:integrations"] != "1" {
		t.Fatalf("entitlements after create: %v", ent)
	}

	got := e.must(200, "GET", "/admin/v1/tenants/"+id, "")
	sub, _ := got["subscription"].(obj)
	start, end := billing.MonthPeriod(time.Now())
	if got["id"] != id || got["name"] != "Acme" || got["plan"] != "mini" || got["status"] != "active" ||
		str(got["created_at"]) == "" || sub == nil || sub["plan"] != "mini" || sub["provider"] != "manual" ||
		sub["period_start"] != start.Format(time.RFC3339) || sub["period_end"] != end.Format(time.RFC3339) {
		t.Fatalf("get: %v", got)
	}

	got = e.must(200, "PUT", "/admin/v1/tenants/"+id+"/plan", `{"plan":"pro"}`)
	if got["plan"] != "pro" || got["id"] != id {
		t.Fatalf("set plan: %v", got)
	}
	ent = e.ent(id)
	if ent["plan"] != "pro" || ent["plan_name"] != "Pro" || ent["l:agents"] != "5" || ent["anchor"] != "0" {
		t.Fatalf("entitlements after the change: %v", ent)
	}
	if s, err := e.db.GetSubscription(ctx, id); err != nil || s.Plan != "pro" {
		t.Fatalf("subscription in postgres: %+v, %v", s, err)
	}
	// The same plan again is answered and changes nothing.
	e.must(200, "PUT", "/admin/v1/tenants/"+id+"/plan", `{"plan":"pro"}`)
}

func TestPlanRowIsTheSourceOfLimits(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	// An admin edit of the plan in PostgreSQL wins over the file.
	if _, err := e.db.UpdatePlan(ctx, "free", billing.PlanUpdate{Limits: map[string]int64{"agents": 7},
		Flags: map[string]bool{"integrations": true}}, "test"); err != nil {
		t.Fatal(err)
	}
	id, _ := e.createTenant("Edited", "free")
	if ent := e.ent(id); ent["l:agents"] != "7" || ent["f:integrations"] != "1" || ent["l:messages"] != "250" {
		t.Fatalf("entitlements from the edited plan row: %v", ent)
	}
}

func TestCreateWithoutPlanUsesDefault(t *testing.T) {
	e := setup(t)
	got := e.must(201, "POST", "/admin/v1/tenants", `{"name":"Solo"}`)
	e.cleanupTenant(str(got["id"]))
	if got["plan"] != e.cfg.DefaultPlan {
		t.Fatalf("create without plan: %v, want plan %q", got, e.cfg.DefaultPlan)
	}
}

func TestListTenantsPages(t *testing.T) {
	e := setup(t)
	var ids []string
	for _, n := range []string{"A", "B", "C"} {
		id, _ := e.createTenant(n, "free")
		ids = append(ids, id)
	}
	seen := map[string]bool{}
	after := ""
	for page := 0; page < 5; page++ {
		got := e.must(200, "GET", "/admin/v1/tenants?limit=2&after="+after, "")
		list, _ := got["tenants"].([]any)
		for _, v := range list {
			tn := v.(obj)
			if tn["plan"] != "free" || tn["status"] != "active" || str(tn["name"]) == "" || str(tn["created_at"]) == "" {
				t.Fatalf("listed tenant %v", tn)
			}
			seen[str(tn["id"])] = true
		}
		if got["next"] == nil {
			break
		}
		after = str(got["next"])
	}
	for _, id := range ids {
		if !seen[id] {
			t.Fatalf("tenant %s not listed; saw %v", id, seen)
		}
	}
	if got := e.must(200, "GET", "/admin/v1/tenants", ""); len(got["tenants"].([]any)) != 3 || got["next"] != nil {
		t.Fatalf("one page of everything: %v", got)
	}
}

func TestKeysIssueListRevoke(t *testing.T) {
	e := setup(t)
	id, first := e.createTenant("Keys", "free")
	ctx := testCtx(t)

	got := e.must(201, "POST", "/admin/v1/tenants/"+id+"/keys", "")
	second, keyID := str(got["api_key"]), str(got["id"])
	if !strings.HasPrefix(second, "tg_") || !strings.HasPrefix(keyID, "key_") ||
		!strings.HasPrefix(second, str(got["prefix"])) || str(got["created_at"]) == "" {
		t.Fatalf("issue: %v", got)
	}
	if v, _ := e.rdb.Get(ctx, "tg:apikey:"+tenant.HashKey(second)).Result(); v != id {
		t.Fatalf("issued key not written through: %q", v)
	}
	list := e.must(200, "GET", "/admin/v1/tenants/"+id+"/keys", "")["keys"].([]any)
	if len(list) != 2 {
		t.Fatalf("list: %v", list)
	}
	for _, k := range list {
		if _, secret := k.(obj)["api_key"]; secret {
			t.Fatalf("list shows a secret: %v", k)
		}
	}

	resolve := e.resolver(ctx)
	if tid, err := resolve(second); err != nil || tid != id {
		t.Fatalf("resolve before revoke: %q, %v", tid, err)
	}

	got = e.must(200, "DELETE", "/admin/v1/tenants/"+id+"/keys/"+keyID, "")
	if got["id"] != keyID || str(got["revoked_at"]) == "" {
		t.Fatalf("revoke: %v", got)
	}
	if n, _ := e.rdb.Exists(ctx, "tg:apikey:"+tenant.HashKey(second)).Result(); n != 0 {
		t.Fatal("revoked key still in redis")
	}
	eventually(t, "resolver forgets the revoked key", func() bool {
		_, err := resolve(second)
		return errors.Is(err, tenant.ErrUnknown)
	})
	if tid, err := resolve(first); err != nil || tid != id {
		t.Fatalf("the other key stopped working: %q, %v", tid, err)
	}
	// Revoking again succeeds; the list shows the revocation.
	e.must(200, "DELETE", "/admin/v1/tenants/"+id+"/keys/"+keyID, "")
	list = e.must(200, "GET", "/admin/v1/tenants/"+id+"/keys", "")["keys"].([]any)
	if str(list[1].(obj)["revoked_at"]) == "" || list[0].(obj)["revoked_at"] != nil {
		t.Fatalf("list after revoke: %v", list)
	}
	// A resync must not bring the revoked key back.
	if err := e.api.SyncTenant(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.rdb.Exists(ctx, "tg:apikey:"+tenant.HashKey(second)).Result(); n != 0 {
		t.Fatal("resync restored a revoked key")
	}
}

func TestSetGauge(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Gauges", "pro")
	got := e.must(200, "PUT", "/admin/v1/tenants/"+id+"/gauges/agents", `{"count":3}`)
	if got["feature"] != "agents" || got["count"] != 3.0 {
		t.Fatalf("set gauge: %v", got)
	}
	if n, err := e.quota.Usage(testCtx(t), id, e.cfg.FeatureByName["agents"]); err != nil || n != 3 {
		t.Fatalf("gauge in redis: %d, %v", n, err)
	}
	// The largest count the quota scripts read exactly is accepted.
	e.must(200, "PUT", "/admin/v1/tenants/"+id+"/gauges/agents", `{"count":9007199254740991}`)
	if n, err := e.quota.Usage(testCtx(t), id, e.cfg.FeatureByName["agents"]); err != nil || n != 1<<53-1 {
		t.Fatalf("gauge in redis: %d, %v", n, err)
	}
	e.must(200, "PUT", "/admin/v1/tenants/"+id+"/gauges/agents", `{"count":0}`)
	if n, _ := e.quota.Usage(testCtx(t), id, e.cfg.FeatureByName["agents"]); n != 0 {
		t.Fatalf("gauge after reset: %d", n)
	}
	entries := e.must(200, "GET", "/admin/v1/audit?tenant_id="+id, "")["entries"].([]any)
	if entries[0].(obj)["action"] != billing.ActionGaugeSet || entries[0].(obj)["detail"].(obj)["count"] != 0.0 {
		t.Fatalf("audit after gauge set: %v", entries[0])
	}
}

func TestCreditIsIdempotent(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Credits", "free")
	path := "/admin/v1/tenants/" + id + "/balance/credits"
	body := `{"amount_minor":500,"currency":"USD","note":"goodwill 2026-05"}`
	got := e.must(201, "POST", path, body)
	if got["balance_minor"] != 500.0 || got["applied"] != true || got["currency"] != "USD" {
		t.Fatalf("credit: %v", got)
	}
	got = e.must(200, "POST", path, body)
	if got["balance_minor"] != 500.0 || got["applied"] != false {
		t.Fatalf("retried credit: %v", got)
	}
	got = e.must(201, "POST", path, `{"amount_minor":300,"currency":"USD","note":"another"}`)
	if got["balance_minor"] != 800.0 {
		t.Fatalf("second credit: %v", got)
	}
	if bal, err := e.db.Balance(testCtx(t), id, "USD"); err != nil || bal != 800 {
		t.Fatalf("balance in postgres: %d, %v", bal, err)
	}
	n := 0
	for _, v := range e.must(200, "GET", "/admin/v1/audit?tenant_id="+id, "")["entries"].([]any) {
		if v.(obj)["action"] == billing.ActionBalanceCredit {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d credit audit entries, want 2", n)
	}
}

// TestCreditsAtTheBoundKeepSumming: credits are bounded, so however many
// maximal ones are booked the balance still sums and later credits answer.
// An unbounded one (MaxInt64) made every later sum overflow, answered 503
// store_unavailable.
func TestCreditsAtTheBoundKeepSumming(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Rich", "free")
	path := "/admin/v1/tenants/" + id + "/balance/credits"
	bound := strconv.FormatInt(billing.MaxAmountMinor, 10)
	status, body := e.call("POST", path, bearer, `{"amount_minor":`+strconv.FormatInt(billing.MaxAmountMinor+1, 10)+`,"currency":"USD","note":"too much"}`)
	if status != 400 || body["error"] != "invalid_json" || !strings.Contains(str(body["message"]), "amount_minor") {
		t.Fatalf("credit above the bound: %d %v", status, body)
	}
	e.must(201, "POST", path, `{"amount_minor":`+bound+`,"currency":"USD","note":"first"}`)
	e.must(201, "POST", path, `{"amount_minor":`+bound+`,"currency":"USD","note":"second"}`)
	got := e.must(201, "POST", path, `{"amount_minor":5,"currency":"USD","note":"small"}`)
	if want := float64(2*billing.MaxAmountMinor + 5); got["balance_minor"] != want {
		t.Fatalf("balance after credits at the bound: %v, want %v", got["balance_minor"], want)
	}
	if bal, err := e.db.Balance(testCtx(t), id, "USD"); err != nil || bal != 2*billing.MaxAmountMinor+5 {
		t.Fatalf("balance in postgres: %d, %v", bal, err)
	}
}

func TestSubscriptionExplicitPeriodSetsAnchor(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Periods", "free")
	path := "/admin/v1/tenants/" + id + "/subscription"

	got := e.must(200, "PUT", path, `{"plan":"mini","status":"trialing","period_start":"2026-03-10T08:00:00Z",`+
		`"period_end":"2026-04-10T08:00:00Z","cancel_at_period_end":true}`)
	if got["plan"] != "mini" || got["status"] != "trialing" || got["period_start"] != "2026-03-10T08:00:00Z" ||
		got["cancel_at_period_end"] != true {
		t.Fatalf("put subscription: %v", got)
	}
	start := time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC).Unix()
	if ent := e.ent(id); ent["anchor"] != strconv.FormatInt(start, 10) || ent["plan"] != "mini" || ent["status"] != "trialing" {
		t.Fatalf("entitlements after an explicit period: %v", ent)
	}

	// Calendar-month bounds keep calendar periods (anchor 0).
	e.must(200, "PUT", path, `{"plan":"mini","status":"active","period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"}`)
	if ent := e.ent(id); ent["anchor"] != "0" || ent["status"] != "active" {
		t.Fatalf("entitlements after calendar bounds: %v", ent)
	}

	// Canceled: no live subscription is left; the tenant is pay-as-you-go
	// on the default plan, as if it never subscribed.
	e.must(200, "PUT", path, `{"plan":"mini","status":"canceled","period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"}`)
	if ent := e.ent(id); ent["plan"] != e.cfg.DefaultPlan || ent["status"] != "active" || ent["anchor"] != "0" {
		t.Fatalf("entitlements after cancel: %v", ent)
	}
	got = e.must(200, "GET", "/admin/v1/tenants/"+id, "")
	if got["plan"] != nil || got["status"] != "canceled" {
		t.Fatalf("tenant after cancel: %v", got)
	}
	status, body := e.call("PUT", "/admin/v1/tenants/"+id+"/plan", bearer, `{"plan":"pro"}`)
	if status != 404 || body["error"] != "no_subscription" {
		t.Fatalf("plan change without a live subscription: %d %v", status, body)
	}
	// A new live subscription after the canceled one.
	e.must(200, "PUT", path, `{"plan":"pro","period_start":"2026-05-20T00:00:00Z","period_end":"2026-06-20T00:00:00Z"}`)
	if ent := e.ent(id); ent["plan"] != "pro" || ent["status"] != "active" {
		t.Fatalf("entitlements after resubscribing: %v", ent)
	}
}

// TestCanceledIsPayAsYouGoInBothPaths: a tenant whose subscription was
// canceled is entitled to the default plan on calendar months, exactly as
// one that never subscribed, and a restore after a Redis wipe writes the
// same hashes the write-through wrote, for live tenants too. The canceled pro tenant used to keep
// pro's limits (with status canceled, which the proxy never reads) until a
// wipe, and the default plan after one.
func TestCanceledIsPayAsYouGoInBothPaths(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	priv := redis.NewClient(&redis.Options{Addr: redistest.Private(t)})
	t.Cleanup(func() { priv.Close() })
	api, qs, srv := e.serve(priv)
	must := func(want int, method, path, body string) obj {
		t.Helper()
		status, got := callAt(t, srv, method, path, bearer, body)
		if status != want {
			t.Fatalf("%s %s: %d %v, want %d", method, path, status, got, want)
		}
		return got
	}
	ent := func(id string) map[string]string {
		t.Helper()
		h, err := priv.HGetAll(ctx, "tg:{"+id+"}:ent").Result()
		if err != nil || len(h) == 0 {
			t.Fatalf("entitlements of %s: %v, %v", id, h, err)
		}
		return h
	}

	gone := str(must(201, "POST", "/admin/v1/tenants", `{"name":"Gone","plan":"pro"}`)["id"])
	if got := ent(gone); got["plan"] != "pro" {
		t.Fatalf("entitlements before cancel: %v", got)
	}
	// Anchored bounds: a kept anchor would show.
	must(200, "PUT", "/admin/v1/tenants/"+gone+"/subscription",
		`{"plan":"pro","status":"canceled","period_start":"2026-03-10T08:00:00Z","period_end":"2026-04-10T08:00:00Z"}`)
	walkIn, _, err := e.db.CreateTenant(ctx, "Walk-in", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := api.SyncTenant(ctx, walkIn.ID); err != nil {
		t.Fatal(err)
	}

	// Live ones restore as written too: on calendar months and anchored.
	live := str(must(201, "POST", "/admin/v1/tenants", `{"name":"Live","plan":"mini"}`)["id"])
	anchored := str(must(201, "POST", "/admin/v1/tenants", `{"name":"Anchored","plan":"free"}`)["id"])
	must(200, "PUT", "/admin/v1/tenants/"+anchored+"/subscription",
		`{"plan":"pro","status":"trialing","period_start":"2026-03-10T08:00:00Z","period_end":"2026-04-10T08:00:00Z"}`)

	written := map[string]map[string]string{gone: ent(gone), walkIn.ID: ent(walkIn.ID), live: ent(live), anchored: ent(anchored)}
	if written[live]["anchor"] != "0" || written[anchored]["anchor"] == "0" || written[anchored]["status"] != "trialing" {
		t.Fatalf("live tenants written through as %v and %v", written[live], written[anchored])
	}
	def := e.cfg.PlanBySlug[e.cfg.DefaultPlan]
	want := map[string]string{"plan": def.Slug, "plan_name": def.Name, "status": "active", "anchor": "0",
		"l:messages": strconv.FormatInt(def.Limits[e.cfg.FeatureByName["messages"].Index], 10), "f:integrations": "0"}
	for k, v := range want {
		if written[gone][k] != v {
			t.Fatalf("canceled tenant's entitlements: %v, want %s=%s as the default plan's", written[gone], k, v)
		}
	}
	if !maps.Equal(written[gone], written[walkIn.ID]) {
		t.Fatalf("canceled tenant %v, never subscribed %v: want the same", written[gone], written[walkIn.ID])
	}

	// Redis wiped (the test's own) and restored from PostgreSQL.
	if err := priv.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if restored, _, err := usage.NewRestorer(priv, e.db, qs, e.cfg).RestoreIfNeeded(ctx); err != nil || !restored {
		t.Fatalf("restore: %v, %v", restored, err)
	}
	for id, w := range written {
		if got := ent(id); !maps.Equal(got, w) {
			t.Fatalf("%s restored as %v, written through as %v", id, got, w)
		}
	}
}

func TestClearCooldown(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Cool", "free")
	e.must(200, "PUT", "/admin/v1/tenants/"+id+"/plan", `{"plan":"mini"}`)
	sub := e.must(200, "GET", "/admin/v1/tenants/"+id, "")["subscription"].(obj)
	if str(sub["last_tier_switch_at"]) == "" {
		t.Fatalf("no tier switch stamped: %v", sub)
	}
	got := e.must(200, "DELETE", "/admin/v1/tenants/"+id+"/subscription/cooldown", "")
	if got["last_tier_switch_at"] != nil || got["plan"] != "mini" {
		t.Fatalf("clear cooldown: %v", got)
	}
	entries := e.must(200, "GET", "/admin/v1/audit?tenant_id="+id+"&limit=1", "")["entries"].([]any)
	if len(entries) != 1 || entries[0].(obj)["action"] != billing.ActionCooldownClear || entries[0].(obj)["actor"] != "admin" {
		t.Fatalf("audit: %v", entries)
	}
}

func TestAuditLog(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Audited", "free")
	other, _ := e.createTenant("Other", "free")
	e.must(200, "PUT", "/admin/v1/tenants/"+id+"/plan", `{"plan":"pro"}`)

	entries := e.must(200, "GET", "/admin/v1/audit?tenant_id="+id, "")["entries"].([]any)
	var actions []string
	for _, v := range entries {
		if v.(obj)["tenant_id"] != id {
			t.Fatalf("entry of another tenant: %v", v)
		}
		actions = append(actions, str(v.(obj)["action"]))
	}
	if strings.Join(actions, ",") != billing.ActionSetPlan+","+billing.ActionTenantCreate {
		t.Fatalf("actions %v", actions)
	}
	all := e.must(200, "GET", "/admin/v1/audit", "")["entries"].([]any)
	if len(all) != 3 || all[1].(obj)["tenant_id"] != other {
		t.Fatalf("all entries: %v", all)
	}
}

func TestErrors(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Errors", "free")
	ten := "/admin/v1/tenants/" + id
	tests := []struct {
		name, method, path, auth, body string
		status                         int
		code                           string
	}{
		{"no token", "POST", "/admin/v1/tenants", "", `{"name":"a"}`, 401, "unauthorized"},
		{"wrong token", "POST", "/admin/v1/tenants", "Bearer nope", `{"name":"a"}`, 401, "unauthorized"},
		{"basic auth", "POST", "/admin/v1/tenants", "Basic " + token, `{"name":"a"}`, 401, "unauthorized"},
		{"no token on list", "GET", "/admin/v1/tenants", "", "", 401, "unauthorized"},
		{"no token on audit", "GET", "/admin/v1/audit", "", "", 401, "unauthorized"},
		{"no token on revoke", "DELETE", ten + "/keys/key_x", "", "", 401, "unauthorized"},
		{"malformed json", "POST", "/admin/v1/tenants", bearer, `{"name":`, 400, "invalid_json"},
		{"unknown field", "POST", "/admin/v1/tenants", bearer, `{"name":"a","planz":"x"}`, 400, "invalid_json"},
		{"two objects", "POST", "/admin/v1/tenants", bearer, `{"name":"a"}{}`, 400, "invalid_json"},
		{"wrong type", "POST", "/admin/v1/tenants", bearer, `{"name":7}`, 400, "invalid_json"},
		{"empty name", "POST", "/admin/v1/tenants", bearer, `{"name":"  "}`, 400, "invalid_name"},
		{"unknown plan", "POST", "/admin/v1/tenants", bearer, `{"name":"a","plan":"gold"}`, 400, "invalid_plan"},
		{"huge body", "POST", "/admin/v1/tenants", bearer, `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "body_too_large"},
		{"get unknown tenant", "GET", "/admin/v1/tenants/ten_nope", bearer, "", 404, "tenant_not_found"},
		{"plan of unknown tenant", "PUT", "/admin/v1/tenants/ten_nope/plan", bearer, `{"plan":"pro"}`, 404, "tenant_not_found"},
		{"set unknown plan", "PUT", "/admin/v1/tenants/ten_nope/plan", bearer, `{"plan":"gold"}`, 400, "invalid_plan"},
		{"bad list limit", "GET", "/admin/v1/tenants?limit=x", bearer, "", 400, "invalid_query"},
		{"keys of unknown tenant", "POST", "/admin/v1/tenants/ten_nope/keys", bearer, "", 404, "tenant_not_found"},
		{"list keys of unknown tenant", "GET", "/admin/v1/tenants/ten_nope/keys", bearer, "", 404, "tenant_not_found"},
		{"revoke unknown key", "DELETE", ten + "/keys/key_nope", bearer, "", 404, "key_not_found"},
		{"revoke on unknown tenant", "DELETE", "/admin/v1/tenants/ten_nope/keys/key_nope", bearer, "", 404, "tenant_not_found"},
		{"gauge of a metered feature", "PUT", ten + "/gauges/messages", bearer, `{"count":1}`, 400, "invalid_feature"},
		{"gauge of a flag", "PUT", ten + "/gauges/integrations", bearer, `{"count":1}`, 400, "invalid_feature"},
		{"unknown gauge", "PUT", ten + "/gauges/robots", bearer, `{"count":1}`, 400, "invalid_feature"},
		{"negative gauge", "PUT", ten + "/gauges/agents", bearer, `{"count":-1}`, 400, "invalid_json"},
		{"gauge without count", "PUT", ten + "/gauges/agents", bearer, `{}`, 400, "invalid_json"},
		{"gauge past 2^53-1", "PUT", ten + "/gauges/agents", bearer, `{"count":9007199254740992}`, 400, "invalid_json"},
		{"gauge of unknown tenant", "PUT", "/admin/v1/tenants/ten_nope/gauges/agents", bearer, `{"count":1}`, 404, "tenant_not_found"},
		{"zero credit", "POST", ten + "/balance/credits", bearer, `{"amount_minor":0,"currency":"USD","note":"x"}`, 400, "invalid_json"},
		{"credit above the bound", "POST", ten + "/balance/credits", bearer, `{"amount_minor":1000000000000001,"currency":"USD","note":"x"}`, 400, "invalid_json"},
		{"credit of MaxInt64", "POST", ten + "/balance/credits", bearer, `{"amount_minor":9223372036854775807,"currency":"USD","note":"x"}`, 400, "invalid_json"},
		{"credit without note", "POST", ten + "/balance/credits", bearer, `{"amount_minor":5,"currency":"USD"}`, 400, "invalid_json"},
		{"credit bad currency", "POST", ten + "/balance/credits", bearer, `{"amount_minor":5,"currency":"usd","note":"x"}`, 400, "invalid_json"},
		{"credit unknown tenant", "POST", "/admin/v1/tenants/ten_nope/balance/credits", bearer, `{"amount_minor":5,"currency":"USD","note":"x"}`, 404, "tenant_not_found"},
		{"subscription without plan", "PUT", ten + "/subscription", bearer, `{"period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"}`, 400, "invalid_subscription"},
		{"subscription bad status", "PUT", ten + "/subscription", bearer, `{"plan":"pro","status":"zombie","period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"}`, 400, "invalid_subscription"},
		{"subscription bad start", "PUT", ten + "/subscription", bearer, `{"plan":"pro","period_start":"May 1","period_end":"2026-06-01T00:00:00Z"}`, 400, "invalid_subscription"},
		{"subscription end before start", "PUT", ten + "/subscription", bearer, `{"plan":"pro","period_start":"2026-05-01T00:00:00Z","period_end":"2026-05-01T00:00:00Z"}`, 400, "invalid_subscription"},
		{"subscription unknown plan", "PUT", ten + "/subscription", bearer, `{"plan":"gold","period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"}`, 400, "invalid_plan"},
		{"subscription unknown tenant", "PUT", "/admin/v1/tenants/ten_nope/subscription", bearer, `{"plan":"pro","period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"}`, 404, "tenant_not_found"},
		{"cooldown unknown tenant", "DELETE", "/admin/v1/tenants/ten_nope/subscription/cooldown", bearer, "", 404, "tenant_not_found"},
		{"bad audit limit", "GET", "/admin/v1/audit?limit=0", bearer, "", 400, "invalid_query"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.call(tc.method, tc.path, tc.auth, tc.body)
			if status != tc.status || body["error"] != tc.code || str(body["message"]) == "" {
				t.Fatalf("got %d %v, want %d %q with a message", status, body, tc.status, tc.code)
			}
		})
	}
	// Nothing above changed the tenant.
	if got := e.must(200, "GET", ten, ""); got["plan"] != "free" {
		t.Fatalf("tenant after the errors: %v", got)
	}
}

// TestInputPostgresCannotStore: text PostgreSQL cannot store (invalid
// UTF-8, NUL) in a path id, a query parameter or a JSON string is the
// caller's error, 400 with the field's code, not 503 store_unavailable,
// and changes nothing.
func TestInputPostgresCannotStore(t *testing.T) {
	e := setup(t)
	id, key := e.createTenant("Text", "free")
	ten := "/admin/v1/tenants/" + id
	sub := `"period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"`
	tests := []struct {
		name, method, path, body, code string
	}{
		{"tenant id not utf-8", "GET", "/admin/v1/tenants/%ff", "", "invalid_query"},
		{"tenant id with nul", "GET", "/admin/v1/tenants/a%00b", "", "invalid_query"},
		{"plan of a tenant id not utf-8", "PUT", "/admin/v1/tenants/%ff/plan", `{"plan":"pro"}`, "invalid_query"},
		{"key id with nul", "DELETE", ten + "/keys/k%00", "", "invalid_query"},
		{"key id not utf-8", "DELETE", ten + "/keys/%ff", "", "invalid_query"},
		{"cursor not utf-8", "GET", "/admin/v1/tenants?after=%ff", "", "invalid_query"},
		{"cursor with nul", "GET", "/admin/v1/tenants?after=a%00", "", "invalid_query"},
		{"audit tenant not utf-8", "GET", "/admin/v1/audit?tenant_id=%ff", "", "invalid_query"},
		{"plan with nul", "PUT", ten + "/plan", `{"plan":"a\u0000"}`, "invalid_plan"},
		{"name with nul", "POST", "/admin/v1/tenants", `{"name":"a\u0000b"}`, "invalid_name"},
		{"new tenant's plan with nul", "POST", "/admin/v1/tenants", `{"name":"a","plan":"pro\u0000"}`, "invalid_plan"},
		{"credit note with nul", "POST", ten + "/balance/credits", `{"amount_minor":5,"currency":"USD","note":"n\u0000"}`, "invalid_json"},
		{"subscription plan with nul", "PUT", ten + "/subscription", `{"plan":"pro\u0000",` + sub + `}`, "invalid_plan"},
	}
	ctx := testCtx(t)
	audit := func() int { return len(e.must(200, "GET", "/admin/v1/audit?limit=500", "")["entries"].([]any)) }
	before := audit()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.call(tc.method, tc.path, bearer, tc.body)
			if status != 400 || body["error"] != tc.code || str(body["message"]) == "" {
				t.Fatalf("got %d %v, want 400 %q with a message", status, body, tc.code)
			}
		})
	}
	if after := audit(); after != before {
		t.Fatalf("%d audit entries after the refused calls, %d before", after, before)
	}
	if got := e.must(200, "GET", "/admin/v1/tenants?limit=500", "")["tenants"].([]any); len(got) != 1 {
		t.Fatalf("tenants after the refused calls: %v", got)
	}
	if s, err := e.db.GetSubscription(ctx, id); err != nil || s.Plan != "free" {
		t.Fatalf("subscription after the refused calls: %+v, %v", s, err)
	}
	if ent := e.ent(id); ent["plan"] != "free" {
		t.Fatalf("entitlements after the refused calls: %v", ent)
	}
	if v := e.rdb.Get(ctx, "tg:apikey:"+tenant.HashKey(key)).Val(); v != id {
		t.Fatalf("key after the refused calls: %q", v)
	}
	if bal, err := e.db.Balance(ctx, id, "USD"); err != nil || bal != 0 {
		t.Fatalf("balance after the refused calls: %d, %v", bal, err)
	}
}

// TestContentType: the media type is compared whole and without regard
// to case, parameters allowed; a missing Content-Type is read as JSON.
func TestContentType(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Typed", "free")
	for _, tc := range []struct {
		ct     string
		status int
	}{
		{"application/json", 200},
		{"Application/JSON", 200},
		{"application/json; charset=utf-8", 200},
		{"APPLICATION/JSON ; Charset=UTF-8", 200},
		{"", 200},
		{"application/jsonx", 415},
		{"application/json-patch+json", 415},
		{"application/json;", 200},
		{"text/plain", 415},
		{"application/json; charset", 415},
	} {
		req, err := http.NewRequest("PUT", e.srv.URL+"/admin/v1/tenants/"+id+"/plan", strings.NewReader(`{"plan":"free"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", bearer)
		if tc.ct != "" {
			req.Header.Set("Content-Type", tc.ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body obj
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.status == 415 && body["error"] != "unsupported_media_type") {
			t.Errorf("Content-Type %q: %d %v, want %d", tc.ct, resp.StatusCode, body, tc.status)
		}
	}
}

func TestInactivePlanIsRefused(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Legacy", "free")
	off := false
	if _, err := e.db.UpdatePlan(testCtx(t), "pro", billing.PlanUpdate{Active: &off}, "test"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/admin/v1/tenants", `{"name":"x","plan":"pro"}`},
		{"PUT", "/admin/v1/tenants/" + id + "/plan", `{"plan":"pro"}`},
	} {
		status, body := e.call(c.method, c.path, bearer, c.body)
		if status != 400 || body["error"] != "invalid_plan" || !strings.Contains(str(body["message"]), "free") {
			t.Fatalf("%s %s: %d %v", c.method, c.path, status, body)
		}
	}
}

func TestNoSubscriptionCooldown(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Gone", "free")
	e.must(200, "PUT", "/admin/v1/tenants/"+id+"/subscription",
		`{"plan":"free","status":"canceled","period_start":"2026-05-01T00:00:00Z","period_end":"2026-06-01T00:00:00Z"}`)
	status, body := e.call("DELETE", "/admin/v1/tenants/"+id+"/subscription/cooldown", bearer, "")
	if status != 404 || body["error"] != "no_subscription" {
		t.Fatalf("cooldown without a live subscription: %d %v", status, body)
	}
}

// TestRedisDownThenRun: with Redis down the change is committed in
// PostgreSQL, the answer is 503, and Run writes it through once Redis is
// back.
func TestRedisDownThenRun(t *testing.T) {
	e := setup(t)
	e.rdb.down.Store(true)
	status, body := e.call("POST", "/admin/v1/tenants", bearer, `{"name":"Later","plan":"mini"}`)
	id, key := str(body["id"]), str(body["api_key"])
	e.cleanupTenant(id)
	if status != 503 || body["error"] != "store_unavailable" || !strings.Contains(str(body["message"]), "saved") ||
		id == "" || key == "" {
		t.Fatalf("create with redis down: %d %v", status, body)
	}
	// Kept in PostgreSQL: GET reads only PostgreSQL.
	if got := e.must(200, "GET", "/admin/v1/tenants/"+id, ""); got["plan"] != "mini" {
		t.Fatalf("tenant after the 503: %v", got)
	}
	status, body = e.call("PUT", "/admin/v1/tenants/"+id+"/plan", bearer, `{"plan":"pro"}`)
	if status != 503 || body["error"] != "store_unavailable" {
		t.Fatalf("set plan with redis down: %d %v", status, body)
	}

	live := redis.NewClient(mustParse(t))
	t.Cleanup(func() { live.Close() })
	if n, err := live.Exists(testCtx(t), "tg:{"+id+"}:ent").Result(); err != nil || n != 0 {
		t.Fatalf("entitlements reached redis while it was down: %d, %v", n, err)
	}

	e.rdb.down.Store(false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.api.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "Run writes the tenant through", func() bool {
		return live.HGet(context.Background(), "tg:{"+id+"}:ent", "plan").Val() == "pro" &&
			live.Get(context.Background(), "tg:apikey:"+tenant.HashKey(key)).Val() == id
	})
}

// TestRedisUnreachableThenSyncTenant: an API whose Redis is a closed port
// answers 503 and keeps the change; SyncTenant on a working API repairs it.
func TestRedisUnreachableThenSyncTenant(t *testing.T) {
	e := setup(t)
	id, key := e.createTenant("Repair", "free")
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1,
		DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { dead.Close() })
	_, _, deadSrv := e.serve(dead)

	status, body := callAt(t, deadSrv, "PUT", "/admin/v1/tenants/"+id+"/plan", bearer, `{"plan":"pro"}`)
	if status != 503 || body["error"] != "store_unavailable" || !strings.Contains(str(body["message"]), "Redis") {
		t.Fatalf("set plan with redis unreachable: %d %v", status, body)
	}
	got := e.must(201, "POST", "/admin/v1/tenants/"+id+"/keys", "")
	status, _ = callAt(t, deadSrv, "DELETE", "/admin/v1/tenants/"+id+"/keys/"+str(got["id"]), bearer, "")
	if status != 503 {
		t.Fatalf("revoke with redis unreachable: %d", status)
	}
	if ent := e.ent(id); ent["plan"] != "free" {
		t.Fatalf("entitlements changed without redis: %v", ent)
	}
	if s, err := e.db.GetSubscription(testCtx(t), id); err != nil || s.Plan != "pro" {
		t.Fatalf("postgres lost the change: %+v, %v", s, err)
	}

	if err := e.api.SyncTenant(testCtx(t), id); err != nil {
		t.Fatalf("sync tenant: %v", err)
	}
	ctx := testCtx(t)
	if ent := e.ent(id); ent["plan"] != "pro" || ent["l:agents"] != "5" {
		t.Fatalf("entitlements after sync: %v", ent)
	}
	if v := e.rdb.Get(ctx, "tg:apikey:"+tenant.HashKey(key)).Val(); v != id {
		t.Fatalf("first key after sync: %q", v)
	}
	if n := e.rdb.Exists(ctx, "tg:apikey:"+tenant.HashKey(str(got["api_key"]))).Val(); n != 0 {
		t.Fatal("key revoked while redis was down is still in redis after sync")
	}
	if err := e.api.SyncTenant(ctx, "ten_nope"); !errors.Is(err, billing.ErrTenantNotFound) {
		t.Fatalf("sync of an unknown tenant: %v", err)
	}
}

// TestPostgresUnreachable: with PostgreSQL down nothing changes and every
// call answers 503.
func TestPostgresUnreachable(t *testing.T) {
	cfg := loadConfig(t)
	pool, err := pgxpoolNew("postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := &env{t: t, cfg: cfg, db: billing.New(pool), rdb: newRedis(t)}
	e.api, e.quota, e.srv = e.serve(e.rdb)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/admin/v1/tenants", `{"name":"x"}`},
		{"GET", "/admin/v1/tenants", ""},
		{"GET", "/admin/v1/tenants/ten_x", ""},
		{"PUT", "/admin/v1/tenants/ten_x/plan", `{"plan":"pro"}`},
		{"GET", "/admin/v1/audit", ""},
	} {
		status, body := e.call(c.method, c.path, bearer, c.body)
		if status != 503 || body["error"] != "store_unavailable" {
			t.Fatalf("%s %s: %d %v", c.method, c.path, status, body)
		}
	}
}

// TestConcurrentChangesEndConsistent: however concurrent plan changes and
// resyncs interleave, Redis ends with the plan PostgreSQL ended with.
func TestConcurrentChangesEndConsistent(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Busy", "free")
	plans := []string{"free", "mini", "pro"}
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 3; j++ {
				status, body := e.call("PUT", "/admin/v1/tenants/"+id+"/plan", bearer, `{"plan":"`+plans[(i+j)%3]+`"}`)
				if status != 200 {
					t.Errorf("set plan: %d %v", status, body)
				}
				if err := e.api.SyncTenant(context.Background(), id); err != nil {
					t.Errorf("sync: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	sub, err := e.db.GetSubscription(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if ent := e.ent(id); ent["plan"] != sub.Plan {
		t.Fatalf("redis has %q, postgres %q", ent["plan"], sub.Plan)
	}
}
