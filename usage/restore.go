package usage

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
)

// TenantState is what PostgreSQL knows of a tenant's entitlement.
type TenantState struct {
	TenantID string
	// PlanSlug is the plan the tenant is entitled to: its live
	// subscription's, or the default plan's for a tenant without one
	// (pay-as-you-go, whether it never subscribed or canceled). "" means
	// the configuration's default plan as the file has it.
	PlanSlug string
	PlanName string
	Status   string
	// Anchor is the live subscription's period start (unix seconds), the
	// anchor of its monthly periods; 0 for calendar months: a period of
	// exactly one calendar month, and a tenant without a live
	// subscription.
	Anchor int64
	Limits map[string]int64 // the stored plan's limits by feature
	Flags  map[string]bool  // the stored plan's flags by feature
}

// KeyHash is a non-revoked API key: its SHA-256 (hex) and its tenant.
type KeyHash struct {
	Hash     string
	TenantID string
}

// RestoreSource is what the Restorer reads from the billing store
// (billing.Store implements it).
type RestoreSource interface {
	// LockRestore takes a lock that keeps other restorers out (a
	// PostgreSQL advisory lock: it outlives a Redis wipe). ok is false
	// when another process holds it.
	LockRestore(ctx context.Context) (unlock func(), ok bool, err error)
	// BeginEpoch returns the epoch to restore under: the last one if its
	// restore never completed (a retry), a new one otherwise. From then
	// on it is the current epoch for ApplySnapshots.
	BeginEpoch(ctx context.Context) (int64, error)
	// CompleteEpoch records that Redis carries the epoch.
	CompleteEpoch(ctx context.Context, epoch int64) error
	// CurrentEpoch is the database's latest epoch (0 before the first).
	CurrentEpoch(ctx context.Context) (int64, error)
	// RestoreTenants returns every tenant's entitlement, a tenant without
	// a live subscription on defaultPlan (active, anchor 0).
	RestoreTenants(ctx context.Context, defaultPlan string) ([]TenantState, error)
	RestoreKeys(ctx context.Context) ([]KeyHash, error)
	// RestoreUsage returns the metered counts of periods not ended at now
	// and every gauge.
	RestoreUsage(ctx context.Context, now time.Time) ([]Item, error)
}

var (
	//go:embed restore.lua
	restoreSrc    string
	restoreScript = redis.NewScript(restoreSrc)
)

// Restorer refills a fresh or wiped Redis from PostgreSQL: entitlements,
// API keys and this period's counts, then sets tg:epoch.
type Restorer struct {
	rdb      redis.UniversalClient
	src      RestoreSource
	quota    *quota.Store
	cfg      *config.Config
	epochKey string
	interval time.Duration
	now      func() time.Time
	log      *zap.Logger
	failing  bool
}

// RestorerOption configures a Restorer.
type RestorerOption func(*Restorer)

// WithRestorerLogger sets the logger; the default discards.
func WithRestorerLogger(l *zap.Logger) RestorerOption {
	return func(r *Restorer) {
		if l != nil {
			r.log = l
		}
	}
}

// WithCheckInterval sets how often Run checks for tg:epoch (default 1 s).
func WithCheckInterval(d time.Duration) RestorerOption {
	return func(r *Restorer) {
		if d > 0 {
			r.interval = d
		}
	}
}

// WithRestoreClock sets the clock that picks the periods to restore.
func WithRestoreClock(now func() time.Time) RestorerOption {
	return func(r *Restorer) {
		if now != nil {
			r.now = now
		}
	}
}

// NewRestorer returns a Restorer writing entitlements through qs (which
// must be built on rdb and cfg).
func NewRestorer(rdb redis.UniversalClient, src RestoreSource, qs *quota.Store, cfg *config.Config, opts ...RestorerOption) *Restorer {
	r := &Restorer{rdb: rdb, src: src, quota: qs, cfg: cfg, epochKey: EpochKey,
		interval: time.Second, now: time.Now, log: zap.NewNop()}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Run checks every interval that Redis carries an epoch and restores it
// when not, until ctx is done; it returns nil then.
func (r *Restorer) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		_, _, err := r.RestoreIfNeeded(ctx)
		switch {
		case err != nil && !r.failing && ctx.Err() == nil:
			r.log.Error("redis restore failed; retrying", zap.Error(err))
			r.failing = true
		case err == nil && r.failing:
			r.log.Info("redis restore recovered")
			r.failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RestoreIfNeeded restores Redis when it has no epoch and reports whether
// it did and under which epoch. It does nothing while another process
// holds the restore lock.
func (r *Restorer) RestoreIfNeeded(ctx context.Context) (bool, int64, error) {
	if has, err := r.hasEpoch(ctx); err != nil || has {
		return false, 0, err
	}
	unlock, ok, err := r.src.LockRestore(ctx)
	if err != nil || !ok {
		return false, 0, err
	}
	defer unlock()
	// Another restorer may have finished while we waited.
	if has, err := r.hasEpoch(ctx); err != nil || has {
		return false, 0, err
	}
	epoch, err := r.src.BeginEpoch(ctx)
	if err != nil {
		return false, 0, fmt.Errorf("restore: %w", err)
	}
	start := time.Now()
	n, err := r.restore(ctx, epoch)
	if err != nil {
		return false, epoch, fmt.Errorf("restore epoch %d: %w", epoch, err)
	}
	if err := r.rdb.Set(ctx, r.epochKey, epoch, 0).Err(); err != nil {
		return false, epoch, fmt.Errorf("restore epoch %d: set %s: %w", epoch, r.epochKey, err)
	}
	if err := r.src.CompleteEpoch(ctx, epoch); err != nil {
		// Redis is restored and flushers deliver; only the bookkeeping
		// is behind, and a later restore then reuses this epoch.
		r.log.Warn("restore: recording the epoch as complete failed", zap.Int64("epoch", epoch), zap.Error(err))
	}
	r.log.Info("redis restored from the billing store", zap.Int64("epoch", epoch),
		zap.Int("tenants", n.tenants), zap.Int("api_keys", n.keys), zap.Int("counters", n.counters),
		zap.Duration("took", time.Since(start)))
	return true, epoch, nil
}

// hasEpoch reports whether Redis carries the database's current epoch. A
// missing key is a fresh or wiped Redis; another value means this Redis was
// last restored from another database (or the database was reset), so its
// entitlements and keys cannot be trusted either: both need a restore.
// Counts are safe either way: the per-tenant restore marker keeps a Redis
// that still holds a tenant's live counters from getting them added twice.
func (r *Restorer) hasEpoch(ctx context.Context) (bool, error) {
	got, err := r.rdb.Get(ctx, r.epochKey).Int64()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("restore: read %s: %w", r.epochKey, err)
	}
	want, err := r.src.CurrentEpoch(ctx)
	if err != nil {
		return false, fmt.Errorf("restore: %w", err)
	}
	if got != want {
		r.log.Warn("redis carries another database's epoch; restoring from this one",
			zap.Int64("redis_epoch", got), zap.Int64("database_epoch", want))
		return false, nil
	}
	return true, nil
}

type restoreCounts struct{ tenants, keys, counters int }

// restore writes everything; each step is idempotent, so a failed restore
// is simply run again under the same epoch.
func (r *Restorer) restore(ctx context.Context, epoch int64) (restoreCounts, error) {
	var n restoreCounts
	tenants, err := r.src.RestoreTenants(ctx, r.cfg.DefaultPlan)
	if err != nil {
		return n, err
	}
	for _, t := range tenants {
		e, ok := r.entitlement(t)
		if !ok {
			r.log.Warn("restore: tenant has no plan to restore", zap.String("tenant", t.TenantID))
			continue
		}
		if err := r.quota.PutEntitlement(ctx, e); err != nil {
			return n, err
		}
		n.tenants++
	}

	keys, err := r.src.RestoreKeys(ctx)
	if err != nil {
		return n, err
	}
	const chunk = 500
	for i := 0; i < len(keys); i += chunk {
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys[i:min(i+chunk, len(keys))] {
				p.Set(ctx, apiKeyPrefix+k.Hash, k.TenantID, 0)
			}
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("restore api keys: %w", err)
		}
	}
	n.keys = len(keys)

	items, err := r.src.RestoreUsage(ctx, r.now())
	if err != nil {
		return n, err
	}
	n.counters, err = r.restoreCounts(ctx, epoch, items)
	return n, err
}

// entitlement builds the tenant's quota entitlement from its stored plan's
// terms, so an admin's edit of a plan in the database wins over the file (a
// feature the stored plan lacks takes the file's value), as the admin API's
// write-through does; a state without a plan gets the file's default plan.
func (r *Restorer) entitlement(t TenantState) (quota.Entitlement, bool) {
	if t.PlanSlug == "" {
		cp := r.cfg.PlanBySlug[r.cfg.DefaultPlan]
		if cp == nil {
			return quota.Entitlement{}, false
		}
		return quota.Entitlement{TenantID: t.TenantID, Plan: cp, Status: t.Status, Anchor: t.Anchor}, true
	}
	cp := r.cfg.PlanBySlug[t.PlanSlug]
	p := &config.Plan{Slug: t.PlanSlug, Name: t.PlanName,
		Limits: make([]int64, len(r.cfg.Features)), Flags: make([]bool, len(r.cfg.Features))}
	if p.Name == "" && cp != nil {
		p.Name = cp.Name
	}
	for _, f := range r.cfg.Features {
		if f == nil || f.Index < 0 || f.Index >= len(p.Limits) {
			continue
		}
		fromFile := cp != nil && f.Index < len(cp.Limits) && f.Index < len(cp.Flags)
		if v, ok := t.Limits[f.Name]; ok {
			p.Limits[f.Index] = v
		} else if fromFile {
			p.Limits[f.Index] = cp.Limits[f.Index]
		}
		if v, ok := t.Flags[f.Name]; ok {
			p.Flags[f.Index] = v
		} else if fromFile {
			p.Flags[f.Index] = cp.Flags[f.Index]
		}
	}
	return quota.Entitlement{TenantID: t.TenantID, Plan: p, Status: t.Status, Anchor: t.Anchor}, true
}

// restoreCounts adds the stored counts to Redis, one script per tenant
// (its keys share a slot), pipelined.
func (r *Restorer) restoreCounts(ctx context.Context, epoch int64, items []Item) (int, error) {
	byTenant := map[string][]Item{}
	var order []string
	for _, it := range items {
		if _, ok := byTenant[it.TenantID]; !ok {
			order = append(order, it.TenantID)
		}
		byTenant[it.TenantID] = append(byTenant[it.TenantID], it)
	}
	if err := restoreScript.Load(ctx, r.rdb).Err(); err != nil {
		return 0, fmt.Errorf("restore counts: %w", err)
	}
	now := r.now()
	epochArg := strconv.FormatInt(epoch, 10)
	const chunk = 200
	n := 0
	for i := 0; i < len(order); i += chunk {
		p := r.rdb.Pipeline()
		for _, tid := range order[i:min(i+chunk, len(order))] {
			its := byTenant[tid]
			keys := make([]string, 0, 1+len(its))
			args := make([]any, 0, 1+2*len(its))
			keys = append(keys, restoredKey(tid))
			args = append(args, epochArg)
			for _, it := range its {
				var ttl int64
				if it.IsGauge() {
					keys = append(keys, gaugeKey(tid, it.Feature))
				} else {
					keys = append(keys, meteredKey(tid, it.Feature, it.PeriodStart))
					// As quota does: the period plus a week.
					ttl = int64(time.Unix(it.PeriodEnd, 0).Add(7*24*time.Hour).Sub(now) / time.Second)
					if ttl <= 0 {
						ttl = 1
					}
				}
				args = append(args, it.Used, ttl)
			}
			restoreScript.EvalSha(ctx, p, keys, args...)
		}
		cmds, err := p.Exec(ctx)
		if err != nil {
			for _, c := range cmds {
				if c.Err() != nil {
					return 0, fmt.Errorf("restore counts: %w", c.Err())
				}
			}
			return 0, fmt.Errorf("restore counts: %w", err)
		}
		for j, c := range cmds {
			tid := order[i+j]
			restored := len(byTenant[tid])
			if v, _ := c.(*redis.Cmd).Int64(); v < 0 {
				// A bad value must not hold up the restore (and with it
				// every flush), nor keep the tenant's good counters from
				// their counts: only it stays out, and requests report it
				// as malformed until an operator repairs it.
				r.log.Warn("restore: counters in Redis that are not numbers were left out",
					zap.String("tenant", tid), zap.Int64("counters", -v))
				restored += int(v)
			}
			n += restored
		}
	}
	return n, nil
}
