package billing

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// UsageItem is one counter increment in a flush batch.
type UsageItem struct {
	TenantID    string
	Feature     string
	PeriodStart time.Time
	PeriodEnd   time.Time
	Delta       int64 // >= 0: billed usage only grows within a period
}

// Batch is what a proxy flushes: its usage since the previous flush, under
// an id it keeps until the flush is acknowledged, so a retry after a lost
// answer carries the same id.
type Batch struct {
	ID      string
	ProxyID string
	Items   []UsageItem
}

// MaxBatchItems bounds one batch so one transaction stays small.
const MaxBatchItems = 10_000

type usageKey struct {
	tenant, feature string
	start           int64 // unix microseconds: PostgreSQL's precision
}

type usageRow struct {
	usageKey
	end   time.Time
	delta int64
}

// ApplyUsageBatch adds the batch's deltas to the usage counters exactly
// once. Recording the batch id (INSERT … ON CONFLICT DO NOTHING on the
// primary key) and the counter upserts commit in one transaction, so:
//   - a batch already applied changes nothing and returns applied=false;
//   - of concurrent deliveries of one batch, the others wait on the first's
//     uncommitted id row and then find it, so exactly one applies;
//   - if the first fails, nothing of it is kept and a retry applies it.
//
// Items for the same tenant, feature and period are summed first; counters
// are written in key order so concurrent batches cannot deadlock.
func (s *Store) ApplyUsageBatch(ctx context.Context, b Batch) (bool, error) {
	const op = "apply usage batch"
	rows, err := aggregate(op, b)
	if err != nil {
		return false, err
	}
	n := len(rows)
	tenants, features := make([]string, n), make([]string, n)
	starts, ends, deltas := make([]time.Time, n), make([]time.Time, n), make([]int64, n)
	for i, r := range rows {
		tenants[i], features[i] = r.tenant, r.feature
		starts[i], ends[i], deltas[i] = time.UnixMicro(r.start).UTC(), r.end, r.delta
	}
	applied := false
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO usage_batches (batch_id, proxy_id, items) VALUES ($1, $2, $3)
			ON CONFLICT (batch_id) DO NOTHING`, b.ID, b.ProxyID, len(b.Items))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // a duplicate: already counted
		}
		applied = true
		if n == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO usage (tenant_id, feature, period_start, period_end, used)
			SELECT t, f, ps, pe, d
			FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[])
				WITH ORDINALITY AS u(t, f, ps, pe, d, ord)
			ORDER BY ord
			ON CONFLICT (tenant_id, feature, period_start)
			DO UPDATE SET used = usage.used + excluded.used, updated_at = now()`,
			tenants, features, starts, ends, deltas)
		return err
	})
	if err != nil {
		return false, classify(fmt.Sprintf("%s %q", op, b.ID), err)
	}
	return applied, nil
}

// aggregate validates a batch and sums its items by counter, in key order.
func aggregate(op string, b Batch) ([]usageRow, error) {
	switch {
	case b.ID == "" || len(b.ID) > 128:
		return nil, invalid(op, "batch id must be 1 to 128 characters")
	case b.ProxyID == "" || len(b.ProxyID) > 128:
		return nil, invalid(op, "proxy id must be 1 to 128 characters")
	case len(b.Items) > MaxBatchItems:
		return nil, invalid(op, "%d items, at most %d per batch", len(b.Items), MaxBatchItems)
	}
	sums := make(map[usageKey]*usageRow, len(b.Items))
	for i, it := range b.Items {
		switch {
		case it.TenantID == "" || it.Feature == "":
			return nil, invalid(op, "item %d: tenant and feature are required", i)
		case it.Delta < 0:
			return nil, invalid(op, "item %d: negative delta %d", i, it.Delta)
		case it.PeriodStart.IsZero() || !it.PeriodEnd.After(it.PeriodStart):
			return nil, invalid(op, "item %d: period end must be after period start", i)
		}
		k := usageKey{it.TenantID, it.Feature, it.PeriodStart.UnixMicro()}
		end := time.UnixMicro(it.PeriodEnd.UnixMicro()).UTC()
		r := sums[k]
		if r == nil {
			sums[k] = &usageRow{usageKey: k, end: end, delta: it.Delta}
			continue
		}
		if !r.end.Equal(end) {
			return nil, invalid(op, "item %d: period of %s/%s starting %s ends at two different times",
				i, it.TenantID, it.Feature, it.PeriodStart.UTC().Format(time.RFC3339))
		}
		if r.delta > maxInt64-it.Delta {
			return nil, invalid(op, "item %d: delta overflows", i)
		}
		r.delta += it.Delta
	}
	out := make([]usageRow, 0, len(sums))
	for _, r := range sums {
		if r.delta > 0 {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b usageRow) int {
		return cmp.Or(cmp.Compare(a.tenant, b.tenant), cmp.Compare(a.feature, b.feature), cmp.Compare(a.start, b.start))
	})
	return out, nil
}

const maxInt64 = 1<<63 - 1

// UsageFor returns the tenant's counters for the period starting at
// periodStart, by feature. Features with no usage are absent.
func (s *Store) UsageFor(ctx context.Context, tenantID string, periodStart time.Time) (map[string]int64, error) {
	const op = "usage for"
	rows, err := s.pool.Query(ctx, `SELECT feature, used FROM usage WHERE tenant_id = $1 AND period_start = $2`,
		tenantID, periodStart)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	out := map[string]int64{}
	var feature string
	var used int64
	_, err = pgx.ForEachRow(rows, []any{&feature, &used}, func() error {
		out[feature] = used
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// PruneUsageBatches forgets the ids of batches received before cutoff and
// returns how many. Snapshot batches (ApplySnapshots, what the proxies
// send) may be pruned freely: one delivered again loses to the newer
// snapshots. With the older delta batches (ApplyUsageBatch), pick a cutoff
// far older than any sender keeps retrying a batch (days, not minutes): a
// delta batch whose id was pruned would count twice if delivered again.
func (s *Store) PruneUsageBatches(ctx context.Context, cutoff time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM usage_batches WHERE received_at < $1`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("prune usage batches: %w", err)
	}
	return tag.RowsAffected(), nil
}
