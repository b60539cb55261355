package billing

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Audit actions written by the admin additions.
const (
	ActionSubscriptionReplace = "subscription.replace"
	ActionCooldownClear       = "subscription.clear_cooldown"
	ActionBalanceCredit       = "balance.credit"
	// ActionGaugeSet is recorded by the admin API (RecordAudit): gauges
	// live in Redis only.
	ActionGaugeSet = "gauge.set"
)

// LatestSubscription returns the tenant's live subscription or, when it has
// none, its most recent canceled one, for showing the tenant's history
// (entitlements follow GetSubscription: a canceled tenant is
// pay-as-you-go). A tenant that never subscribed is ErrNoSubscription; an
// unknown tenant is ErrTenantNotFound.
func (s *Store) LatestSubscription(ctx context.Context, tenantID string) (Subscription, error) {
	const op = "latest subscription"
	sub, err := scanSub(s.pool.QueryRow(ctx, `SELECT `+subColumns+` FROM subscriptions WHERE tenant_id = $1
		ORDER BY (status <> 'canceled') DESC, created_at DESC, id DESC LIMIT 1`, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		if err := requireTenant(ctx, s.pool, tenantID); err != nil {
			return Subscription{}, classify(op, err)
		}
		return Subscription{}, fmt.Errorf("%s: tenant %q: %w", op, tenantID, ErrNoSubscription)
	}
	if err != nil {
		return Subscription{}, classify(op, err)
	}
	return sub, nil
}

// ReplaceSubscription gives the tenant a live subscription with explicit
// terms: the live one is rewritten in place (keeping its id, provider ids
// and last_tier_switch_at) or, when there is none, a new one is inserted.
// Status canceled ends it, leaving the tenant without a live subscription.
// A plan other than the current one must be active. created reports an
// insert. One audit row records the terms before and after.
func (s *Store) ReplaceSubscription(ctx context.Context, n NewSubscription, actor string) (sub Subscription, created bool, err error) {
	const op = "replace subscription"
	if err := n.normalise(op); err != nil {
		return Subscription{}, false, err
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		// The tenant row lock serialises replacements of one tenant, so two
		// concurrent inserts cannot race on the live-subscription index.
		var id string
		err := tx.QueryRow(ctx, `SELECT id FROM tenants WHERE id = $1 FOR UPDATE`, n.TenantID).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("tenant %q: %w", n.TenantID, ErrTenantNotFound)
		}
		if err != nil {
			return err
		}
		cur, err := liveSubscription(ctx, tx, n.TenantID, true)
		switch {
		case errors.Is(err, ErrNoSubscription):
			if err := requireActivePlan(ctx, tx, n.Plan); err != nil {
				return err
			}
			if sub, err = insertSubscription(ctx, tx, n); err != nil {
				return err
			}
			created = true
			return writeAudit(ctx, tx, actor, ActionSubscriptionReplace, n.TenantID, map[string]any{
				"subscription_id": sub.ID, "before": nil, "after": subTerms(sub),
			})
		case err != nil:
			return err
		}
		if cur.Plan != n.Plan {
			if err := requireActivePlan(ctx, tx, n.Plan); err != nil {
				return err
			}
		}
		if sub, err = scanSub(tx.QueryRow(ctx, `
			UPDATE subscriptions SET plan_slug = $2, status = $3, period_start = $4, period_end = $5,
				cancel_at_period_end = $6, updated_at = now()
			WHERE id = $1 RETURNING `+subColumns,
			cur.ID, n.Plan, n.Status, n.PeriodStart, n.PeriodEnd, n.CancelAtPeriodEnd)); err != nil {
			return err
		}
		return writeAudit(ctx, tx, actor, ActionSubscriptionReplace, n.TenantID, map[string]any{
			"subscription_id": sub.ID, "before": subTerms(cur), "after": subTerms(sub),
		})
	})
	if err != nil {
		return Subscription{}, false, classify(op, err)
	}
	return sub, created, nil
}

func subTerms(s Subscription) map[string]any {
	return map[string]any{
		"plan": s.Plan, "status": s.Status, "period_start": s.PeriodStart, "period_end": s.PeriodEnd,
		"cancel_at_period_end": s.CancelAtPeriodEnd,
	}
}

// ClearTierCooldown clears last_tier_switch_at on the tenant's live
// subscription: the time of its last plan switch, which a tier-switch
// cooldown will be counted from (none is enforced yet).
// It writes an audit row even when no cooldown was set, since an operator
// acted. No live subscription is ErrNoSubscription.
func (s *Store) ClearTierCooldown(ctx context.Context, tenantID, actor string) (Subscription, error) {
	const op = "clear tier cooldown"
	var sub Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := liveSubscription(ctx, tx, tenantID, true)
		if err != nil {
			return err
		}
		if sub, err = scanSub(tx.QueryRow(ctx, `
			UPDATE subscriptions SET last_tier_switch_at = NULL, updated_at = now()
			WHERE id = $1 RETURNING `+subColumns, cur.ID)); err != nil {
			return err
		}
		return writeAudit(ctx, tx, actor, ActionCooldownClear, tenantID, map[string]any{
			"subscription_id": cur.ID, "last_tier_switch_at": cur.LastTierSwitchAt,
		})
	})
	if err != nil {
		return Subscription{}, classify(op, err)
	}
	return sub, nil
}
