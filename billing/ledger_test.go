package billing

import (
	"math"
	"testing"
)

func TestLedger(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, _ := mustTenant(t, s, "Acme", "mini")
	globex, _ := mustTenant(t, s, "Globex", "mini")
	entry := func(tenantID string, amount int64, currency, kind, note string) LedgerEntry {
		return LedgerEntry{TenantID: tenantID, AmountMinor: amount, Currency: currency, Kind: kind, Note: note, PeriodStart: mayStart}
	}
	tests := []struct {
		name        string
		debit       bool
		e           LedgerEntry
		wantApplied bool
		wantErr     error
	}{
		{"top up", false, entry(acme.ID, 5000, "USD", "top_up", "pay_1"), true, nil},
		{"retried top up is absorbed", false, entry(acme.ID, 5000, "USD", "top_up", "pay_1"), false, nil},
		{"another top up", false, entry(acme.ID, 1000, "USD", "top_up", "pay_2"), true, nil},
		{"proration debit", true, entry(acme.ID, 1613, "USD", "proration", "starter→builder"), true, nil},
		{"retried debit is absorbed", true, entry(acme.ID, 1613, "USD", "proration", "starter→builder"), false, nil},
		{"same note, other kind", true, entry(acme.ID, 100, "USD", "usage", "starter→builder"), true, nil},
		{"other currency", false, entry(acme.ID, 700, "EUR", "top_up", "pay_3"), true, nil},
		{"other tenant, same note", false, entry(globex.ID, 42, "USD", "top_up", "pay_1"), true, nil},
		{"unknown tenant", false, entry("ten_missing", 1, "USD", "top_up", "x"), false, ErrTenantNotFound},
		{"zero amount", false, entry(acme.ID, 0, "USD", "top_up", "z"), false, ErrInvalid},
		{"negative credit", false, entry(acme.ID, -5, "USD", "top_up", "z"), false, ErrInvalid},
		{"bad currency", false, entry(acme.ID, 5, "usd", "top_up", "z"), false, ErrInvalid},
		{"bad kind", true, entry(acme.ID, 5, "USD", "Top Up", "z"), false, ErrInvalid},
		{"no period", false, LedgerEntry{TenantID: acme.ID, AmountMinor: 5, Currency: "USD", Kind: "top_up"}, false, ErrInvalid},
		{"credit above the bound", false, entry(acme.ID, MaxAmountMinor+1, "USD", "top_up", "big"), false, ErrInvalid},
		{"debit above the bound", true, entry(acme.ID, math.MaxInt64, "USD", "top_up", "big"), false, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			post := s.CreditBalance
			if tt.debit {
				post = s.DebitBalance
			}
			applied, err := post(ctx, tt.e)
			wantErr(t, err, tt.wantErr)
			if applied != tt.wantApplied {
				t.Fatalf("applied = %v, want %v", applied, tt.wantApplied)
			}
		})
	}
	balances := []struct {
		tenantID, currency string
		want               int64
	}{
		{acme.ID, "USD", 5000 + 1000 - 1613 - 100},
		{acme.ID, "EUR", 700},
		{acme.ID, "GBP", 0},
		{globex.ID, "USD", 42},
		{"ten_missing", "USD", 0},
	}
	for _, b := range balances {
		if got, err := s.Balance(ctx, b.tenantID, b.currency); err != nil || got != b.want {
			t.Errorf("balance %s %s = %d, %v; want %d", b.tenantID, b.currency, got, err, b.want)
		}
	}
	entries, err := s.LedgerEntries(ctx, acme.ID, 0)
	if err != nil || len(entries) != 5 {
		t.Fatalf("entries = %+v, %v", entries, err)
	}
	if e := entries[0]; e.Kind != "top_up" || e.AmountMinor != 700 || e.Currency != "EUR" || e.TenantID != acme.ID || !e.PeriodStart.Equal(mayStart) {
		t.Fatalf("newest entry = %+v", e)
	}
	if e := entries[2]; e.AmountMinor != -1613 || e.Note != "starter→builder" {
		t.Fatalf("debit entry = %+v", e)
	}
}

// TestLedgerSumOutOfRange: a ledger whose sum no longer fits in int64 (an
// entry booked before amounts were bounded) is ErrInvalid, which callers
// answer 4xx, not an unavailable store worth retrying.
func TestLedgerSumOutOfRange(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	if _, err := s.pool.Exec(ctx, `INSERT INTO balance_ledger (tenant_id, amount_minor, currency, kind, note, period_start)
		VALUES ($1, $2, 'USD', 'top_up', 'old', $3), ($1, 1, 'USD', 'top_up', 'old 2', $3)`,
		acme.ID, int64(math.MaxInt64), mayStart); err != nil {
		t.Fatal(err)
	}
	e := LedgerEntry{TenantID: acme.ID, AmountMinor: 1, Currency: "USD", Kind: "admin_credit", PeriodStart: mayStart, Note: "n"}
	if _, _, err := s.CreditBalanceAudited(ctx, e, "admin"); !errorsIs(err, ErrInvalid) {
		t.Fatalf("credit on an overflowing ledger: %v, want ErrInvalid", err)
	}
	if got := count(t, s, `SELECT count(*) FROM balance_ledger WHERE tenant_id = $1`, acme.ID); got != 2 {
		t.Fatalf("%d ledger rows after the refused credit, want 2", got)
	}
	if _, err := s.Balance(ctx, acme.ID, "USD"); !errorsIs(err, ErrInvalid) {
		t.Fatalf("balance of an overflowing ledger: %v, want ErrInvalid", err)
	}
}
