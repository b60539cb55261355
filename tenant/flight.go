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

// flightName names the shared lookup of key (of the cache kind kind) at
// cache generation gen.
func flightName(kind byte, key string, gen uint64) string {
	b := make([]byte, 0, len(key)+22)
	b = append(b, kind)
	b = strconv.AppendUint(b, gen, 10)
	b = append(b, ':')
	b = append(b, key...)
	return string(b)
}

// shared runs lookup once for all callers that ask for name at the same
// time. The lookup gets its own timeout and is not cut short when one
// caller's ctx ends; each caller stops waiting when its own ctx does.
func (r *Resolver) shared(ctx context.Context, name string, lookup func(context.Context) (string, error)) (string, error) {
	ch := r.flights.DoChan(name, func() (any, error) {
		lctx, cancel := r.lookupContext(context.WithoutCancel(ctx))
		defer cancel()
		return lookup(lctx)
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
