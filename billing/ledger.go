package billing

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// LedgerEntry is one movement of a tenant's prepaid balance.
type LedgerEntry struct {
	ID          int64
	TenantID    string
	AmountMinor int64 // + credit, − debit
	Currency    string
	Kind        string // e.g. "top_up", "proration", "refund"
	// PeriodStart and Note identify the movement with TenantID and Kind: a
	// second entry with the same four is a duplicate and is absorbed.
	PeriodStart time.Time
	Note        string
	CreatedAt   time.Time
}

var kindRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// MaxAmountMinor bounds one ledger movement: 10^15 minor units (ten
// trillion in a two-decimal currency). Far beyond any real credit, it keeps
// a balance's sum inside int64 for thousands of maximal entries, where an
// unbounded one (math.MaxInt64) made every later sum overflow.
const MaxAmountMinor int64 = 1_000_000_000_000_000

// validateEntry checks the fields every ledger movement needs.
func validateEntry(op string, e LedgerEntry) error {
	switch {
	case e.TenantID == "":
		return invalid(op, "tenant is required")
	case e.AmountMinor <= 0 || e.AmountMinor > MaxAmountMinor:
		return invalid(op, "amount must be from 1 to %d, got %d", MaxAmountMinor, e.AmountMinor)
	case !currencyRE.MatchString(e.Currency):
		return invalid(op, "currency %q is not an upper-case ISO 4217 code", e.Currency)
	case !kindRE.MatchString(e.Kind):
		return invalid(op, "kind %q must match %s", e.Kind, kindRE)
	case e.PeriodStart.IsZero():
		return invalid(op, "period start is required")
	}
	return nil
}

// CreditBalance adds e.AmountMinor (1 to MaxAmountMinor) to the tenant's
// balance. applied is false when the same (tenant, kind, period start,
// note) was already booked: a retried credit is absorbed, never booked
// twice.
func (s *Store) CreditBalance(ctx context.Context, e LedgerEntry) (bool, error) {
	return s.post(ctx, "credit balance", e, 1)
}

// DebitBalance takes e.AmountMinor (1 to MaxAmountMinor) from the tenant's
// balance, with the same duplicate absorption as CreditBalance. It does not
// check that the balance covers it; callers that must refuse do so in their
// flow.
func (s *Store) DebitBalance(ctx context.Context, e LedgerEntry) (bool, error) {
	return s.post(ctx, "debit balance", e, -1)
}

func (s *Store) post(ctx context.Context, op string, e LedgerEntry, sign int64) (bool, error) {
	if err := validateEntry(op, e); err != nil {
		return false, err
	}
	// ON CONFLICT names the dedup constraint only: any other violation
	// (unknown tenant) must still fail loudly.
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO balance_ledger (tenant_id, amount_minor, currency, kind, note, period_start)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT ON CONSTRAINT balance_ledger_dedup DO NOTHING`,
		e.TenantID, sign*e.AmountMinor, e.Currency, e.Kind, e.Note, e.PeriodStart)
	if err != nil {
		return false, classify(op, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Balance returns the sum of the tenant's ledger in currency (0 when it has
// no entries).
func (s *Store) Balance(ctx context.Context, tenantID, currency string) (int64, error) {
	var sum int64
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(sum(amount_minor), 0)::bigint FROM balance_ledger
		WHERE tenant_id = $1 AND currency = $2`, tenantID, currency).Scan(&sum)
	if err != nil {
		return 0, classify("balance", err)
	}
	return sum, nil
}

// LedgerEntries returns the tenant's ledger, newest first, up to limit
// (default 50, at most 500).
func (s *Store) LedgerEntries(ctx context.Context, tenantID string, limit int) ([]LedgerEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, tenant_id, amount_minor, currency, kind, period_start, note, created_at
		FROM balance_ledger WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2`, tenantID, clampLimit(limit, 50, 500))
	if err != nil {
		return nil, fmt.Errorf("ledger entries: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[LedgerEntry])
	if err != nil {
		return nil, fmt.Errorf("ledger entries: %w", err)
	}
	return out, nil
}
