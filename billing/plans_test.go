package billing

import (
	"maps"
	"slices"
	"testing"

	"github.com/tollgate/tollgate/config"
)

func TestPlanFromConfig(t *testing.T) {
	cfg := testConfig(t)
	got, err := PlanFromConfig(cfg.PlanBySlug["pro"], cfg.Features)
	if err != nil {
		t.Fatal(err)
	}
	want := Plan{Slug: "pro", Name: "Pro", PriceMinor: 4900, Currency: "USD", Active: true,
		Limits: map[string]int64{"messages": config.Unlimited, "agents": 5, "channels": 100},
		Flags:  map[string]bool{"integrations": true, "ai_auto_reply": true}}
	if !samePlanTerms(got, want) || got.Slug != want.Slug {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	short := *cfg.PlanBySlug["free"]
	short.Limits = short.Limits[:1]
	if _, err := PlanFromConfig(&short, cfg.Features); !errorsIs(err, ErrInvalid) {
		t.Fatalf("plan missing limits: %v", err)
	}
	if _, err := PlanFromConfig(nil, cfg.Features); !errorsIs(err, ErrInvalid) {
		t.Fatalf("nil plan: %v", err)
	}
}

func TestSyncPlans(t *testing.T) {
	ctx := testCtx(t)
	pool := newPool(t)
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	s := New(pool)
	cfg := testConfig(t)
	sorted := func(xs []string) []string { return slices.Sorted(slices.Values(xs)) }

	res, err := s.SyncPlans(ctx, cfg.Plans, cfg.Features)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"free", "legacy", "mini", "pro"}; !slices.Equal(sorted(res.Inserted), want) || res.Updated != nil || res.Kept != nil {
		t.Fatalf("first sync = %+v", res)
	}
	if res, err = s.SyncPlans(ctx, cfg.Plans, cfg.Features); err != nil || res.Inserted != nil || res.Updated != nil || res.Kept != nil {
		t.Fatalf("unchanged sync = %+v, %v; want nothing done", res, err)
	}

	// An admin edits mini; then the file changes both mini and pro.
	price := int64(2900)
	edited, err := s.UpdatePlan(ctx, "mini", PlanUpdate{PriceMinor: &price, Limits: map[string]int64{"agents": 4}}, "admin")
	if err != nil || edited.EditedAt == nil || edited.PriceMinor != 2900 || edited.Limits["agents"] != 4 || edited.Limits["messages"] != 2500 {
		t.Fatalf("update = %+v, %v", edited, err)
	}
	cfg.PlanBySlug["mini"].PriceMinor = 999
	cfg.PlanBySlug["pro"].PriceMinor = 5900
	cfg.PlanBySlug["pro"].Name = "Pro+"
	res, err = s.SyncPlans(ctx, cfg.Plans, cfg.Features)
	if err != nil || !slices.Equal(res.Updated, []string{"pro"}) || !slices.Equal(res.Kept, []string{"mini"}) || res.Inserted != nil {
		t.Fatalf("sync after edits = %+v, %v", res, err)
	}
	mini, _ := s.GetPlan(ctx, "mini")
	pro, _ := s.GetPlan(ctx, "pro")
	if mini.PriceMinor != 2900 || mini.Limits["agents"] != 4 {
		t.Fatalf("admin's edit of mini was overwritten: %+v", mini)
	}
	if pro.PriceMinor != 5900 || pro.Name != "Pro+" || pro.EditedAt != nil {
		t.Fatalf("pro did not follow the file: %+v", pro)
	}

	bad := *cfg.PlanBySlug["free"]
	bad.Currency = "usd"
	if _, err := s.SyncPlans(ctx, []*config.Plan{&bad}, cfg.Features); !errorsIs(err, ErrInvalid) {
		t.Fatalf("bad currency: %v", err)
	}
}

func TestUpdatePlan(t *testing.T) {
	s := newStore(t)
	str := func(v string) *string { return &v }
	i64 := func(v int64) *int64 { return &v }
	tests := []struct {
		name, slug string
		u          PlanUpdate
		check      func(Plan) bool
		wantErr    error
	}{
		{"rename", "free", PlanUpdate{Name: str("Starter")}, func(p Plan) bool { return p.Name == "Starter" && p.PriceMinor == 0 }, nil},
		{"merge limits and flags", "mini", PlanUpdate{Limits: map[string]int64{"messages": -1, "seats": 3}, Flags: map[string]bool{"integrations": false}},
			func(p Plan) bool {
				return p.Limits["messages"] == -1 && p.Limits["seats"] == 3 && p.Limits["agents"] == 2 && !p.Flags["integrations"] && p.Flags["ai_auto_reply"]
			}, nil},
		{"currency", "pro", PlanUpdate{Currency: str("EUR")}, func(p Plan) bool { return p.Currency == "EUR" }, nil},
		{"unknown plan", "gold", PlanUpdate{Name: str("Gold")}, nil, ErrPlanNotFound},
		{"negative price", "free", PlanUpdate{PriceMinor: i64(-1)}, nil, ErrInvalid},
		{"limit below -1", "free", PlanUpdate{Limits: map[string]int64{"messages": -2}}, nil, ErrInvalid},
		{"bad currency", "free", PlanUpdate{Currency: str("dollars")}, nil, ErrInvalid},
		{"empty name", "free", PlanUpdate{Name: str("")}, nil, ErrInvalid},
		{"bad feature name", "free", PlanUpdate{Flags: map[string]bool{"Bad Name": true}}, nil, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			before, _ := s.GetPlan(ctx, tt.slug)
			got, err := s.UpdatePlan(ctx, tt.slug, tt.u, "admin:ops")
			wantErr(t, err, tt.wantErr)
			if tt.wantErr != nil {
				if after, _ := s.GetPlan(ctx, tt.slug); !samePlanTerms(after, before) {
					t.Fatalf("a refused update changed the plan: %+v", after)
				}
				return
			}
			if !tt.check(got) || got.EditedAt == nil {
				t.Fatalf("updated = %+v", got)
			}
			if stored, _ := s.GetPlan(ctx, tt.slug); !samePlanTerms(stored, got) {
				t.Fatalf("stored %+v, returned %+v", stored, got)
			}
		})
	}
	entries, err := s.AuditEntries(testCtx(t), AuditQuery{Limit: 1})
	if err != nil || len(entries) != 1 || entries[0].Action != ActionPlanUpdate || entries[0].Actor != "admin:ops" ||
		entries[0].Detail["plan"] != "pro" {
		t.Fatalf("last audit = %+v, %v", entries, err)
	}
}

func TestListPlans(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	slugs := func(ps []Plan) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Slug)
		}
		return out
	}
	tests := []struct {
		name       string
		activeOnly bool
		want       []string
	}{
		{"all, by price", false, []string{"free", "legacy", "mini", "pro"}},
		{"active only", true, []string{"free", "mini", "pro"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := s.ListPlans(ctx, tt.activeOnly)
			if err != nil || !slices.Equal(slugs(ps), tt.want) {
				t.Fatalf("got %v, %v; want %v", slugs(ps), err, tt.want)
			}
		})
	}
	free, err := s.GetPlan(ctx, "free")
	if err != nil || !maps.Equal(free.Limits, map[string]int64{"messages": 250, "agents": 1, "channels": 1}) ||
		!maps.Equal(free.Flags, map[string]bool{"integrations": false, "ai_auto_reply": false}) {
		t.Fatalf("free = %+v, %v", free, err)
	}
	if _, err := s.GetPlan(ctx, "gold"); !errorsIs(err, ErrPlanNotFound) {
		t.Fatalf("unknown plan: %v", err)
	}
}
