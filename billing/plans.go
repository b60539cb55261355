package billing

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/config"
)

// Plan is a plan as stored: limits and flags by feature name.
type Plan struct {
	Slug       string
	Name       string
	PriceMinor int64
	Currency   string
	Limits     map[string]int64 // config.Unlimited (-1) for no cap
	Flags      map[string]bool
	// Active plans can be chosen for new subscriptions and plan changes;
	// tenants already on an inactive plan keep it.
	Active bool
	// EditedAt is when an admin last edited the plan; nil while the
	// configuration file owns it.
	EditedAt  *time.Time
	UpdatedAt time.Time
}

const planColumns = `slug, name, price_minor, currency, limits, flags, active, edited_at, updated_at`

func scanPlan(r pgx.Row) (Plan, error) {
	var p Plan
	err := r.Scan(&p.Slug, &p.Name, &p.PriceMinor, &p.Currency, &p.Limits, &p.Flags, &p.Active, &p.EditedAt, &p.UpdatedAt)
	return p, err
}

var (
	slugRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
)

// PlanFromConfig turns a configured plan into its stored form: limits of
// the metered and gauge features, flags of the flag features.
func PlanFromConfig(p *config.Plan, features []*config.Feature) (Plan, error) {
	if p == nil {
		return Plan{}, invalid("plan from config", "nil plan")
	}
	out := Plan{Slug: p.Slug, Name: p.Name, PriceMinor: p.PriceMinor, Currency: p.Currency,
		Limits: map[string]int64{}, Flags: map[string]bool{}, Active: true}
	for _, f := range features {
		if f == nil {
			continue
		}
		switch f.Kind {
		case config.Metered, config.Gauge:
			if f.Index < 0 || f.Index >= len(p.Limits) {
				return Plan{}, invalid("plan from config", "plan %s has no limit for %s", p.Slug, f.Name)
			}
			out.Limits[f.Name] = p.Limits[f.Index]
		case config.Flag:
			out.Flags[f.Name] = f.Index >= 0 && f.Index < len(p.Flags) && p.Flags[f.Index]
		}
	}
	return out, nil
}

// SyncResult says what SyncPlans did to each configured plan.
type SyncResult struct {
	Inserted []string // new in the database
	// Updated: configuration-owned and changed in the file. Their tenants'
	// entitlements in Redis still hold the old terms until written
	// through (admin.API.RefreshPlans).
	Updated []string
	Kept    []string // edited by an admin: the database wins
}

// SyncPlans writes the configured plans to the database. A plan the
// database lacks is inserted. A plan no admin has edited (edited_at is
// null) follows the file: a changed price or limit in the configuration
// reaches the database on the next start. A plan an admin has edited
// (UpdatePlan) is kept as the admin left it: the edit is deliberate and
// newer than the file. Plans in the database but not in the file are left
// alone, since subscriptions may still reference them.
func (s *Store) SyncPlans(ctx context.Context, plans []*config.Plan, features []*config.Feature) (SyncResult, error) {
	const op = "sync plans"
	want := make([]Plan, 0, len(plans))
	for _, cp := range plans {
		p, err := PlanFromConfig(cp, features)
		if err != nil {
			return SyncResult{}, fmt.Errorf("%s: %w", op, err)
		}
		if err := validatePlan(op, p); err != nil {
			return SyncResult{}, err
		}
		want = append(want, p)
	}
	var res SyncResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Replicas starting together would otherwise race on the same
		// inserts; syncs are rare, so serialising them whole is cheap.
		if _, err := tx.Exec(ctx, `LOCK TABLE plans IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return err
		}
		for _, p := range want {
			cur, err := scanPlan(tx.QueryRow(ctx, `SELECT `+planColumns+` FROM plans WHERE slug = $1`, p.Slug))
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				if _, err := tx.Exec(ctx, `INSERT INTO plans (slug, name, price_minor, currency, limits, flags)
					VALUES ($1, $2, $3, $4, $5, $6)`, p.Slug, p.Name, p.PriceMinor, p.Currency, p.Limits, p.Flags); err != nil {
					return err
				}
				res.Inserted = append(res.Inserted, p.Slug)
			case err != nil:
				return err
			case cur.EditedAt != nil:
				res.Kept = append(res.Kept, p.Slug)
			case !samePlanTerms(cur, p):
				if _, err := tx.Exec(ctx, `UPDATE plans SET name = $2, price_minor = $3, currency = $4, limits = $5,
					flags = $6, active = true, updated_at = now() WHERE slug = $1`,
					p.Slug, p.Name, p.PriceMinor, p.Currency, p.Limits, p.Flags); err != nil {
					return err
				}
				res.Updated = append(res.Updated, p.Slug)
			}
		}
		return nil
	})
	if err != nil {
		return SyncResult{}, classify(op, err)
	}
	return res, nil
}

func samePlanTerms(a, b Plan) bool {
	return a.Name == b.Name && a.PriceMinor == b.PriceMinor && a.Currency == b.Currency && a.Active == b.Active &&
		mapsEqual(a.Limits, b.Limits) && mapsEqual(a.Flags, b.Flags)
}

func mapsEqual[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func validatePlan(op string, p Plan) error {
	switch {
	case !slugRE.MatchString(p.Slug):
		return invalid(op, "plan slug %q must match %s", p.Slug, slugRE)
	case p.Name == "" || utf8.RuneCountInString(p.Name) > maxNameLen:
		return invalid(op, "plan %s: name must be 1 to %d characters", p.Slug, maxNameLen)
	case p.PriceMinor < 0:
		return invalid(op, "plan %s: negative price", p.Slug)
	case !currencyRE.MatchString(p.Currency):
		return invalid(op, "plan %s: currency %q is not an upper-case ISO 4217 code", p.Slug, p.Currency)
	}
	for name, v := range p.Limits {
		if !slugRE.MatchString(name) || v < config.Unlimited {
			return invalid(op, "plan %s: limit %s=%d: want a feature name and a limit >= -1", p.Slug, name, v)
		}
	}
	for name := range p.Flags {
		if !slugRE.MatchString(name) {
			return invalid(op, "plan %s: flag name %q", p.Slug, name)
		}
	}
	return nil
}

// GetPlan returns the plan with slug, or ErrPlanNotFound.
func (s *Store) GetPlan(ctx context.Context, slug string) (Plan, error) {
	return getPlan(ctx, s.pool, slug)
}

func getPlan(ctx context.Context, q querier, slug string) (Plan, error) {
	p, err := scanPlan(q.QueryRow(ctx, `SELECT `+planColumns+` FROM plans WHERE slug = $1`, slug))
	if errors.Is(err, pgx.ErrNoRows) {
		return Plan{}, fmt.Errorf("get plan %q: %w", slug, ErrPlanNotFound)
	}
	if err != nil {
		return Plan{}, classify(fmt.Sprintf("get plan %q", slug), err)
	}
	return p, nil
}

// ListPlans returns the plans by price then slug; activeOnly drops the
// plans no longer offered.
func (s *Store) ListPlans(ctx context.Context, activeOnly bool) ([]Plan, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+planColumns+` FROM plans WHERE active OR NOT $1 ORDER BY price_minor, slug`, activeOnly)
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Plan, error) { return scanPlan(r) })
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	return out, nil
}

// PlanUpdate is an admin's edit of a plan; nil fields are kept. Limits and
// Flags are merged into the stored ones by feature name.
type PlanUpdate struct {
	Name       *string
	PriceMinor *int64
	Currency   *string
	Limits     map[string]int64
	Flags      map[string]bool
	Active     *bool
}

// UpdatePlan applies an admin's edit and marks the plan admin-owned, so
// later SyncPlans calls keep it (see SyncPlans). It writes an audit row.
// The proxies' entitlements are copies of a plan's terms: a caller must
// have the plan's tenants written through (admin.API.RefreshPlans) for the
// edit to be enforced.
func (s *Store) UpdatePlan(ctx context.Context, slug string, u PlanUpdate, actor string) (Plan, error) {
	const op = "update plan"
	var out Plan
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		p, err := scanPlan(tx.QueryRow(ctx, `SELECT `+planColumns+` FROM plans WHERE slug = $1 FOR UPDATE`, slug))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%q: %w", slug, ErrPlanNotFound)
		}
		if err != nil {
			return err
		}
		if u.Name != nil {
			p.Name = *u.Name
		}
		if u.PriceMinor != nil {
			p.PriceMinor = *u.PriceMinor
		}
		if u.Currency != nil {
			p.Currency = *u.Currency
		}
		if u.Active != nil {
			p.Active = *u.Active
		}
		for k, v := range u.Limits {
			p.Limits[k] = v
		}
		for k, v := range u.Flags {
			p.Flags[k] = v
		}
		if err := validatePlan(op, p); err != nil {
			return err
		}
		out, err = scanPlan(tx.QueryRow(ctx, `UPDATE plans SET name = $2, price_minor = $3, currency = $4, limits = $5,
			flags = $6, active = $7, edited_at = now(), updated_at = now() WHERE slug = $1 RETURNING `+planColumns,
			slug, p.Name, p.PriceMinor, p.Currency, p.Limits, p.Flags, p.Active))
		if err != nil {
			return err
		}
		return writeAudit(ctx, tx, actor, ActionPlanUpdate, "", map[string]any{"plan": slug, "update": planUpdateDetail(u)})
	})
	if err != nil {
		return Plan{}, classify(op, err)
	}
	return out, nil
}

// planUpdateDetail records only the fields the admin set.
func planUpdateDetail(u PlanUpdate) map[string]any {
	d := map[string]any{}
	if u.Name != nil {
		d["name"] = *u.Name
	}
	if u.PriceMinor != nil {
		d["price_minor"] = *u.PriceMinor
	}
	if u.Currency != nil {
		d["currency"] = *u.Currency
	}
	if u.Active != nil {
		d["active"] = *u.Active
	}
	if len(u.Limits) > 0 {
		d["limits"] = u.Limits
	}
	if len(u.Flags) > 0 {
		d["flags"] = u.Flags
	}
	return d
}

// requireActivePlan checks a plan can be chosen, and holds a share lock on
// it so an admin cannot deactivate it before the caller commits.
func requireActivePlan(ctx context.Context, q querier, slug string) error {
	var active bool
	err := q.QueryRow(ctx, `SELECT active FROM plans WHERE slug = $1 FOR SHARE`, slug).Scan(&active)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%q: %w", slug, ErrPlanNotFound)
	}
	if err != nil {
		return err
	}
	if !active {
		return fmt.Errorf("%q: %w", slug, ErrPlanInactive)
	}
	return nil
}
