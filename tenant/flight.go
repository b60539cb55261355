package tenant

import (
	"context"
	"fmt"
	"strconv"
)

// A burst of requests with a credential not in the cache (the first
// requests after a start, or after an invalidation, or a new tenant's
// launch) would each send Redis the same lookup and queue for the client's
// pool; under -race on two cores, 2,000 of them let a few pass the lookup
// timeout. While the cache is live, concurrent misses of one key share one
// lookup instead.
//
// The flight's name carries the cache generation the callers read: an
// invalidation bumps it, so a request that arrives after one never takes
// the answer of a lookup that began before it. Without a live cache
// (subscription down) every request asks Redis itself, as before.

// flightName names the shared lookup of key at cache generation gen.
func flightName(kind byte, key string, gen uint64) string {
	b := make([]byte, 0, len(key)+22)
	b = append(b, kind)
	b = strconv.AppendUint(b, gen, 10)
	b = append(b, ':')
	b = append(b, key...)
	return string(b)
}

// lookup runs fn, a Redis lookup of key (of the cache kind kind), under
// the lookup timeout. While the cache is live, callers that ask for the
// same key at the same generation at the same time share one run of it,
// which is not cut short when one caller's ctx ends; each caller stops
// waiting when its own ctx does.
func (r *Resolver) lookup(ctx context.Context, kind byte, key string, useCache bool, gen uint64, fn func(context.Context) (string, error)) (string, error) {
	if !useCache {
		ctx, cancel := r.lookupContext(ctx)
		defer cancel()
		return fn(ctx)
	}
	ch := r.flights.DoChan(flightName(kind, key, gen), func() (any, error) {
		lctx, cancel := r.lookupContext(context.WithoutCancel(ctx))
		defer cancel()
		return fn(lctx)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("tenant: lookup: %w", ctx.Err())
	}
}
