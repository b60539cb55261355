package billing

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// CreditBalanceAudited is CreditBalance with an audit row in the same
// transaction, returning the balance in e.Currency afterwards. applied is
// false when the same (tenant, kind, period start, note) was already
// booked: the retry changes nothing and writes no audit row.
func (s *Store) CreditBalanceAudited(ctx context.Context, e LedgerEntry, actor string) (applied bool, balance int64, err error) {
	const op = "credit balance"
	if err := validateEntry(op, e); err != nil {
		return false, 0, err
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO balance_ledger (tenant_id, amount_minor, currency, kind, note, period_start)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT ON CONSTRAINT balance_ledger_dedup DO NOTHING`,
			e.TenantID, e.AmountMinor, e.Currency, e.Kind, e.Note, e.PeriodStart)
		if err != nil {
			return err
		}
		applied = tag.RowsAffected() == 1
		if err := tx.QueryRow(ctx, `SELECT COALESCE(sum(amount_minor), 0)::bigint FROM balance_ledger
			WHERE tenant_id = $1 AND currency = $2`, e.TenantID, e.Currency).Scan(&balance); err != nil {
			return err
		}
		if !applied {
			return nil
		}
		return writeAudit(ctx, tx, actor, ActionBalanceCredit, e.TenantID, map[string]any{
			"amount_minor": e.AmountMinor, "currency": e.Currency, "kind": e.Kind, "note": e.Note,
			"period_start": e.PeriodStart, "balance_minor": balance,
		})
	})
	if err != nil {
		return false, 0, classify(op, err)
	}
	return applied, balance, nil
}
