package billing

import (
	"sync"
	"testing"
	"time"
)

func TestCreateSubscription(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	payg, _ := mustTenant(t, s, "Payg", "")
	subscribed, _ := mustTenant(t, s, "Subscribed", "free")
	start := time.Date(2026, 5, 10, 9, 0, 0, 0, time.UTC)
	end := start.AddDate(0, 1, 0)
	base := NewSubscription{TenantID: payg.ID, Plan: "mini", PeriodStart: start, PeriodEnd: end}
	with := func(f func(*NewSubscription)) NewSubscription { n := base; f(&n); return n }

	tests := []struct {
		name    string
		in      NewSubscription
		wantErr error
	}{
		{"unknown tenant", with(func(n *NewSubscription) { n.TenantID = "ten_missing" }), ErrTenantNotFound},
		{"unknown plan", with(func(n *NewSubscription) { n.Plan = "gold" }), ErrPlanNotFound},
		{"inactive plan", with(func(n *NewSubscription) { n.Plan = "legacy" }), ErrPlanInactive},
		{"bad status", with(func(n *NewSubscription) { n.Status = "paused" }), ErrInvalid},
		{"bad provider", with(func(n *NewSubscription) { n.Provider = "paypal" }), ErrInvalid},
		{"empty period", with(func(n *NewSubscription) { n.PeriodEnd = start }), ErrInvalid},
		{"no period", with(func(n *NewSubscription) { n.PeriodStart, n.PeriodEnd = time.Time{}, time.Time{} }), ErrInvalid},
		{"already subscribed", with(func(n *NewSubscription) { n.TenantID = subscribed.ID }), ErrConflict},
		{"stripe, trialing", with(func(n *NewSubscription) {
			n.Status, n.Provider, n.ProviderCustomerID, n.ProviderSubscriptionID = StatusTrialing, ProviderStripe, "cus_1", "sub_stripe_1"
		}), nil},
		{"second live one", base, ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := s.CreateSubscription(ctx, tt.in, "webhook:stripe")
			wantErr(t, err, tt.wantErr)
			if tt.wantErr != nil {
				return
			}
			if sub.TenantID != tt.in.TenantID || sub.Plan != tt.in.Plan || sub.Status != tt.in.Status ||
				!sub.PeriodStart.Equal(start) || !sub.PeriodEnd.Equal(end) || sub.Provider != tt.in.Provider ||
				sub.ProviderCustomerID != tt.in.ProviderCustomerID || sub.ProviderSubscriptionID != tt.in.ProviderSubscriptionID {
				t.Fatalf("created %+v from %+v", sub, tt.in)
			}
			if got, err := s.GetSubscription(ctx, tt.in.TenantID); err != nil || !sameSub(got, sub) {
				t.Fatalf("get = %+v, %v", got, err)
			}
		})
	}

	// Once canceled, the old one is history and a new one may start.
	if _, err := s.pool.Exec(ctx, `UPDATE subscriptions SET status = 'canceled' WHERE tenant_id = $1`, payg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSubscription(ctx, payg.ID); !errorsIs(err, ErrNoSubscription) {
		t.Fatalf("after cancel: %v, want ErrNoSubscription", err)
	}
	// The provider's subscription id stays unique across tenants.
	dupProvider := with(func(n *NewSubscription) { n.Provider, n.ProviderSubscriptionID = ProviderStripe, "sub_stripe_1" })
	if _, err := s.CreateSubscription(ctx, dupProvider, "webhook:stripe"); !errorsIs(err, ErrConflict) {
		t.Fatalf("reused provider subscription id: %v", err)
	}
	if _, err := s.CreateSubscription(ctx, base, "admin"); err != nil {
		t.Fatalf("new subscription after cancel: %v", err)
	}
}

func TestSubscriptionStatusConstraint(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	for _, status := range statuses {
		_, err := s.pool.Exec(ctx, `UPDATE subscriptions SET status = $2 WHERE tenant_id = $1`, acme.ID, status)
		if err != nil {
			t.Errorf("status %q refused: %v", status, err)
		}
	}
	for _, status := range []string{"paused", "ACTIVE", "", "incomplete"} {
		_, err := s.pool.Exec(ctx, `UPDATE subscriptions SET status = $2 WHERE tenant_id = $1`, acme.ID, status)
		if code, constraint := pgCode(err); code != pgCheckViolation || constraint != "subscriptions_status_check" {
			t.Errorf("status %q: %v, want a subscriptions_status_check violation", status, err)
		}
	}
	_, err := s.pool.Exec(ctx, `UPDATE subscriptions SET provider = 'paypal' WHERE tenant_id = $1`, acme.ID)
	if err = classify("update", err); !errorsIs(err, ErrInvalid) {
		t.Errorf("provider paypal: %v, want ErrInvalid", err)
	}
}

func TestGetSubscriptionIsolatesTenants(t *testing.T) {
	s := newStore(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	globex, _ := mustTenant(t, s, "Globex", "pro")
	payg, _ := mustTenant(t, s, "Payg", "")
	tests := []struct {
		name, tenantID, wantPlan string
		wantErr                  error
	}{
		{"acme", acme.ID, "free", nil},
		{"globex", globex.ID, "pro", nil},
		{"pay as you go", payg.ID, "", ErrNoSubscription},
		{"unknown tenant", "ten_missing", "", ErrTenantNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := s.GetSubscription(testCtx(t), tt.tenantID)
			wantErr(t, err, tt.wantErr)
			if tt.wantErr == nil && (sub.TenantID != tt.tenantID || sub.Plan != tt.wantPlan) {
				t.Fatalf("got %+v", sub)
			}
		})
	}
}

func TestSetPlan(t *testing.T) {
	s := newStore(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	payg, _ := mustTenant(t, s, "Payg", "")
	other, _ := mustTenant(t, s, "Other", "free")
	tests := []struct {
		name, tenantID, plan string
		wantFrom             string
		wantChanged          bool
		wantErr              error
	}{
		{"upgrade", acme.ID, "mini", "free", true, nil},
		{"same plan is a no-op", acme.ID, "mini", "mini", false, nil},
		{"upgrade again", acme.ID, "pro", "mini", true, nil},
		{"unknown plan", acme.ID, "gold", "", false, ErrPlanNotFound},
		{"inactive plan", acme.ID, "legacy", "", false, ErrPlanInactive},
		{"pay as you go", payg.ID, "mini", "", false, ErrNoSubscription},
		{"unknown tenant", "ten_missing", "mini", "", false, ErrTenantNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			before, _ := s.GetSubscription(ctx, tt.tenantID)
			pc, err := s.SetPlan(ctx, tt.tenantID, tt.plan, "admin:ops")
			wantErr(t, err, tt.wantErr)
			if tt.wantErr != nil {
				return
			}
			sub := pc.Subscription
			if pc.From != tt.wantFrom || pc.Changed != tt.wantChanged || sub.Plan != tt.plan ||
				sub.ID != before.ID || !sub.PeriodStart.Equal(before.PeriodStart) || !sub.PeriodEnd.Equal(before.PeriodEnd) {
				t.Fatalf("change = %+v, before %+v", pc, before)
			}
			if tt.wantChanged && (sub.LastTierSwitchAt == nil || !sub.UpdatedAt.After(before.UpdatedAt)) {
				t.Fatalf("switch not stamped: %+v", sub)
			}
			if !tt.wantChanged && !sameSub(sub, before) {
				t.Fatalf("no-op changed the row: %+v, before %+v", sub, before)
			}
		})
	}
	entries, err := s.AuditEntries(testCtx(t), AuditQuery{TenantID: acme.ID})
	if err != nil {
		t.Fatal(err)
	}
	var switches []string
	for _, e := range entries {
		if e.Action == ActionSetPlan {
			switches = append(switches, e.Detail["from"].(string)+">"+e.Detail["to"].(string))
		}
	}
	if len(switches) != 2 || switches[0] != "mini>pro" || switches[1] != "free>mini" {
		t.Fatalf("audited switches (newest first) = %v", switches)
	}
	if sub, _ := s.GetSubscription(testCtx(t), other.ID); sub.Plan != "free" {
		t.Fatalf("another tenant's plan changed: %+v", sub)
	}
}

func TestSetPlanConcurrentChangesSerialise(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	targets := []string{"mini", "pro", "mini", "pro", "free", "mini"}
	var wg sync.WaitGroup
	changes := make([]PlanChange, len(targets))
	errs := make([]error, len(targets))
	for i, plan := range targets {
		wg.Go(func() { changes[i], errs[i] = s.SetPlan(ctx, acme.ID, plan, "admin") })
	}
	wg.Wait()
	changed := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		if changes[i].Changed {
			changed++
		}
	}
	// Each change saw the plan the one before it left, so the audited
	// from→to pairs chain without a gap.
	n := count(t, s, `SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2`, acme.ID, ActionSetPlan)
	if n != int64(changed) {
		t.Fatalf("%d audit rows for %d changes", n, changed)
	}
	entries, _ := s.AuditEntries(ctx, AuditQuery{TenantID: acme.ID})
	prevTo := ""
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Action != ActionSetPlan {
			continue
		}
		if prevTo == "" && e.Detail["from"] != "free" || prevTo != "" && e.Detail["from"] != prevTo {
			t.Fatalf("switch %v does not follow %q", e.Detail, prevTo)
		}
		prevTo = e.Detail["to"].(string)
	}
	if sub, _ := s.GetSubscription(ctx, acme.ID); prevTo != "" && sub.Plan != prevTo {
		t.Fatalf("final plan %s, last audited switch to %s", sub.Plan, prevTo)
	}
}
