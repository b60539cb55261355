package usage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/quota"
)

// readScript is the per-tenant read for Redis Cluster clients, which
// cannot carry hand-written MULTI blocks in a pipeline: a script whose keys
// share the tenant's slot is just as atomic. Same reply as the MULTI:
// {TIME, anchor, value...}.
var readScript = redis.NewScript(`
local out = {redis.call('TIME'), redis.call('HGET', KEYS[1], 'anchor')}
for i = 2, #KEYS do
  out[i + 1] = redis.call('GET', KEYS[i])
end
return out`)

type tenantRead struct {
	tenant   string
	counters []counter
	reply    *redis.Cmd
}

// read snapshots keys in one pipelined round trip: per tenant
// MULTI; TIME; HGET anchor; GET k...; EXEC, between two reads of the
// epoch. Keys that do not exist (expired, deleted tenant) are left out:
// an absent counter says nothing about what was billed.
func (f *Flusher) read(ctx context.Context, epoch int64, keys []string) (Batch, error) {
	byTenant := make(map[string]*tenantRead)
	var groups []*tenantRead
	for _, k := range keys {
		c, ok := parseCounterKey(k)
		if !ok {
			continue
		}
		g := byTenant[c.tenant]
		if g == nil {
			g = &tenantRead{tenant: c.tenant}
			byTenant[c.tenant] = g
			groups = append(groups, g)
		}
		g.counters = append(g.counters, c)
	}
	if len(groups) == 0 {
		return Batch{}, nil
	}

	p := f.rdb.Pipeline()
	before := p.Get(ctx, f.epochKey)
	for _, g := range groups {
		if f.useScript {
			ks := make([]string, 0, 1+len(g.counters))
			ks = append(ks, entKey(g.tenant))
			for _, c := range g.counters {
				ks = append(ks, c.key)
			}
			g.reply = readScript.Eval(ctx, p, ks)
			continue
		}
		p.Do(ctx, "multi")
		p.Do(ctx, "time")
		p.Do(ctx, "hget", entKey(g.tenant), "anchor")
		for _, c := range g.counters {
			p.Do(ctx, "get", c.key)
		}
		g.reply = p.Do(ctx, "exec")
	}
	after := p.Get(ctx, f.epochKey)
	// Exec's error is the first failed command's; each is checked below.
	_, _ = p.Exec(ctx)

	// A wipe (and maybe a restore) between the two reads would label the
	// new Redis's values with the old epoch: drop the read.
	for _, cmd := range [2]*redis.StringCmd{before, after} {
		s, err := cmd.Result()
		if errors.Is(err, redis.Nil) {
			return Batch{}, errNoEpoch
		}
		if err != nil {
			return Batch{}, fmt.Errorf("read counters: %w", err)
		}
		if e, err := parseEpoch(s); err != nil || e != epoch {
			return Batch{}, errEpochChanged
		}
	}

	b := Batch{ID: randomHex(16), ProxyID: f.proxyID, Epoch: epoch, Items: make([]Item, 0, len(keys))}
	for _, g := range groups {
		res, err := g.reply.Slice()
		if err != nil {
			return Batch{}, fmt.Errorf("read counters of %s: %w", g.tenant, err)
		}
		items, err := snapshotItems(g, res)
		if err != nil {
			return Batch{}, fmt.Errorf("read counters of %s: %w", g.tenant, err)
		}
		b.Items = append(b.Items, items...)
	}
	return b, nil
}

// snapshotItems turns one tenant's {TIME, anchor, values...} into items.
func snapshotItems(g *tenantRead, res []any) ([]Item, error) {
	if len(res) != 2+len(g.counters) {
		return nil, fmt.Errorf("unexpected reply of %d elements for %d counters", len(res), len(g.counters))
	}
	observed, err := redisTimeUS(res[0])
	if err != nil {
		return nil, err
	}
	var anchor int64
	if s, ok := res[1].(string); ok {
		// A malformed anchor reads as calendar months, as quota does.
		anchor, _ = strconv.ParseInt(s, 10, 64)
	}
	items := make([]Item, 0, len(g.counters))
	for i, c := range g.counters {
		s, ok := res[2+i].(string)
		if !ok {
			continue // absent, or not a string (a redis.Error): nothing to report
		}
		used, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			continue
		}
		it := Item{TenantID: c.tenant, Feature: c.feature, Used: max(used, 0), ObservedAtUS: observed}
		if !c.gauge {
			// The period's end follows from the tenant's anchor; a start
			// that is not one of its periods (the anchor changed since)
			// still gets an end after it.
			_, end := quota.Period(anchor, time.Unix(c.periodStart, 0))
			it.PeriodStart, it.PeriodEnd = c.periodStart, end.Unix()
		}
		// The ingest refuses a whole batch for one item it cannot take:
		// such an item (nothing Tollgate writes) must never leave, or it
		// would take its batch-mates' usage with it on every flush.
		if it.validate() != nil {
			continue
		}
		items = append(items, it)
	}
	return items, nil
}

func redisTimeUS(v any) (int64, error) {
	parts, ok := v.([]any)
	if !ok || len(parts) != 2 {
		return 0, fmt.Errorf("unexpected TIME reply %v", v)
	}
	var n [2]int64
	for i, p := range parts {
		switch x := p.(type) {
		case string:
			v, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("unexpected TIME reply %v", parts)
			}
			n[i] = v
		case int64:
			n[i] = x
		default:
			return 0, fmt.Errorf("unexpected TIME reply %v", parts)
		}
	}
	return n[0]*1_000_000 + n[1], nil
}
