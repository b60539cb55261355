package billing

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/tenant"
)

var (
	issuedKeyRE = regexp.MustCompile(`^tg_[a-z2-7]{40}$`)
	tenantIDRE  = regexp.MustCompile(`^ten_[0-9a-f]{20}$`)
)

func TestCreateTenant(t *testing.T) {
	s := newStore(t)
	tests := []struct {
		name, tenantName, plan string
		wantName               string
		wantErr                error
	}{
		{"on a plan", "Acme", "free", "Acme", nil},
		{"name trimmed", "  Globex \n", "pro", "Globex", nil},
		{"pay as you go", "Initech", "", "Initech", nil},
		{"unicode name at the limit", strings.Repeat("é", 200), "mini", strings.Repeat("é", 200), nil},
		{"unknown plan", "Umbrella", "gold", "", ErrPlanNotFound},
		{"inactive plan", "Umbrella", "legacy", "", ErrPlanInactive},
		{"empty name", "   ", "free", "", ErrInvalid},
		{"name too long", strings.Repeat("x", 201), "free", "", ErrInvalid},
		{"invalid utf-8", "bad\xff", "free", "", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := WithActor(testCtx(t), "admin:test")
			before := count(t, s, `SELECT count(*) FROM tenants`)
			tn, key, err := s.CreateTenant(ctx, tt.tenantName, tt.plan)
			wantErr(t, err, tt.wantErr)
			if tt.wantErr != nil {
				// One transaction: a failure leaves nothing behind.
				if n := count(t, s, `SELECT count(*) FROM tenants`); n != before {
					t.Fatalf("tenants went from %d to %d after a failed create", before, n)
				}
				return
			}
			if !tenantIDRE.MatchString(tn.ID) || tn.Name != tt.wantName || tn.Plan != tt.plan || tn.CreatedAt.IsZero() {
				t.Fatalf("tenant = %+v", tn)
			}
			if !issuedKeyRE.MatchString(key) {
				t.Fatalf("key %q is not tg_ + 40 lower-case base32 characters", key)
			}
			if n := count(t, s, `SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND key_hash = $2 AND prefix = $3`,
				tn.ID, tenant.HashKey(key), key[:8]); n != 1 {
				t.Fatalf("stored key rows = %d, want the hash and prefix once", n)
			}
			if n := count(t, s, `SELECT count(*) FROM api_keys WHERE key_hash = $1 OR prefix = $1`, key); n != 0 {
				t.Fatal("the key itself was stored")
			}
			got, err := s.TenantByKeyHash(ctx, tenant.HashKey(key))
			if err != nil || got != tn {
				t.Fatalf("TenantByKeyHash = %+v, %v; want %+v", got, err, tn)
			}
			sub, err := s.GetSubscription(ctx, tn.ID)
			if tt.plan == "" {
				wantErr(t, err, ErrNoSubscription)
			} else {
				wantErr(t, err, nil)
				start, end := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
				if sub.Plan != tt.plan || sub.Status != StatusActive || sub.Provider != ProviderManual ||
					!sub.PeriodStart.Equal(start) || !sub.PeriodEnd.Equal(end) || sub.LastTierSwitchAt != nil {
					t.Fatalf("subscription = %+v", sub)
				}
			}
			audit, err := s.AuditEntries(ctx, AuditQuery{TenantID: tn.ID})
			if err != nil || len(audit) != 1 {
				t.Fatalf("audit = %+v, %v; want one entry", audit, err)
			}
			if a := audit[0]; a.Action != ActionTenantCreate || a.Actor != "admin:test" || a.Detail["name"] != tt.wantName {
				t.Fatalf("audit entry = %+v", a)
			}
		})
	}
}

func TestGetTenant(t *testing.T) {
	s := newStore(t)
	acme, _ := mustTenant(t, s, "Acme", "mini")
	payg, _ := mustTenant(t, s, "Payg", "")
	tests := []struct {
		name, id string
		want     Tenant
		wantErr  error
	}{
		{"with plan", acme.ID, acme, nil},
		{"pay as you go", payg.ID, payg, nil},
		{"unknown", "ten_00000000000000000000", Tenant{}, ErrTenantNotFound},
		{"empty id", "", Tenant{}, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.GetTenant(testCtx(t), tt.id)
			wantErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestListTenantsPages(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	want := map[string]Tenant{}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		tn, _ := mustTenant(t, s, name, "free")
		want[tn.ID] = tn
	}
	tests := []struct {
		name      string
		limit     int
		wantPages int
	}{
		{"pages of two", 2, 3},
		{"one page", 10, 1},
		{"default limit", 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]bool{}
			after, pages := "", 0
			for range 10 { // bounded: 5 tenants never need more
				page, err := s.ListTenants(ctx, tt.limit, after)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				pages++
				for i, tn := range page {
					if seen[tn.ID] || want[tn.ID] != tn || (i > 0 && tn.ID <= page[i-1].ID) {
						t.Fatalf("page %d: unexpected or unordered %+v", pages, tn)
					}
					seen[tn.ID] = true
				}
				after = page[len(page)-1].ID
			}
			if len(seen) != len(want) || pages != tt.wantPages {
				t.Fatalf("saw %d tenants in %d pages, want %d in %d", len(seen), pages, len(want), tt.wantPages)
			}
		})
	}
}
