package billing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Subscription statuses, as the payment providers name them.
const (
	StatusActive   = "active"
	StatusTrialing = "trialing"
	StatusPastDue  = "past_due"
	StatusCanceled = "canceled"
	StatusUnpaid   = "unpaid"
)

// Providers a subscription can come from.
const (
	ProviderStripe = "stripe"
	ProviderPolar  = "polar"
	ProviderManual = "manual"
)

var (
	statuses  = []string{StatusActive, StatusTrialing, StatusPastDue, StatusCanceled, StatusUnpaid}
	providers = []string{ProviderStripe, ProviderPolar, ProviderManual}
)

// Subscription ties a tenant to a plan for a billing period. A tenant has
// at most one live (not canceled) subscription; canceled ones are history.
type Subscription struct {
	ID                     string
	TenantID               string
	Plan                   string
	Status                 string
	PeriodStart            time.Time
	PeriodEnd              time.Time
	CancelAtPeriodEnd      bool
	LastTierSwitchAt       *time.Time
	Provider               string
	ProviderCustomerID     string
	ProviderSubscriptionID string
	CreatedAt              time.Time
	UpdatedAt              time.Time
}

const subColumns = `id, tenant_id, plan_slug, status, period_start, period_end, cancel_at_period_end,
	last_tier_switch_at, provider, COALESCE(provider_customer_id, ''), COALESCE(provider_subscription_id, ''),
	created_at, updated_at`

func scanSub(r pgx.Row) (Subscription, error) {
	var s Subscription
	err := r.Scan(&s.ID, &s.TenantID, &s.Plan, &s.Status, &s.PeriodStart, &s.PeriodEnd, &s.CancelAtPeriodEnd,
		&s.LastTierSwitchAt, &s.Provider, &s.ProviderCustomerID, &s.ProviderSubscriptionID, &s.CreatedAt, &s.UpdatedAt)
	return s, err
}

// NewSubscription is what CreateSubscription needs. Status defaults to
// active and Provider to manual.
type NewSubscription struct {
	TenantID               string
	Plan                   string
	Status                 string
	PeriodStart            time.Time
	PeriodEnd              time.Time
	CancelAtPeriodEnd      bool
	Provider               string
	ProviderCustomerID     string
	ProviderSubscriptionID string
}

func (n *NewSubscription) normalise(op string) error {
	if n.Status == "" {
		n.Status = StatusActive
	}
	if n.Provider == "" {
		n.Provider = ProviderManual
	}
	switch {
	case !slices.Contains(statuses, n.Status):
		return invalid(op, "status %q is not one of %v", n.Status, statuses)
	case !slices.Contains(providers, n.Provider):
		return invalid(op, "provider %q is not one of %v", n.Provider, providers)
	case n.PeriodStart.IsZero() || !n.PeriodEnd.After(n.PeriodStart):
		return invalid(op, "period end must be after period start")
	}
	return nil
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func insertSubscription(ctx context.Context, q querier, n NewSubscription) (Subscription, error) {
	id, err := newID("sub_")
	if err != nil {
		return Subscription{}, err
	}
	return scanSub(q.QueryRow(ctx, `
		INSERT INTO subscriptions (id, tenant_id, plan_slug, status, period_start, period_end, cancel_at_period_end,
			provider, provider_customer_id, provider_subscription_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		RETURNING `+subColumns,
		id, n.TenantID, n.Plan, n.Status, n.PeriodStart, n.PeriodEnd, n.CancelAtPeriodEnd,
		n.Provider, nullIfEmpty(n.ProviderCustomerID), nullIfEmpty(n.ProviderSubscriptionID)))
}

// CreateSubscription starts a subscription with explicit period bounds and
// writes an audit row. A tenant that already has a live subscription is
// ErrConflict (change plans with SetPlan); an unknown or inactive plan is
// ErrPlanNotFound or ErrPlanInactive.
func (s *Store) CreateSubscription(ctx context.Context, n NewSubscription, actor string) (Subscription, error) {
	const op = "create subscription"
	if err := n.normalise(op); err != nil {
		return Subscription{}, err
	}
	var sub Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := requireTenant(ctx, tx, n.TenantID); err != nil {
			return err
		}
		if err := requireActivePlan(ctx, tx, n.Plan); err != nil {
			return err
		}
		var err error
		if sub, err = insertSubscription(ctx, tx, n); err != nil {
			return err
		}
		return writeAudit(ctx, tx, actor, ActionSubscriptionCreate, n.TenantID, map[string]any{
			"subscription_id": sub.ID, "plan": sub.Plan, "status": sub.Status, "provider": sub.Provider,
			"period_start": sub.PeriodStart, "period_end": sub.PeriodEnd,
		})
	})
	if err != nil {
		return Subscription{}, classify(op, err)
	}
	return sub, nil
}

// GetSubscription returns the tenant's live subscription. A tenant with
// none (pay-as-you-go, or only canceled ones) is ErrNoSubscription; an
// unknown tenant is ErrTenantNotFound.
func (s *Store) GetSubscription(ctx context.Context, tenantID string) (Subscription, error) {
	return getSubscription(ctx, s.pool, tenantID)
}

func getSubscription(ctx context.Context, q querier, tenantID string) (Subscription, error) {
	sub, err := liveSubscription(ctx, q, tenantID, false)
	if err != nil {
		return Subscription{}, classify("get subscription", err)
	}
	return sub, nil
}

func liveSubscription(ctx context.Context, q querier, tenantID string, forUpdate bool) (Subscription, error) {
	sql := `SELECT ` + subColumns + ` FROM subscriptions WHERE tenant_id = $1 AND status <> 'canceled'`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	sub, err := scanSub(q.QueryRow(ctx, sql, tenantID))
	if errors.Is(err, pgx.ErrNoRows) {
		if err := requireTenant(ctx, q, tenantID); err != nil {
			return Subscription{}, err
		}
		return Subscription{}, fmt.Errorf("tenant %q: %w", tenantID, ErrNoSubscription)
	}
	return sub, err
}

// PlanChange is the outcome of SetPlan.
type PlanChange struct {
	From         string // the plan before the change
	Subscription Subscription
	// Changed is false when the tenant was already on the plan: nothing
	// was written, not even last_tier_switch_at or an audit row.
	Changed bool
}

// SetPlan moves the tenant's live subscription to planSlug, keeping its
// period, stamping last_tier_switch_at and writing an audit row. The row is
// locked while it changes, so concurrent changes apply one after the other
// and each sees the plan the previous one left (From). No live
// subscription is ErrNoSubscription.
func (s *Store) SetPlan(ctx context.Context, tenantID, planSlug, actor string) (PlanChange, error) {
	const op = "set plan"
	var pc PlanChange
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := liveSubscription(ctx, tx, tenantID, true)
		if err != nil {
			return err
		}
		pc = PlanChange{From: cur.Plan, Subscription: cur}
		if cur.Plan == planSlug {
			return nil
		}
		if err := requireActivePlan(ctx, tx, planSlug); err != nil {
			return err
		}
		if pc.Subscription, err = scanSub(tx.QueryRow(ctx, `
			UPDATE subscriptions SET plan_slug = $2, last_tier_switch_at = now(), updated_at = now()
			WHERE id = $1 RETURNING `+subColumns, cur.ID, planSlug)); err != nil {
			return err
		}
		pc.Changed = true
		return writeAudit(ctx, tx, actor, ActionSetPlan, tenantID, map[string]any{
			"subscription_id": cur.ID, "from": cur.Plan, "to": planSlug,
		})
	})
	if err != nil {
		return PlanChange{}, classify(op, err)
	}
	return pc, nil
}
