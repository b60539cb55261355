package quota

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

// Entitlement is what admin/billing writes through to Redis.
type Entitlement struct {
	TenantID string
	Plan     *config.Plan     // limits and flags are copied from it
	Status   string           // "active", "trialing", "past_due", "canceled", "unpaid"; "" → "active"
	Anchor   int64            // unix seconds; 0 = calendar month
	Limits   map[string]int64 // per-tenant overrides by feature name (optional)
}

// PutEntitlement replaces the tenant's entitlement hash atomically (DEL and
// HSET in one MULTI), so a concurrent Reserve sees either the old or the new
// plan, never a mix. Usage counters are kept.
func (s *Store) PutEntitlement(ctx context.Context, e Entitlement) error {
	fields, err := s.entitlementFields(e)
	if err != nil {
		return fmt.Errorf("put entitlement: %w", err)
	}
	key := entKey(e.TenantID)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		p.HSet(ctx, key, fields...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("put entitlement %s: %w", e.TenantID, err)
	}
	s.anchors.Store(e.TenantID, e.Anchor)
	return nil
}

func (s *Store) entitlementFields(e Entitlement) ([]any, error) {
	if e.TenantID == "" {
		return nil, errors.New("empty tenant id")
	}
	if e.Plan == nil {
		return nil, fmt.Errorf("tenant %s: no plan", e.TenantID)
	}
	status := e.Status
	if status == "" {
		status = "active"
	}
	for name, v := range e.Limits {
		f := s.cfg.FeatureByName[name]
		if f == nil || f.Kind == config.Flag {
			return nil, fmt.Errorf("tenant %s: limit override for %q, which is not a metered or gauge feature", e.TenantID, name)
		}
		if v < config.Unlimited {
			return nil, fmt.Errorf("tenant %s: limit override %d for %q: must be >= -1", e.TenantID, v, name)
		}
	}
	fields := make([]any, 0, 8+2*len(s.cfg.Features))
	fields = append(fields,
		"plan", e.Plan.Slug,
		"plan_name", e.Plan.Name,
		"status", status,
		"anchor", strconv.FormatInt(e.Anchor, 10))
	for _, f := range s.cfg.Features {
		if f == nil {
			continue
		}
		fi := s.info(f)
		switch f.Kind {
		case config.Metered, config.Gauge:
			limit, ok := e.Limits[f.Name]
			if !ok {
				if f.Index < 0 || f.Index >= len(e.Plan.Limits) {
					return nil, fmt.Errorf("plan %s has no limit for %s", e.Plan.Slug, f.Name)
				}
				limit = e.Plan.Limits[f.Index]
			}
			fields = append(fields, fi.limitField, strconv.FormatInt(limit, 10))
		case config.Flag:
			on := f.Index >= 0 && f.Index < len(e.Plan.Flags) && e.Plan.Flags[f.Index]
			v := "0"
			if on {
				v = "1"
			}
			fields = append(fields, fi.flagField, v)
		}
	}
	return fields, nil
}

// GetEntitlement returns the tenant's raw entitlement hash; ok is false
// when the tenant has none.
func (s *Store) GetEntitlement(ctx context.Context, tenantID string) (map[string]string, bool, error) {
	h, err := s.rdb.HGetAll(ctx, entKey(tenantID)).Result()
	if err != nil {
		return nil, false, fmt.Errorf("get entitlement %s: %w", tenantID, err)
	}
	if len(h) == 0 {
		return nil, false, nil
	}
	if a, err := strconv.ParseInt(h["anchor"], 10, 64); err == nil {
		s.anchors.Store(tenantID, a)
	}
	return h, true, nil
}

// DeleteTenant removes the tenant's entitlement (its requests become
// UnknownTenant), its gauges and its metered counters of the current and
// previous period; older periods expire by themselves.
func (s *Store) DeleteTenant(ctx context.Context, tenantID string) error {
	ent := entKey(tenantID)
	a, err := s.rdb.HGet(ctx, ent, "anchor").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("delete tenant %s: %w", tenantID, err)
	}
	anchor, _ := strconv.ParseInt(a, 10, 64)
	start, _ := Period(anchor, s.now())
	prevStart, _ := Period(anchor, start.Add(-1))

	keys := []string{ent}
	for _, f := range s.cfg.Features {
		if f == nil {
			continue
		}
		fi := s.info(f)
		switch f.Kind {
		case config.Metered:
			keys = append(keys, counterKey(tenantID, fi, start.Unix()), counterKey(tenantID, fi, prevStart.Unix()))
			if fi.lease {
				keys = append(keys, leaseKey(tenantID, fi, start.Unix()), leaseKey(tenantID, fi, prevStart.Unix()))
			}
		case config.Gauge:
			keys = append(keys, counterKey(tenantID, fi, 0))
		}
	}
	if err := s.rdb.Del(ctx, keys...).Err(); err != nil {
		return fmt.Errorf("delete tenant %s: %w", tenantID, err)
	}
	s.anchors.Delete(tenantID)
	s.dropPending(tenantPrefix(tenantID) + ":")
	s.dropLeases(tenantID)
	return nil
}

// SetGauge sets a gauge to the live count n, for an admin reconciling it
// with the upstream's real number of resources.
func (s *Store) SetGauge(ctx context.Context, tenantID string, f *config.Feature, n int64) error {
	if f == nil || f.Kind != config.Gauge {
		return fmt.Errorf("set gauge: %s is not a gauge", featureName(f))
	}
	if n < 0 {
		return fmt.Errorf("set gauge %s: negative count %d", f.Name, n)
	}
	if err := s.rdb.Set(ctx, counterKey(tenantID, s.info(f), 0), n, 0).Err(); err != nil {
		return fmt.Errorf("set gauge %s for %s: %w", f.Name, tenantID, err)
	}
	return nil
}

// Usage returns the tenant's usage of f: the current period's count for a
// metered feature, the live count for a gauge. It reads the anchor from
// Redis rather than the cache, since admin answers must be exact.
func (s *Store) Usage(ctx context.Context, tenantID string, f *config.Feature) (int64, error) {
	if f == nil || (f.Kind != config.Metered && f.Kind != config.Gauge) {
		return 0, fmt.Errorf("usage: %s is not metered or a gauge", featureName(f))
	}
	fi := s.info(f)
	var start int64
	if f.Kind == config.Metered {
		a, err := s.rdb.HGet(ctx, entKey(tenantID), "anchor").Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, fmt.Errorf("usage %s for %s: %w", f.Name, tenantID, err)
		}
		anchor, _ := strconv.ParseInt(a, 10, 64)
		st, _ := Period(anchor, s.now())
		start = st.Unix()
	}
	n, err := s.rdb.Get(ctx, counterKey(tenantID, fi, start)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("usage %s for %s: %w", f.Name, tenantID, err)
	}
	return n, nil
}

func featureName(f *config.Feature) string {
	if f == nil {
		return "<nil feature>"
	}
	return strconv.Quote(f.Name)
}
