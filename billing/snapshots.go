package billing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/usage"
)

// This file is the billing side of package usage: flush batches of
// absolute counter snapshots (usage.SnapshotStore) and what a restore of
// Redis reads (usage.RestoreSource).

var (
	_ usage.SnapshotStore = (*Store)(nil)
	_ usage.RestoreSource = (*Store)(nil)
)

type snapKey struct {
	tenant, feature string
	start           int64
}

// ApplySnapshots applies a flush batch exactly once, in one transaction:
//   - a batch whose epoch is not the current one is usage.ErrStaleEpoch and
//     changes nothing (its values come from a Redis since restored);
//   - the batch id is inserted into usage_batches ON CONFLICT DO NOTHING: a
//     batch already there returns applied=false and changes nothing; of
//     concurrent deliveries, the others wait on the first's row;
//   - each counter takes the item's value only when the item is newer
//     (epoch, then observed_at), so older or repeated snapshots never win.
//
// Rows are written in key order so concurrent batches cannot deadlock.
func (s *Store) ApplySnapshots(ctx context.Context, b usage.Batch) (bool, error) {
	const op = "apply snapshots"
	if err := b.Validate(); err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	metered, gauges := newestSnapshots(b.Items)
	applied := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// A batch racing a new epoch may still land after the restore read
		// the table; its values came from the Redis that was wiped, and
		// the new epoch's snapshots replace them.
		var cur int64
		if err := tx.QueryRow(ctx, `SELECT COALESCE(max(epoch), 0) FROM usage_epochs`).Scan(&cur); err != nil {
			return err
		}
		if b.Epoch != cur {
			return fmt.Errorf("batch epoch %d, current %d: %w", b.Epoch, cur, usage.ErrStaleEpoch)
		}
		tag, err := tx.Exec(ctx, `INSERT INTO usage_batches (batch_id, proxy_id, items) VALUES ($1, $2, $3)
			ON CONFLICT (batch_id) DO NOTHING`, b.ID, b.ProxyID, len(b.Items))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // a duplicate: already applied
		}
		applied = true
		if err := upsertMetered(ctx, tx, b.Epoch, metered); err != nil {
			return err
		}
		return upsertGauges(ctx, tx, b.Epoch, gauges)
	})
	if errors.Is(err, usage.ErrStaleEpoch) {
		return false, fmt.Errorf("%s %q: %w", op, b.ID, err)
	}
	if err != nil {
		return false, classify(fmt.Sprintf("%s %q", op, b.ID), err)
	}
	return applied, nil
}

// newestSnapshots keeps, per counter, the newest item of the batch (an
// upsert may not touch one row twice) and sorts each kind by key.
func newestSnapshots(items []usage.Item) (metered, gauges []usage.Item) {
	best := make(map[snapKey]int, len(items))
	var all []usage.Item
	for _, it := range items {
		k := snapKey{it.TenantID, it.Feature, it.PeriodStart}
		if i, ok := best[k]; ok {
			if it.ObservedAtUS > all[i].ObservedAtUS {
				all[i] = it
			}
			continue
		}
		best[k] = len(all)
		all = append(all, it)
	}
	slices.SortFunc(all, func(a, b usage.Item) int {
		return cmp.Or(cmp.Compare(a.TenantID, b.TenantID), cmp.Compare(a.Feature, b.Feature),
			cmp.Compare(a.PeriodStart, b.PeriodStart))
	})
	for _, it := range all {
		if it.IsGauge() {
			gauges = append(gauges, it)
		} else {
			metered = append(metered, it)
		}
	}
	return metered, gauges
}

func upsertMetered(ctx context.Context, tx pgx.Tx, epoch int64, items []usage.Item) error {
	if len(items) == 0 {
		return nil
	}
	n := len(items)
	tenants, features := make([]string, n), make([]string, n)
	starts, ends, used, observed := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, it := range items {
		tenants[i], features[i] = it.TenantID, it.Feature
		starts[i], ends[i], used[i], observed[i] = it.PeriodStart, it.PeriodEnd, it.Used, it.ObservedAtUS
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO usage AS u (tenant_id, feature, period_start, period_end, used, epoch, observed_at)
		SELECT t, f, to_timestamp(ps), to_timestamp(pe), n, $7, o
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
			WITH ORDINALITY AS x(t, f, ps, pe, n, o, ord)
		ORDER BY ord
		ON CONFLICT (tenant_id, feature, period_start) DO UPDATE
		SET used = excluded.used, period_end = excluded.period_end, epoch = excluded.epoch,
			observed_at = excluded.observed_at, updated_at = now()
		WHERE (u.epoch, u.observed_at) < (excluded.epoch, excluded.observed_at)`,
		tenants, features, starts, ends, used, observed, epoch)
	return err
}

func upsertGauges(ctx context.Context, tx pgx.Tx, epoch int64, items []usage.Item) error {
	if len(items) == 0 {
		return nil
	}
	n := len(items)
	tenants, features, counts, observed := make([]string, n), make([]string, n), make([]int64, n), make([]int64, n)
	for i, it := range items {
		tenants[i], features[i], counts[i], observed[i] = it.TenantID, it.Feature, it.Used, it.ObservedAtUS
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO gauges AS g (tenant_id, feature, count, epoch, observed_at)
		SELECT t, f, n, $5, o
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) WITH ORDINALITY AS x(t, f, n, o, ord)
		ORDER BY ord
		ON CONFLICT (tenant_id, feature) DO UPDATE
		SET count = excluded.count, epoch = excluded.epoch, observed_at = excluded.observed_at, updated_at = now()
		WHERE (g.epoch, g.observed_at) < (excluded.epoch, excluded.observed_at)`,
		tenants, features, counts, observed, epoch)
	return err
}

// GaugesFor returns the tenant's flushed gauges by feature.
func (s *Store) GaugesFor(ctx context.Context, tenantID string) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT feature, count FROM gauges WHERE tenant_id = $1`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("gauges for: %w", err)
	}
	out := map[string]int64{}
	var feature string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&feature, &n}, func() error {
		out[feature] = n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("gauges for: %w", err)
	}
	return out, nil
}

// restoreLockClass is the first key of the restore's advisory lock; the
// second is the schema, as for migrations.
const restoreLockClass = 0x7475 // "tu"

// LockRestore takes a session advisory lock on a dedicated connection
// without waiting: ok is false when another process restores. Unlike a
// Redis lock it survives the Redis wipe it guards against; a restorer that
// dies releases it with its connection.
func (s *Store) LockRestore(ctx context.Context) (func(), bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lock restore: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext(current_schema()))`,
		restoreLockClass).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("lock restore: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	unlock := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, restoreLockClass); err != nil {
			// Closing the session is what releases the lock then.
			_ = conn.Conn().Close(ctx)
		}
		conn.Release()
	}
	return unlock, true, nil
}

// BeginEpoch returns the epoch a restore writes under: the newest one if
// its restore never completed, else a new one, which from now on is the
// only epoch ApplySnapshots accepts.
func (s *Store) BeginEpoch(ctx context.Context) (int64, error) {
	var epoch int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var done bool
		err := tx.QueryRow(ctx, `SELECT epoch, completed_at IS NOT NULL FROM usage_epochs
			ORDER BY epoch DESC LIMIT 1 FOR UPDATE`).Scan(&epoch, &done)
		if err == nil && !done {
			return nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO usage_epochs DEFAULT VALUES RETURNING epoch`).Scan(&epoch)
	})
	if err != nil {
		return 0, fmt.Errorf("begin epoch: %w", err)
	}
	return epoch, nil
}

// CompleteEpoch records that Redis carries epoch.
func (s *Store) CompleteEpoch(ctx context.Context, epoch int64) error {
	if _, err := s.pool.Exec(ctx, `UPDATE usage_epochs SET completed_at = now() WHERE epoch = $1`, epoch); err != nil {
		return fmt.Errorf("complete epoch %d: %w", epoch, err)
	}
	return nil
}

// CurrentEpoch returns the epoch flush batches must carry, 0 before the
// first restore.
func (s *Store) CurrentEpoch(ctx context.Context) (int64, error) {
	var epoch int64
	if err := s.pool.QueryRow(ctx, `SELECT COALESCE(max(epoch), 0) FROM usage_epochs`).Scan(&epoch); err != nil {
		return 0, fmt.Errorf("current epoch: %w", err)
	}
	return epoch, nil
}

// RestoreTenants returns every tenant with the plan it is entitled to:
// its live subscription's plan terms, status and period anchor
// (quota.Anchor), or, without a live subscription (pay-as-you-go, or only canceled
// ones), defaultPlan's terms, active, on calendar months (anchor 0) — what
// the admin API writes through for such a tenant.
func (s *Store) RestoreTenants(ctx context.Context, defaultPlan string) ([]usage.TenantState, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT t.id, COALESCE(s.plan_slug, $1), COALESCE(p.name, ''), COALESCE(s.status, $2), s.period_start,
			s.period_end, COALESCE(p.limits, '{}'), COALESCE(p.flags, '{}')
		FROM tenants t
		LEFT JOIN subscriptions s ON s.tenant_id = t.id AND s.status <> 'canceled'
		LEFT JOIN plans p ON p.slug = COALESCE(s.plan_slug, $1)
		ORDER BY t.id`, defaultPlan, StatusActive)
	if err != nil {
		return nil, fmt.Errorf("restore tenants: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (usage.TenantState, error) {
		var t usage.TenantState
		var start, end *time.Time
		if err := r.Scan(&t.TenantID, &t.PlanSlug, &t.PlanName, &t.Status, &start, &end, &t.Limits, &t.Flags); err != nil {
			return t, err
		}
		if start != nil && end != nil {
			t.Anchor = quota.Anchor(*start, *end)
		}
		return t, nil
	})
	if err != nil {
		return nil, fmt.Errorf("restore tenants: %w", err)
	}
	return out, nil
}

// RestoreKeys returns the hashes of all unrevoked API keys.
func (s *Store) RestoreKeys(ctx context.Context) ([]usage.KeyHash, error) {
	rows, err := s.pool.Query(ctx, `SELECT key_hash, tenant_id FROM api_keys WHERE revoked_at IS NULL ORDER BY key_hash`)
	if err != nil {
		return nil, fmt.Errorf("restore keys: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[usage.KeyHash])
	if err != nil {
		return nil, fmt.Errorf("restore keys: %w", err)
	}
	return out, nil
}

// RestoreUsage returns the metered counts of periods that have not ended
// at now, and every non-zero gauge.
func (s *Store) RestoreUsage(ctx context.Context, now time.Time) ([]usage.Item, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT tenant_id, feature, extract(epoch FROM period_start)::bigint, extract(epoch FROM period_end)::bigint,
			used, observed_at
		FROM usage WHERE period_end > $1 AND used > 0
		UNION ALL
		SELECT tenant_id, feature, 0, 0, count, observed_at FROM gauges WHERE count > 0
		ORDER BY 1, 2, 3`, now)
	if err != nil {
		return nil, fmt.Errorf("restore usage: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[usage.Item])
	if err != nil {
		return nil, fmt.Errorf("restore usage: %w", err)
	}
	return out, nil
}
