package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
)

// SyncTenant writes the tenant's state from PostgreSQL to Redis: its
// entitlements and its API key hashes (working keys set, revoked ones
// deleted), then tells every proxy to drop what it cached about the tenant.
// It is idempotent; an unknown tenant is billing.ErrTenantNotFound.
func (a *API) SyncTenant(ctx context.Context, id string) error {
	return a.sync(ctx, id, true)
}

// sync is SyncTenant; invalidate false skips the tenant-wide invalidation
// unless a revoked key was still in Redis, so a plan change does not make
// every proxy look the tenant's keys up again. It reads PostgreSQL and
// writes Redis under the tenant's write-through lock (withTenant).
func (a *API) sync(ctx context.Context, id string, invalidate bool) error {
	err := a.withTenant(ctx, id, func(ctx context.Context, l *billing.TenantLock) error {
		ent, err := a.entitlement(ctx, l, id)
		if err != nil {
			return err
		}
		live, revoked, err := l.KeyHashes(ctx)
		if err != nil {
			return err
		}
		// Entitlements first: a key must not resolve to a tenant the proxy
		// does not know yet.
		if err := a.ents.PutEntitlement(ctx, ent); err != nil {
			return err
		}
		var dels []*redis.IntCmd
		if len(live)+len(revoked) > 0 {
			_, err = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, h := range live {
					p.Set(ctx, apiKeyKey(h), id, 0)
				}
				for _, h := range revoked {
					dels = append(dels, p.Del(ctx, apiKeyKey(h)))
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("api keys: %w", err)
			}
		}
		for _, d := range dels {
			invalidate = invalidate || d.Val() > 0
		}
		if invalidate {
			return tenant.Invalidate(ctx, a.rdb, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sync tenant %s: %w", id, err)
	}
	return nil
}

// apiKeyKey is the proxy's key lookup: tg:apikey:<sha256 hex> → tenant id.
func apiKeyKey(hash string) string { return "tg:apikey:" + hash }

// entitlement builds the tenant's quota entitlement from its live
// subscription and that plan's row, read under the tenant's lock l. A tenant without one is pay-as-you-go,
// whether it never subscribed or its subscription was canceled: it gets the
// default plan's row, active, on calendar months, so it is known to the
// proxy rather than rejected as unknown, and a canceled plan's limits do
// not outlive it (the proxy enforces limits, never the status). The
// restorer (billing.Store.RestoreTenants) builds the same.
func (a *API) entitlement(ctx context.Context, l *billing.TenantLock, id string) (quota.Entitlement, error) {
	e := quota.Entitlement{TenantID: id, Status: billing.StatusActive}
	slug := a.cfg.DefaultPlan
	sub, err := l.Subscription(ctx)
	switch {
	case err == nil:
		slug, e.Status, e.Anchor = sub.Plan, sub.Status, quota.Anchor(sub.PeriodStart, sub.PeriodEnd)
	case !errors.Is(err, billing.ErrNoSubscription):
		return quota.Entitlement{}, fmt.Errorf("entitlement %s: %w", id, err)
	}
	p, err := l.Plan(ctx, slug)
	if err != nil {
		return quota.Entitlement{}, fmt.Errorf("entitlement %s: %w", id, err)
	}
	e.Plan = a.configPlan(p)
	return e, nil
}

// configPlan turns a stored plan into the indexed form the quota store
// reads. A feature the row lacks (configured after an admin edited the plan)
// takes the configured plan's value, or is closed (limit 0, flag off) when
// the file has no such plan.
func (a *API) configPlan(p billing.Plan) *config.Plan {
	n := len(a.cfg.Features)
	cp := &config.Plan{Slug: p.Slug, Name: p.Name, PriceMinor: p.PriceMinor, Currency: p.Currency,
		Limits: make([]int64, n), Flags: make([]bool, n)}
	file := a.cfg.PlanBySlug[p.Slug]
	for _, f := range a.cfg.Features {
		if f == nil || f.Index < 0 || f.Index >= n {
			continue
		}
		switch f.Kind {
		case config.Metered, config.Gauge:
			v, ok := p.Limits[f.Name]
			if !ok {
				if file != nil && f.Index < len(file.Limits) {
					v = file.Limits[f.Index]
				}
				a.log.Warn("plan row has no limit for a configured feature", zap.String("plan", p.Slug),
					zap.String("feature", f.Name), zap.Int64("using", v))
			}
			cp.Limits[f.Index] = v
		case config.Flag:
			v, ok := p.Flags[f.Name]
			if !ok && file != nil && f.Index < len(file.Flags) {
				v = file.Flags[f.Index]
			}
			cp.Flags[f.Index] = v
		}
	}
	return cp
}

// queue marks a tenant for Run to write through again. Each mark gets a
// new sequence number, so a retry that read PostgreSQL before a newer
// failed change cannot unqueue that change.
func (a *API) queue(id string) {
	a.mu.Lock()
	a.seq++
	a.pending[id] = a.seq
	a.mu.Unlock()
}

// retryInterval is how often Run retries failed write-throughs.
const retryInterval = time.Second

// Run retries, every second, the write-throughs that failed because Redis
// (or PostgreSQL) was unreachable, until ctx ends. A tenant that no longer
// exists is dropped; any other failure keeps it queued. Between retries it
// works through the tenants of plans passed to RefreshPlans, for up to a
// second at a time.
func (a *API) Run(ctx context.Context) {
	t := time.NewTicker(retryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.retryPending(ctx)
		case <-a.wake:
		}
		a.refreshPlans(ctx, retryInterval)
	}
}

func (a *API) retryPending(ctx context.Context) {
	a.mu.Lock()
	marks := make(map[string]uint64, len(a.pending))
	for id, seq := range a.pending {
		marks[id] = seq
	}
	a.mu.Unlock()
	for id, seq := range marks {
		if ctx.Err() != nil {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.SyncTenant(sctx, id)
		cancel()
		switch {
		case err == nil || errors.Is(err, billing.ErrTenantNotFound):
			a.mu.Lock()
			if a.pending[id] == seq {
				delete(a.pending, id)
			}
			a.mu.Unlock()
			if err == nil {
				a.log.Info("tenant written through to redis after an earlier failure", zap.String("tenant", id))
			}
		default:
			a.log.Warn("write-through retry failed", zap.String("tenant", id), zap.Error(err))
		}
	}
}
