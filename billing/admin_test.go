package billing

import (
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/tenant"
)

func TestLatestAndReplaceSubscription(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	payg, _ := mustTenant(t, s, "Payg", "")
	if _, err := s.LatestSubscription(ctx, payg.ID); !errorsIs(err, ErrNoSubscription) {
		t.Fatalf("latest of a pay-as-you-go tenant: %v", err)
	}
	if _, err := s.LatestSubscription(ctx, "ten_missing"); !errorsIs(err, ErrTenantNotFound) {
		t.Fatalf("latest of an unknown tenant: %v", err)
	}
	start := time.Date(2026, 3, 10, 8, 0, 0, 0, time.UTC)
	n := NewSubscription{TenantID: payg.ID, Plan: "mini", Status: StatusTrialing, PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0)}

	tests := []struct {
		name        string
		edit        func(*NewSubscription)
		wantErr     error
		wantCreated bool
	}{
		{"unknown tenant", func(n *NewSubscription) { n.TenantID = "ten_missing" }, ErrTenantNotFound, false},
		{"inactive plan", func(n *NewSubscription) { n.Plan = "legacy" }, ErrPlanInactive, false},
		{"end before start", func(n *NewSubscription) { n.PeriodEnd = n.PeriodStart }, ErrInvalid, false},
		{"insert", func(*NewSubscription) {}, nil, true},
		{"replace in place", func(n *NewSubscription) { n.Plan, n.Status = "free", StatusActive }, nil, false},
		{"cancel", func(n *NewSubscription) { n.Plan, n.Status = "free", StatusCanceled }, nil, false},
		{"insert after cancel", func(n *NewSubscription) { n.Plan = "mini" }, nil, true},
	}
	var prev Subscription
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := n
			tt.edit(&in)
			sub, created, err := s.ReplaceSubscription(ctx, in, "admin")
			wantErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			if created != tt.wantCreated || sub.Plan != in.Plan || sub.Status != in.Status || !sub.PeriodStart.Equal(in.PeriodStart) {
				t.Fatalf("replace = %+v created %v, from %+v", sub, created, in)
			}
			if !created && sub.ID != prev.ID {
				t.Fatalf("replaced a different row: %s, want %s", sub.ID, prev.ID)
			}
			if got, err := s.LatestSubscription(ctx, payg.ID); err != nil || got.ID != sub.ID || got.Status != sub.Status {
				t.Fatalf("latest = %+v, %v", got, err)
			}
			prev = sub
		})
	}
	if got := count(t, s, `SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2`, payg.ID, ActionSubscriptionReplace); got != 4 {
		t.Fatalf("%d replace audit rows, want 4", got)
	}
}

func TestClearTierCooldown(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	if _, err := s.SetPlan(ctx, acme.ID, "mini", "test"); err != nil {
		t.Fatal(err)
	}
	sub, err := s.ClearTierCooldown(ctx, acme.ID, "admin")
	if err != nil || sub.LastTierSwitchAt != nil {
		t.Fatalf("clear = %+v, %v", sub, err)
	}
	if _, err := s.ClearTierCooldown(ctx, "ten_missing", "admin"); !errorsIs(err, ErrTenantNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
	payg, _ := mustTenant(t, s, "Payg", "")
	if _, err := s.ClearTierCooldown(ctx, payg.ID, "admin"); !errorsIs(err, ErrNoSubscription) {
		t.Fatalf("no subscription: %v", err)
	}
}

func TestKeyHashes(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, first := mustTenant(t, s, "Acme", "free")
	rec, second, err := s.IssueAPIKey(ctx, acme.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeAPIKey(ctx, acme.ID, rec.ID); err != nil {
		t.Fatal(err)
	}
	live, revoked, err := s.KeyHashes(ctx, acme.ID)
	if err != nil || len(live) != 1 || live[0] != tenant.HashKey(first) || len(revoked) != 1 || revoked[0] != tenant.HashKey(second) {
		t.Fatalf("key hashes = %v %v, %v", live, revoked, err)
	}
	if h, err := s.APIKeyHash(ctx, acme.ID, rec.ID); err != nil || h != tenant.HashKey(second) {
		t.Fatalf("api key hash = %q, %v", h, err)
	}
	other, _ := mustTenant(t, s, "Other", "free")
	if _, err := s.APIKeyHash(ctx, other.ID, rec.ID); !errorsIs(err, ErrKeyNotFound) {
		t.Fatalf("another tenant's key: %v", err)
	}
	if _, _, err := s.KeyHashes(ctx, "ten_missing"); !errorsIs(err, ErrTenantNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

func TestCreditBalanceAudited(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	e := LedgerEntry{TenantID: acme.ID, AmountMinor: 250, Currency: "USD", Kind: "admin_credit", PeriodStart: fixedNow, Note: "n1"}
	for i, want := range []bool{true, false} {
		applied, bal, err := s.CreditBalanceAudited(ctx, e, "admin")
		if err != nil || applied != want || bal != 250 {
			t.Fatalf("credit %d = %v %d, %v", i, applied, bal, err)
		}
	}
	if got := count(t, s, `SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2`, acme.ID, ActionBalanceCredit); got != 1 {
		t.Fatalf("%d credit audit rows, want 1", got)
	}
	bad := e
	bad.AmountMinor = -1
	if _, _, err := s.CreditBalanceAudited(ctx, bad, "admin"); !errorsIs(err, ErrInvalid) {
		t.Fatalf("negative credit: %v", err)
	}
	missing := e
	missing.TenantID = "ten_missing"
	if _, _, err := s.CreditBalanceAudited(ctx, missing, "admin"); !errorsIs(err, ErrTenantNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

func TestListTenantStatuses(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	live, _ := mustTenant(t, s, "Live", "free")
	payg, _ := mustTenant(t, s, "Payg", "")
	gone, _ := mustTenant(t, s, "Gone", "mini")
	if _, err := s.pool.Exec(ctx, `UPDATE subscriptions SET status = 'canceled' WHERE tenant_id = $1`, gone.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListTenantStatuses(ctx, 10, "")
	if err != nil || len(got) != 3 {
		t.Fatalf("list = %v, %v", got, err)
	}
	want := map[string][2]string{live.ID: {"free", StatusActive}, payg.ID: {"", ""}, gone.ID: {"", StatusCanceled}}
	for _, ts := range got {
		if w := want[ts.ID]; ts.Plan != w[0] || ts.Status != w[1] {
			t.Fatalf("%s: plan %q status %q, want %v", ts.Name, ts.Plan, ts.Status, w)
		}
	}
	if page, err := s.ListTenantStatuses(ctx, 1, got[0].ID); err != nil || len(page) != 1 || page[0].ID != got[1].ID {
		t.Fatalf("second page = %v, %v", page, err)
	}
}

func TestTenantsOnPlans(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	free, _ := mustTenant(t, s, "Free", "free")
	mini, _ := mustTenant(t, s, "Mini", "mini")
	mustTenant(t, s, "Pro", "pro")
	payg, _ := mustTenant(t, s, "Payg", "")
	gone, _ := mustTenant(t, s, "Gone", "mini")
	if _, err := s.pool.Exec(ctx, `UPDATE subscriptions SET status = 'canceled' WHERE tenant_id = $1`, gone.ID); err != nil {
		t.Fatal(err)
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	tests := []struct {
		plans   []string
		without bool
		want    []string
	}{
		{[]string{"mini"}, false, []string{mini.ID}},
		{[]string{"free"}, true, sorted(free.ID, payg.ID, gone.ID)},
		{[]string{"free", "mini"}, false, sorted(free.ID, mini.ID)},
		{nil, true, sorted(payg.ID, gone.ID)},
		{[]string{"legacy"}, false, nil},
	}
	for _, tt := range tests {
		var got []string
		after := ""
		for range 10 { // pages of one
			page, err := s.TenantsOnPlans(ctx, tt.plans, tt.without, after, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			after = page[len(page)-1]
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("plans %v, without a subscription %v: %v, want %v", tt.plans, tt.without, got, tt.want)
		}
	}
}

// TestUnstorableTextIsInvalid: text PostgreSQL refuses (a NUL byte,
// invalid UTF-8: SQLSTATE 22021) is the caller's ErrInvalid, not a store
// failure, and changes nothing.
func TestUnstorableTextIsInvalid(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	calls := map[string]func() error{
		"get tenant": func() error { _, err := s.GetTenant(ctx, "a\x00b"); return err },
		"get plan":   func() error { _, err := s.GetPlan(ctx, "\xff"); return err },
		"list":       func() error { _, err := s.ListTenantStatuses(ctx, 10, "\xff"); return err },
		"audit":      func() error { _, err := s.AuditEntries(ctx, AuditQuery{TenantID: "\xff"}); return err },
		"key hash":   func() error { _, err := s.APIKeyHash(ctx, acme.ID, "k\x00"); return err },
		"list keys":  func() error { _, err := s.ListAPIKeys(ctx, "\xff"); return err },
		"key hashes": func() error { _, _, err := s.KeyHashes(ctx, "\xff"); return err },
		"latest":     func() error { _, err := s.LatestSubscription(ctx, "\xff"); return err },
		"lock tenant": func() error {
			l, err := s.LockTenant(ctx, "a\x00")
			if err == nil {
				l.Unlock()
			}
			return err
		},
		"create":   func() error { _, _, err := s.CreateTenant(ctx, "a\x00b", "free"); return err },
		"set plan": func() error { _, err := s.SetPlan(ctx, acme.ID, "pro\x00", "test"); return err },
		"credit": func() error {
			_, _, err := s.CreditBalanceAudited(ctx, LedgerEntry{TenantID: acme.ID, AmountMinor: 5, Currency: "USD",
				Kind: "admin_credit", PeriodStart: fixedNow, Note: "n\x00"}, "admin")
			return err
		},
	}
	for name, call := range calls {
		if err := call(); !errorsIs(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if n := count(t, s, `SELECT count(*) FROM tenants`); n != 1 {
		t.Fatalf("%d tenants", n)
	}
	if n := count(t, s, `SELECT count(*) FROM balance_ledger`); n != 0 {
		t.Fatalf("%d ledger rows", n)
	}
}
