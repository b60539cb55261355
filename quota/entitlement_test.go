package quota

import (
	"context"
	"maps"
	"strconv"
	"testing"

	"github.com/tollgate/tollgate/config"
)

func TestPutAndGetEntitlement(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	anchor := utc(2025, 1, 31, 9, 0, 0).Unix()
	id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], anchor, map[string]int64{"agents": 50, "messages": -1})

	got, ok, err := s.GetEntitlement(ctx, id)
	if err != nil || !ok {
		t.Fatalf("GetEntitlement = %v, %v", ok, err)
	}
	want := map[string]string{
		"plan": "mini", "plan_name": "Mini", "status": "active", "anchor": strconv.FormatInt(anchor, 10),
		"l:messages": "-1", "l:ai_tokens": "100", "l:agents": "50", "l:api_calls": "100",
		"f:integrations": "1", "f:ai_auto_reply": "0",
	}
	if !maps.Equal(got, want) {
		t.Errorf("entitlement\n got %v\nwant %v", got, want)
	}

	// A replacement drops what the new entitlement does not set.
	if err := s.PutEntitlement(ctx, Entitlement{TenantID: id, Plan: tc.PlanBySlug["free"], Status: "past_due", Anchor: anchor}); err != nil {
		t.Fatal(err)
	}
	got, _, _ = s.GetEntitlement(ctx, id)
	if got["l:agents"] != "5" || got["l:messages"] != "10" || got["status"] != "past_due" || got["f:integrations"] != "0" {
		t.Errorf("after replacement: %v", got)
	}

	if _, ok, err := s.GetEntitlement(ctx, randomTenant(t)); ok || err != nil {
		t.Errorf("missing tenant: ok %v err %v", ok, err)
	}
}

func TestPutEntitlementRejects(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	free := tc.PlanBySlug["free"]
	short := &config.Plan{Slug: "short", Name: "Short", Limits: []int64{1}}
	tests := []struct {
		name string
		e    Entitlement
	}{
		{"empty tenant", Entitlement{Plan: free}},
		{"no plan", Entitlement{TenantID: "x"}},
		{"override of unknown feature", Entitlement{TenantID: "x", Plan: free, Limits: map[string]int64{"nope": 1}}},
		{"override of a flag", Entitlement{TenantID: "x", Plan: free, Limits: map[string]int64{"integrations": 1}}},
		{"override below -1", Entitlement{TenantID: "x", Plan: free, Limits: map[string]int64{"messages": -2}}},
		{"plan without all limits", Entitlement{TenantID: "x", Plan: short}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.PutEntitlement(context.Background(), tt.e); err == nil {
				t.Error("PutEntitlement accepted it")
			}
		})
	}
}

func TestDeleteTenant(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1})
	mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.agents, 1), Amount: 1})

	if err := s.DeleteTenant(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.GetEntitlement(ctx, id); ok {
		t.Error("entitlement survived")
	}
	if d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}); d.Outcome != UnknownTenant {
		t.Errorf("reserve after delete: %v, want unknown tenant", d.Outcome)
	}
	keys, err := rdb.Keys(ctx, tenantPrefix(id)+"*").Result()
	if err != nil || len(keys) != 0 {
		t.Errorf("keys left: %v (%v)", keys, err)
	}
}

func TestGaugeAndUsage(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	anchor := utc(2024, 11, 20, 0, 0, 0).Unix()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], anchor, nil)

	if err := s.SetGauge(ctx, id, tc.agents, 5); err != nil {
		t.Fatal(err)
	}
	if d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.agents, 1), Amount: 1}); d.Outcome != OverLimit {
		t.Errorf("reserve on a full gauge: %v", d.Outcome)
	}
	if n := usage(t, s, id, tc.agents); n != 5 {
		t.Errorf("gauge usage = %d, want 5", n)
	}
	if n := usage(t, s, id, tc.messages); n != 0 {
		t.Errorf("fresh metered usage = %d, want 0", n)
	}
	mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 3), Amount: 3})
	if n := usage(t, s, id, tc.messages); n != 3 {
		t.Errorf("metered usage = %d, want 3 (anchored period)", n)
	}

	for _, bad := range []struct {
		name string
		f    *config.Feature
		n    int64
	}{{"metered", tc.messages, 1}, {"flag", tc.integrations, 1}, {"nil", nil, 1}, {"negative", tc.agents, -1}} {
		if err := s.SetGauge(ctx, id, bad.f, bad.n); err == nil {
			t.Errorf("SetGauge %s accepted", bad.name)
		}
	}
	if _, err := s.Usage(ctx, id, tc.integrations); err == nil {
		t.Error("Usage of a flag accepted")
	}
}
