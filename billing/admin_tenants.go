package billing

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// TenantStatus is a tenant with the status of its newest subscription:
// the live one's status, "canceled" when only canceled ones remain, ""
// when it never subscribed. Plan stays "" unless a subscription is live.
type TenantStatus struct {
	Tenant
	Status string
}

// ListTenantStatuses is ListTenants with each tenant's subscription status.
func (s *Store) ListTenantStatuses(ctx context.Context, limit int, after string) ([]TenantStatus, error) {
	const op = "list tenant statuses"
	rows, err := s.pool.Query(ctx, `
		SELECT t.id, t.name,
			CASE WHEN s.status <> 'canceled' THEN s.plan_slug ELSE '' END,
			COALESCE(s.status, ''), t.created_at
		FROM tenants t
		LEFT JOIN LATERAL (
			SELECT plan_slug, status FROM subscriptions WHERE tenant_id = t.id
			ORDER BY (status <> 'canceled') DESC, created_at DESC, id DESC LIMIT 1
		) s ON true
		WHERE t.id > $1 ORDER BY t.id LIMIT $2`, after, clampLimit(limit, 50, 500))
	if err != nil {
		return nil, classify(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TenantStatus, error) {
		var t TenantStatus
		var plan *string
		err := r.Scan(&t.ID, &t.Name, &plan, &t.Status, &t.CreatedAt)
		if plan != nil {
			t.Plan = *plan
		}
		return t, err
	})
	if err != nil {
		return nil, classify(op, err)
	}
	return out, nil
}

// TenantsOnPlans returns, in id order after the id after, up to limit
// (default 500, at most 5000) ids of the tenants entitled to one of plans:
// those whose live subscription is on one and, when withoutSubscription is
// set (the default plan is among them), those without a live subscription.
// Pass the last id of a page to get the next one.
func (s *Store) TenantsOnPlans(ctx context.Context, plans []string, withoutSubscription bool, after string, limit int) ([]string, error) {
	const op = "tenants on plans"
	rows, err := s.pool.Query(ctx, `
		SELECT t.id FROM tenants t
		LEFT JOIN subscriptions s ON s.tenant_id = t.id AND s.status <> 'canceled'
		WHERE t.id > $1 AND (s.plan_slug = ANY($2) OR ($3 AND s.id IS NULL))
		ORDER BY t.id LIMIT $4`, after, plans, withoutSubscription, clampLimit(limit, 500, 5000))
	if err != nil {
		return nil, classify(op, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, classify(op, err)
	}
	return ids, nil
}
