package account

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
)

// Where a usage answer's numbers come from.
const (
	sourceRedis    = "redis"    // the live counters the proxy enforces
	sourcePostgres = "postgres" // the usage the proxies last flushed
)

type meterJSON struct {
	Feature   string `json:"feature"`
	Kind      string `json:"kind"`
	Used      int64  `json:"used"`
	Limit     *int64 `json:"limit"`     // null: unlimited (or no plan)
	Remaining *int64 `json:"remaining"` // null when Limit is
	Warning   bool   `json:"warning"`
}

type flagJSON struct {
	Feature string `json:"feature"`
	Kind    string `json:"kind"`
	Enabled bool   `json:"enabled"`
}

type usageJSON struct {
	Plan        *string `json:"plan"` // the enforced plan: default_plan without a live subscription
	PeriodStart string  `json:"period_start"`
	PeriodEnd   string  `json:"period_end"`
	Source      string  `json:"source"`
	Features    []any   `json:"features"` // meterJSON and flagJSON, in configuration order
}

// terms are a tenant's limits and flags for one period, whichever store
// they came from.
type terms struct {
	plan       string // the enforced plan's slug
	start, end time.Time
	source     string
	used       map[string]int64
	limit      func(name string) (int64, bool) // false: no limit known (null)
	enabled    func(name string) bool
}

// usageReport answers with the tenant's usage of every configured feature
// against its limits: from Redis when it answers, else from PostgreSQL.
func (a *API) usageReport(w http.ResponseWriter, r *http.Request, p principal) {
	t, ok := a.liveTerms(r.Context(), p.tenant.ID)
	if !ok {
		var e *apiError
		if t, e = a.flushedTerms(r, p.tenant); e != nil {
			writeAPIError(w, e)
			return
		}
	}
	out := usageJSON{PeriodStart: rfc3339(t.start), PeriodEnd: rfc3339(t.end), Source: t.source,
		Features: make([]any, 0, len(a.cfg.Features))}
	if t.plan != "" {
		out.Plan = &t.plan
	}
	for _, f := range a.cfg.Features {
		if f == nil {
			continue
		}
		if f.Kind == config.Flag {
			out.Features = append(out.Features, flagJSON{Feature: f.Name, Kind: f.Kind.String(), Enabled: t.enabled(f.Name)})
			continue
		}
		m := meterJSON{Feature: f.Name, Kind: f.Kind.String(), Used: t.used[f.Name]}
		if lim, ok := t.limit(f.Name); ok && lim > config.Unlimited {
			rem := max(0, lim-m.Used)
			m.Limit, m.Remaining = &lim, &rem
			m.Warning = f.Warning > 0 && float64(m.Used)+1e-9 >= f.Warning*float64(lim)
		}
		out.Features = append(out.Features, m)
	}
	writeJSON(w, http.StatusOK, out)
}

// liveTerms reads the entitlement and the counters the proxy enforces. It
// reports false when Redis is not configured, does not answer or does not
// know the tenant, so the caller falls back to PostgreSQL.
func (a *API) liveTerms(ctx context.Context, tenantID string) (terms, bool) {
	if a.usage == nil {
		return terms{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, usageTimeout)
	defer cancel()
	ent, found, err := a.usage.GetEntitlement(ctx, tenantID)
	if err != nil || !found {
		return terms{}, false
	}
	anchor, _ := strconv.ParseInt(ent["anchor"], 10, 64)
	t := terms{plan: ent["plan"], source: sourceRedis, used: map[string]int64{}}
	t.start, t.end = quota.Period(anchor, a.now())
	for _, f := range a.cfg.Features {
		if f == nil || f.Kind == config.Flag {
			continue
		}
		n, err := a.usage.Usage(ctx, tenantID, f)
		if err != nil {
			// One unreadable counter makes the whole answer PostgreSQL's:
			// a mix of two sources would be consistent with neither.
			return terms{}, false
		}
		t.used[f.Name] = n
	}
	t.limit = func(name string) (int64, bool) {
		v, err := strconv.ParseInt(ent["l:"+name], 10, 64)
		return v, err == nil
	}
	t.enabled = func(name string) bool { return ent["f:"+name] == "1" }
	return t, true
}

// flushedTerms reads the plan, the period and the usage flushed to
// PostgreSQL: the period's metered counters and the gauges. The period is
// the one the proxy counts in and the flush stores rows under: monthly from
// the live subscription's anchor (quota.Anchor, as the admin API writes it
// through), or calendar months on the default plan without a live
// subscription.
func (a *API) flushedTerms(r *http.Request, tn billing.Tenant) (terms, *apiError) {
	ctx, cancel := a.storeCtx(r)
	defer cancel()
	t := terms{source: sourcePostgres}
	// Without a live subscription (never subscribed, or canceled) the
	// proxy enforces the default plan on calendar months, as the admin API
	// writes it through: the answer shows what is enforced.
	var anchor int64
	t.plan = a.cfg.DefaultPlan
	sub, err := a.store.GetSubscription(ctx, tn.ID)
	switch {
	case err == nil:
		t.plan, anchor = sub.Plan, quota.Anchor(sub.PeriodStart, sub.PeriodEnd)
	case errors.Is(err, billing.ErrTenantNotFound):
		return t, errTenantNotFound
	case !errors.Is(err, billing.ErrNoSubscription):
		return t, a.storeError("get subscription", err)
	}
	plan, err := a.store.GetPlan(ctx, t.plan)
	if err != nil {
		return t, a.storeError("get plan", err)
	}
	t.start, t.end = quota.Period(anchor, a.now())
	// The flush stores metered counters per period and gauges, which live
	// across periods, without one: each feature is read from its kind's.
	metered, err := a.store.UsageFor(ctx, tn.ID, t.start)
	if err != nil {
		return t, a.storeError("usage for", err)
	}
	gauges, err := a.store.GaugesFor(ctx, tn.ID)
	if err != nil {
		return t, a.storeError("gauges for", err)
	}
	t.used = make(map[string]int64, len(a.cfg.Features))
	for _, f := range a.cfg.Features {
		switch {
		case f == nil:
		case f.Kind == config.Metered:
			t.used[f.Name] = metered[f.Name]
		case f.Kind == config.Gauge:
			t.used[f.Name] = gauges[f.Name]
		}
	}
	t.limit = func(name string) (int64, bool) {
		v, ok := plan.Limits[name]
		return v, ok
	}
	t.enabled = func(name string) bool { return plan.Flags[name] }
	return t, nil
}
