package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier is what a pool and a transaction have in common, so helpers can
// run inside a caller's transaction or on their own.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// AuditEntry is one row of the audit log.
type AuditEntry struct {
	ID        int64
	Actor     string
	Action    string // e.g. "tenant.create", "subscription.set_plan"
	TenantID  string // "" when the action concerns no tenant
	Detail    map[string]any
	CreatedAt time.Time
}

// Audit actions written by this package.
const (
	ActionTenantCreate       = "tenant.create"
	ActionKeyIssue           = "api_key.issue"
	ActionKeyRevoke          = "api_key.revoke"
	ActionPlanUpdate         = "plan.update"
	ActionSubscriptionCreate = "subscription.create"
	ActionSetPlan            = "subscription.set_plan"
)

func writeAudit(ctx context.Context, q querier, actor, action, tenantID string, detail map[string]any) error {
	if detail == nil {
		detail = map[string]any{}
	}
	b, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	var tid *string
	if tenantID != "" {
		tid = &tenantID
	}
	if _, err := q.Exec(ctx, `INSERT INTO audit_log (actor, action, tenant_id, detail) VALUES ($1, $2, $3, $4)`,
		actor, action, tid, b); err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}

// RecordAudit appends an entry for an action taken outside this package
// (a webhook, an admin action on Redis only). ID and CreatedAt are ignored.
func (s *Store) RecordAudit(ctx context.Context, e AuditEntry) error {
	const op = "record audit"
	if e.Actor == "" || e.Action == "" {
		return invalid(op, "actor and action are required")
	}
	return writeAudit(ctx, s.pool, e.Actor, e.Action, e.TenantID, e.Detail)
}

// AuditQuery selects audit entries, newest first.
type AuditQuery struct {
	TenantID string // "" for every tenant
	Limit    int    // default 50, at most 500
	BeforeID int64  // keyset pagination: only entries with a smaller id; 0 for the newest
}

// AuditEntries returns audit entries newest first.
func (s *Store) AuditEntries(ctx context.Context, q AuditQuery) ([]AuditEntry, error) {
	const op = "audit entries"
	limit := clampLimit(q.Limit, 50, 500)
	rows, err := s.pool.Query(ctx, `
		SELECT id, actor, action, COALESCE(tenant_id, ''), detail, created_at
		FROM audit_log
		WHERE ($1 = '' OR tenant_id = $1) AND ($2 = 0 OR id < $2)
		ORDER BY id DESC
		LIMIT $3`, q.TenantID, q.BeforeID, limit)
	if err != nil {
		return nil, classify(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := r.Scan(&e.ID, &e.Actor, &e.Action, &e.TenantID, &e.Detail, &e.CreatedAt)
		return e, err
	})
	if err != nil {
		return nil, classify(op, err)
	}
	return out, nil
}

// clampLimit turns a caller's page size into one the queries accept.
func clampLimit(n, def, maxN int) int {
	if n <= 0 {
		return def
	}
	return min(n, maxN)
}
