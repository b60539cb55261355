package billing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Invoice statuses.
const (
	InvoicePaid = "paid"
	InvoiceOpen = "open"
	InvoiceVoid = "void"
)

var invoiceStatuses = []string{InvoicePaid, InvoiceOpen, InvoiceVoid}

// Invoice is a provider's invoice as the tenant API lists it.
type Invoice struct {
	ID              string // "in_…", the provider's id or one of ours
	TenantID        string
	Number          string
	Status          string
	AmountDueMinor  int64
	AmountPaidMinor int64
	Currency        string
	PeriodStart     time.Time
	PeriodEnd       time.Time
	HostedURL       string
	CreatedAt       time.Time
}

const invoiceColumns = `id, tenant_id, number, status, amount_due_minor, amount_paid_minor, currency,
	period_start, period_end, hosted_url, created_at`

func scanInvoice(r pgx.Row) (Invoice, error) {
	var in Invoice
	err := r.Scan(&in.ID, &in.TenantID, &in.Number, &in.Status, &in.AmountDueMinor, &in.AmountPaidMinor, &in.Currency,
		&in.PeriodStart, &in.PeriodEnd, &in.HostedURL, &in.CreatedAt)
	return in, err
}

// PutInvoice inserts an invoice or, when its id exists for the same
// tenant, updates what a provider changes over its life (number, status,
// amounts, URL). An id that belongs to another tenant is ErrConflict: a
// webhook must never move an invoice between tenants. An empty ID gets a
// fresh "in_…" one; a zero CreatedAt means now.
func (s *Store) PutInvoice(ctx context.Context, in Invoice) (Invoice, error) {
	const op = "put invoice"
	switch {
	case in.TenantID == "":
		return Invoice{}, invalid(op, "tenant is required")
	case !slices.Contains(invoiceStatuses, in.Status):
		return Invoice{}, invalid(op, "status %q is not one of %v", in.Status, invoiceStatuses)
	case in.AmountDueMinor < 0 || in.AmountPaidMinor < 0:
		return Invoice{}, invalid(op, "negative amount")
	case !currencyRE.MatchString(in.Currency):
		return Invoice{}, invalid(op, "currency %q is not an upper-case ISO 4217 code", in.Currency)
	case in.PeriodEnd.Before(in.PeriodStart):
		return Invoice{}, invalid(op, "period ends before it starts")
	}
	if in.ID == "" {
		id, err := newID("in_")
		if err != nil {
			return Invoice{}, fmt.Errorf("%s: %w", op, err)
		}
		in.ID = id
	}
	var created *time.Time
	if !in.CreatedAt.IsZero() {
		created = &in.CreatedAt
	}
	out, err := scanInvoice(s.pool.QueryRow(ctx, `
		INSERT INTO invoices (id, tenant_id, number, status, amount_due_minor, amount_paid_minor, currency,
			period_start, period_end, hosted_url, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, COALESCE($11, now()))
		ON CONFLICT (id) DO UPDATE SET number = excluded.number, status = excluded.status,
			amount_due_minor = excluded.amount_due_minor, amount_paid_minor = excluded.amount_paid_minor,
			hosted_url = excluded.hosted_url
		WHERE invoices.tenant_id = excluded.tenant_id
		RETURNING `+invoiceColumns,
		in.ID, in.TenantID, in.Number, in.Status, in.AmountDueMinor, in.AmountPaidMinor, in.Currency,
		in.PeriodStart, in.PeriodEnd, in.HostedURL, created))
	if errors.Is(err, pgx.ErrNoRows) {
		// The WHERE refused the update: the id is another tenant's.
		return Invoice{}, fmt.Errorf("%s %q: %w: belongs to another tenant", op, in.ID, ErrConflict)
	}
	if err != nil {
		return Invoice{}, classify(op, err)
	}
	return out, nil
}

// ListInvoices returns the tenant's invoices, newest first: up to limit
// (default 10, at most 100), only those with status when it is not "".
func (s *Store) ListInvoices(ctx context.Context, tenantID string, limit int, status string) ([]Invoice, error) {
	const op = "list invoices"
	if status != "" && !slices.Contains(invoiceStatuses, status) {
		return nil, invalid(op, "status %q is not one of %v", status, invoiceStatuses)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+invoiceColumns+` FROM invoices
		WHERE tenant_id = $1 AND ($2 = '' OR status = $2)
		ORDER BY created_at DESC, id DESC LIMIT $3`, tenantID, status, clampLimit(limit, 10, 100))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Invoice, error) { return scanInvoice(r) })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}
