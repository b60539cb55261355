package admin

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
)

// planRefresh is a write-through of every tenant entitled to one of a set
// of plans, which Run works through in id order (see RefreshPlans).
type planRefresh struct {
	plans []string
	// payg: the default plan is among plans, so tenants without a live
	// subscription are entitled to it too.
	payg  bool
	after string // the last tenant done; the next page starts after it
	fails int    // failed attempts at the tenant after after
	done  int    // tenants written through so far
}

const (
	// refreshPage is how many tenant ids one query of a refresh reads.
	refreshPage = 500
	// refreshTries is how many ticks a refresh retries a failing tenant
	// before it hands the tenant to the retry queue and moves on, so a
	// tenant that keeps failing cannot hold up the others.
	refreshTries = 3
)

// RefreshPlans has Run write through every tenant entitled to one of
// plans: the tenants whose live subscription is on one and, when the
// default plan is one of them, the tenants without a live subscription.
// An entitlement in Redis is a copy of its plan's terms, so when a plan's
// limits or flags change in PostgreSQL (SyncPlans at start updating a plan
// from the file, or UpdatePlan) nothing else would rewrite its tenants.
//
// It returns at once: Run works through the tenants in pages, in id order,
// between its retries, so any number of tenants neither holds up the start
// nor starves the retries. A tenant whose write-through fails is tried
// again on the next ticks and, after a few, left to the retry queue, so a
// Redis outage pauses the refresh rather than losing it. A refresh under
// way starts over with the union of the plans. The refresh lives in this
// process: one stopped before it finished leaves the remaining tenants as
// they were until their next write-through.
func (a *API) RefreshPlans(plans ...string) {
	if len(plans) == 0 {
		return
	}
	a.mu.Lock()
	all := slices.Clone(plans)
	if a.refresh != nil {
		all = append(all, a.refresh.plans...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	a.refresh = &planRefresh{plans: all, payg: slices.Contains(all, a.cfg.DefaultPlan)}
	a.refreshGen++
	a.mu.Unlock()
	a.log.Info("writing through the tenants of changed plans", zap.Strings("plans", all))
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// refreshPlans works on the refresh under way for about budget. Progress is
// kept per tenant, so the next call goes on where this one stopped.
func (a *API) refreshPlans(ctx context.Context, budget time.Duration) {
	deadline := time.Now().Add(budget)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		a.mu.Lock()
		rf, gen := a.refresh, a.refreshGen
		var cur planRefresh
		if rf != nil {
			cur = *rf
		}
		a.mu.Unlock()
		if rf == nil {
			return
		}
		ids, err := a.db.TenantsOnPlans(ctx, cur.plans, cur.payg, cur.after, refreshPage)
		if err != nil {
			a.log.Warn("plan write-through: listing tenants failed; retrying", zap.Strings("plans", cur.plans), zap.Error(err))
			return
		}
		if len(ids) == 0 {
			a.mu.Lock()
			if a.refreshGen == gen {
				a.refresh = nil
			}
			a.mu.Unlock()
			a.log.Info("tenants of changed plans written through", zap.Strings("plans", cur.plans), zap.Int("tenants", cur.done))
			return
		}
		for _, id := range ids {
			if ctx.Err() != nil || time.Now().After(deadline) {
				return
			}
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := a.sync(sctx, id, false)
			cancel()
			if !a.refreshed(gen, id, err) {
				return
			}
		}
	}
}

// refreshed records the outcome of the refresh's write-through of id and
// reports whether the refresh goes on now: not when the tenant is to be
// tried again later, nor when a newer RefreshPlans replaced the refresh
// (the next call starts that one).
func (a *API) refreshed(gen uint64, id string, err error) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	rf := a.refresh
	if rf == nil || a.refreshGen != gen {
		return false
	}
	if err != nil && !errors.Is(err, billing.ErrTenantNotFound) {
		rf.fails++
		if rf.fails < refreshTries {
			a.log.Warn("plan write-through failed; retrying", zap.String("tenant", id), zap.Error(err))
			return false
		}
		a.log.Warn("plan write-through keeps failing; leaving the tenant to the retry queue",
			zap.String("tenant", id), zap.Error(err))
		a.seq++
		a.pending[id] = a.seq
	}
	rf.after, rf.fails = id, 0
	if err == nil {
		rf.done++
	}
	return true
}
