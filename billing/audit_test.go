package billing

import (
	"testing"
)

func TestAuditEntries(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	for i, e := range []AuditEntry{
		{Actor: "webhook:stripe", Action: "invoice.paid", TenantID: "ten_a", Detail: map[string]any{"invoice": "in_1"}},
		{Actor: "admin", Action: "tenant.suspend", TenantID: "ten_b"},
		{Actor: "admin", Action: "config.reload"},
		{Actor: "webhook:stripe", Action: "invoice.paid", TenantID: "ten_a", Detail: map[string]any{"invoice": "in_2"}},
	} {
		if err := s.RecordAudit(ctx, e); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	for _, bad := range []AuditEntry{{Action: "x"}, {Actor: "x"}} {
		if err := s.RecordAudit(ctx, bad); !errorsIs(err, ErrInvalid) {
			t.Fatalf("record %+v: %v", bad, err)
		}
	}
	// newStore's own deactivation of the legacy plan is the oldest entry.
	all, err := s.AuditEntries(ctx, AuditQuery{})
	if err != nil || len(all) != 5 || all[4].Action != ActionPlanUpdate {
		t.Fatalf("all = %+v, %v", all, err)
	}
	tests := []struct {
		name       string
		q          AuditQuery
		wantAction []string
	}{
		{"one tenant", AuditQuery{TenantID: "ten_a"}, []string{"invoice.paid", "invoice.paid"}},
		{"another", AuditQuery{TenantID: "ten_b"}, []string{"tenant.suspend"}},
		{"unknown tenant", AuditQuery{TenantID: "ten_z"}, nil},
		{"limit", AuditQuery{Limit: 2}, []string{"invoice.paid", "config.reload"}},
		{"before", AuditQuery{BeforeID: all[1].ID, Limit: 2}, []string{"tenant.suspend", "invoice.paid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.AuditEntries(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var actions []string
			for i, e := range got {
				if i > 0 && e.ID >= got[i-1].ID {
					t.Fatal("not newest first")
				}
				if tt.q.TenantID != "" && e.TenantID != tt.q.TenantID {
					t.Fatalf("entry of %q listed for %q", e.TenantID, tt.q.TenantID)
				}
				actions = append(actions, e.Action)
			}
			if len(actions) != len(tt.wantAction) {
				t.Fatalf("got %v, want %v", actions, tt.wantAction)
			}
			for i := range actions {
				if actions[i] != tt.wantAction[i] {
					t.Fatalf("got %v, want %v", actions, tt.wantAction)
				}
			}
		})
	}
	if all[0].Detail["invoice"] != "in_2" || all[0].Actor != "webhook:stripe" || all[1].TenantID != "" {
		t.Fatalf("entries = %+v", all)
	}
}
