package billing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Tenant is a customer of the SaaS in front of which Tollgate runs.
type Tenant struct {
	ID   string
	Name string
	// Plan is the slug of the tenant's live subscription, "" when it has
	// none (pay-as-you-go).
	Plan      string
	CreatedAt time.Time
}

const maxNameLen = 200

// tenantSelect reads a Tenant with its live plan; the partial unique index
// on subscriptions guarantees at most one joined row.
const tenantSelect = `
	SELECT t.id, t.name, COALESCE(s.plan_slug, ''), t.created_at
	FROM tenants t
	LEFT JOIN subscriptions s ON s.tenant_id = t.id AND s.status <> 'canceled'`

func scanTenant(r pgx.Row) (Tenant, error) {
	var t Tenant
	err := r.Scan(&t.ID, &t.Name, &t.Plan, &t.CreatedAt)
	return t, err
}

func cleanName(op, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > maxNameLen || !utf8.ValidString(name) {
		return "", invalid(op, "name must be 1 to %d characters", maxNameLen)
	}
	return name, nil
}

// CreateTenant creates a tenant, its first API key and, unless planSlug is
// empty (a pay-as-you-go tenant), a manual subscription to that plan for
// the current calendar month, with an audit row — all in one transaction.
// The returned key is the only time it is visible: only its SHA-256 is
// stored. The actor is taken from ctx (WithActor).
func (s *Store) CreateTenant(ctx context.Context, name, planSlug string) (Tenant, string, error) {
	const op = "create tenant"
	name, err := cleanName(op, name)
	if err != nil {
		return Tenant{}, "", err
	}
	id, err := newID("ten_")
	if err != nil {
		return Tenant{}, "", fmt.Errorf("%s: %w", op, err)
	}
	var t Tenant
	var key string
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if planSlug != "" {
			if err := requireActivePlan(ctx, tx, planSlug); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING created_at`,
			id, name).Scan(&t.CreatedAt); err != nil {
			return err
		}
		t.ID, t.Name, t.Plan = id, name, planSlug
		k, keyID, err := insertKey(ctx, tx, id)
		if err != nil {
			return err
		}
		key = k
		detail := map[string]any{"name": name, "api_key_id": keyID}
		if planSlug != "" {
			start, end := MonthPeriod(s.now())
			sub, err := insertSubscription(ctx, tx, NewSubscription{
				TenantID: id, Plan: planSlug, Status: StatusActive, Provider: ProviderManual,
				PeriodStart: start, PeriodEnd: end,
			})
			if err != nil {
				return err
			}
			detail["plan"] = planSlug
			detail["subscription_id"] = sub.ID
		}
		return writeAudit(ctx, tx, actorFrom(ctx), ActionTenantCreate, id, detail)
	})
	if err != nil {
		return Tenant{}, "", classify(op, err)
	}
	return t, key, nil
}

// GetTenant returns the tenant with id, or ErrTenantNotFound.
func (s *Store) GetTenant(ctx context.Context, id string) (Tenant, error) {
	t, err := scanTenant(s.pool.QueryRow(ctx, tenantSelect+` WHERE t.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, fmt.Errorf("get tenant %q: %w", id, ErrTenantNotFound)
	}
	if err != nil {
		return Tenant{}, classify(fmt.Sprintf("get tenant %q", id), err)
	}
	return t, nil
}

// ListTenants returns up to limit tenants (default 50, at most 500) with
// ids greater than after, in id order: pass the last id of a page to get
// the next one.
func (s *Store) ListTenants(ctx context.Context, limit int, after string) ([]Tenant, error) {
	rows, err := s.pool.Query(ctx, tenantSelect+` WHERE t.id > $1 ORDER BY t.id LIMIT $2`,
		after, clampLimit(limit, 50, 500))
	if err != nil {
		return nil, classify("list tenants", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, classify("list tenants", err)
	}
	return out, nil
}

// requireTenant locks nothing; it only turns a missing tenant into
// ErrTenantNotFound before work that would otherwise look like "none".
func requireTenant(ctx context.Context, q querier, id string) error {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)`, id).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("tenant %q: %w", id, ErrTenantNotFound)
	}
	return nil
}
