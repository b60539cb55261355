package billing

import (
	"strings"
	"testing"

	"github.com/tollgate/tollgate/tenant"
)

func TestIssueAndRevokeAPIKeys(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, firstKey := mustTenant(t, s, "Acme", "free")
	globex, _ := mustTenant(t, s, "Globex", "free")

	rec, second, err := s.IssueAPIKey(ctx, acme.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !issuedKeyRE.MatchString(second) || second == firstKey || rec.TenantID != acme.ID ||
		rec.Prefix != second[:8] || rec.RevokedAt != nil || !strings.HasPrefix(rec.ID, "key_") {
		t.Fatalf("issued %q, %+v", second, rec)
	}
	if _, _, err := s.IssueAPIKey(ctx, "ten_missing"); !errorsIs(err, ErrTenantNotFound) {
		t.Fatalf("issue for unknown tenant: %v", err)
	}

	keys, err := s.ListAPIKeys(ctx, acme.ID)
	if err != nil || len(keys) != 2 || keys[1] != rec {
		t.Fatalf("list = %+v, %v", keys, err)
	}
	tests := []struct {
		name, tenantID, keyID string
		wantErr               error
	}{
		{"another tenant's key", globex.ID, rec.ID, ErrKeyNotFound},
		{"unknown key", acme.ID, "key_nope", ErrKeyNotFound},
		{"revoke", acme.ID, rec.ID, nil},
		{"revoke again is a no-op", acme.ID, rec.ID, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.RevokeAPIKey(ctx, tt.tenantID, tt.keyID)
			wantErr(t, err, tt.wantErr)
			if tt.wantErr == nil && (got.ID != rec.ID || got.RevokedAt == nil) {
				t.Fatalf("revoked = %+v", got)
			}
		})
	}
	if _, err := s.TenantByKeyHash(ctx, tenant.HashKey(second)); !errorsIs(err, ErrKeyNotFound) {
		t.Fatalf("revoked key still resolves: %v", err)
	}
	if got, err := s.TenantByKeyHash(ctx, tenant.HashKey(firstKey)); err != nil || got.ID != acme.ID {
		t.Fatalf("first key = %+v, %v", got, err)
	}
	if n := count(t, s, `SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = $2`, acme.ID, ActionKeyRevoke); n != 1 {
		t.Fatalf("revoke audit rows = %d, want 1 (the no-op writes none)", n)
	}
	if _, err := s.ListAPIKeys(ctx, "ten_missing"); !errorsIs(err, ErrTenantNotFound) {
		t.Fatalf("list for unknown tenant: %v", err)
	}
}

func TestTenantByKeyHash(t *testing.T) {
	s := newStore(t)
	acme, key := mustTenant(t, s, "Acme", "pro")
	h := tenant.HashKey(key)
	tests := []struct {
		name, hash string
		wantErr    error
	}{
		{"lower-case hash", h, nil},
		{"upper-case hash", strings.ToUpper(h), nil},
		{"unknown", tenant.HashKey("tg_" + strings.Repeat("a", 40)), ErrKeyNotFound},
		{"the key itself", key, ErrInvalid},
		{"short", h[:63], ErrInvalid},
		{"not hex", strings.Repeat("g", 64), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.TenantByKeyHash(testCtx(t), tt.hash)
			wantErr(t, err, tt.wantErr)
			if tt.wantErr == nil && got != acme {
				t.Fatalf("got %+v, want %+v", got, acme)
			}
		})
	}
}

func TestKeyHashesAreUnique(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, key := mustTenant(t, s, "Acme", "free")
	globex, _ := mustTenant(t, s, "Globex", "free")
	// The same hash for another tenant (what a collision would be) is refused
	// by the database itself.
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys (id, tenant_id, key_hash, prefix) VALUES ('key_dup', $1, $2, 'tg_x')`,
		globex.ID, tenant.HashKey(key))
	if err = classify("insert", err); !errorsIs(err, ErrConflict) {
		t.Fatalf("duplicate hash: %v, want ErrConflict", err)
	}
	if got, err := s.TenantByKeyHash(ctx, tenant.HashKey(key)); err != nil || got.ID != acme.ID {
		t.Fatalf("key now resolves to %+v, %v", got, err)
	}
	seen := map[string]bool{}
	for range 50 {
		k, err := NewAPIKey()
		if err != nil || !issuedKeyRE.MatchString(k) || seen[k] {
			t.Fatalf("NewAPIKey = %q, %v", k, err)
		}
		seen[k] = true
	}
}
