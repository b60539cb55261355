// Package tenant identifies the tenant of a proxied request from an API key,
// a trusted header or a JWT, caching answers in process so the steady state
// costs no Redis round trip and no allocation.
package tenant

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate/tollgate/config"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Resolver finds the tenant of a request. It is safe for concurrent use.
//
// Cached answers are dropped when another process publishes an invalidation
// (RevokeKey, Invalidate) and wholesale whenever the invalidation
// subscription reconnects, since messages may have been missed meanwhile.
// Once the subscription has stopped (Close, or the NewResolver context
// ended) the cache is bypassed and every request asks Redis.
type Resolver struct {
	source config.TenantSource
	header string
	rdb    redis.UniversalClient
	posTTL int64
	negTTL int64

	lookupTimeout time.Duration
	log           *zap.Logger

	// keys: api key hash → tenant (api_key). tenants: tenant id → existence
	// (header, jwt). tokens: raw SHA-256 of a verified JWT → tenant (jwt).
	keys    *cache
	tenants *cache
	tokens  *cache
	jwt     *jwtVerifier

	clock *coarseClock
	now   func() int64

	flights singleflight.Group // concurrent cache misses of one key (flight.go)

	pubsub    *redis.PubSub
	live      atomic.Bool   // the subscription runs, so the cache may be used
	ready     chan struct{} // closed at the first subscription confirmation
	readyOnce sync.Once
	done      chan struct{}
	closeOnce sync.Once
}

// NewResolver builds a Resolver for cfg and subscribes to invalidations. It
// does not need Redis to be reachable: the subscription connects (and
// reconnects) in the background. The subscription ends with ctx or Close.
func NewResolver(ctx context.Context, cfg config.TenantIdentification, rdb redis.UniversalClient, opts ...Option) (*Resolver, error) {
	if rdb == nil {
		return nil, errors.New("tenant: nil redis client")
	}
	o := options{
		positive:   defaultPositiveTTL,
		negative:   defaultNegativeTTL,
		maxEntries: defaultMaxEntries,
		log:        zap.NewNop(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.Source == "" {
		// The zero configuration means the documented default source.
		cfg.Source = config.TenantAPIKey
	}
	r := &Resolver{
		source:        cfg.Source,
		header:        cfg.Header,
		rdb:           rdb,
		posTTL:        int64(o.positive),
		negTTL:        int64(o.negative),
		lookupTimeout: o.lookupTimeout,
		log:           o.log,
		ready:         make(chan struct{}),
		done:          make(chan struct{}),
	}
	switch cfg.Source {
	case config.TenantAPIKey:
		r.keys = newCache(o.maxEntries)
		if r.header == "" {
			r.header = fasthttp.HeaderAuthorization
		}
	case config.TenantHeader:
		r.tenants = newCache(o.maxEntries)
		if r.header == "" {
			r.header = "X-Tenant-Id"
		}
	case config.TenantJWT:
		v, err := newJWTVerifier(cfg.JWT)
		if err != nil {
			return nil, fmt.Errorf("tenant: %w", err)
		}
		r.jwt = v
		r.tenants = newCache(o.maxEntries)
		r.tokens = newCache(o.maxEntries)
		if r.header == "" {
			r.header = fasthttp.HeaderAuthorization
		}
	default:
		return nil, fmt.Errorf("tenant: unknown source %q", cfg.Source)
	}

	r.clock = newCoarseClock()
	r.now = r.clock.Now
	r.subscribe(ctx)
	r.live.Store(true)
	go r.listen(ctx)
	return r, nil
}

// Close stops the invalidation subscription and the clock. Resolve keeps
// working afterwards, without the cache.
func (r *Resolver) Close() error {
	var err error
	r.closeOnce.Do(func() {
		err = r.pubsub.Close()
		<-r.done
		r.clock.Close()
		if errors.Is(err, redis.ErrClosed) {
			err = nil
		}
	})
	if err != nil {
		return fmt.Errorf("tenant: close: %w", err)
	}
	return nil
}

// Resolve returns the tenant id for the request, reading only the configured
// header. A cache hit neither allocates nor calls Redis (for jwt this holds
// once the token was verified); a miss costs one Redis GET or EXISTS. Errors
// are ErrMissing, ErrInvalid (ErrRepeated when the header is sent more than
// once) or ErrUnknown, or a wrapped store error that is none of them.
func (r *Resolver) Resolve(ctx context.Context, h *fasthttp.RequestHeader) (string, error) {
	if h == nil {
		return "", ErrMissing
	}
	v, err := singleValue(h, r.header)
	if err != nil {
		return "", err
	}
	switch r.source {
	case config.TenantAPIKey:
		return r.resolveAPIKey(ctx, v)
	case config.TenantHeader:
		return r.resolveHeader(ctx, v)
	default:
		return r.resolveJWT(ctx, v)
	}
}

func (r *Resolver) resolveAPIKey(ctx context.Context, v []byte) (string, error) {
	key, err := parseAPIKey(v)
	if err != nil {
		return "", err
	}
	var hx [hashHexLen]byte
	hashInto(&hx, key)
	now := r.now()
	useCache := r.live.Load()
	var gen uint64
	if useCache {
		e, ok, g := r.keys.get(hx[:], now)
		if ok {
			if e.tenant == "" {
				return "", ErrUnknown
			}
			return e.tenant, nil
		}
		gen = g
	}
	return r.lookupKey(ctx, string(hx[:]), useCache, gen, now)
}

func (r *Resolver) lookupKey(ctx context.Context, hash string, useCache bool, gen uint64, now int64) (string, error) {
	return r.lookup(ctx, 'k', hash, useCache, gen, func(ctx context.Context) (string, error) {
		return r.getKey(ctx, hash, useCache, gen, now)
	})
}

// getKey asks Redis which tenant holds the api key hash and caches the
// answer when useCache.
func (r *Resolver) getKey(ctx context.Context, hash string, useCache bool, gen uint64, now int64) (string, error) {
	tid, err := r.rdb.Get(ctx, apiKeyRedisKey(hash)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		if useCache {
			r.keys.put(hash, entry{expires: now + r.negTTL}, gen, now)
		}
		return "", ErrUnknown
	case err != nil:
		return "", fmt.Errorf("tenant: look up api key: %w", err)
	case !validTenantID(tid):
		// Corrupt data, not a client mistake: surface it as a store error.
		return "", fmt.Errorf("tenant: api key maps to malformed tenant id %q", tid)
	}
	if useCache {
		r.keys.put(hash, entry{tenant: tid, expires: now + r.posTTL}, gen, now)
	}
	return tid, nil
}

func (r *Resolver) resolveHeader(ctx context.Context, v []byte) (string, error) {
	v, err := headerTenantID(v)
	if err != nil {
		return "", err
	}
	now := r.now()
	useCache := r.live.Load()
	var gen uint64
	if useCache {
		e, ok, g := r.tenants.get(v, now)
		if ok {
			if e.tenant == "" {
				return "", ErrUnknown
			}
			return e.tenant, nil
		}
		gen = g
	}
	return r.lookupTenant(ctx, string(v), useCache, gen, now)
}

// checkTenant reports whether tid (already validated) exists.
func (r *Resolver) checkTenant(ctx context.Context, tid string) (string, error) {
	now := r.now()
	useCache := r.live.Load()
	var gen uint64
	if useCache {
		e, ok, g := r.tenants.getString(tid, now)
		if ok {
			if e.tenant == "" {
				return "", ErrUnknown
			}
			return e.tenant, nil
		}
		gen = g
	}
	return r.lookupTenant(ctx, tid, useCache, gen, now)
}

func (r *Resolver) lookupTenant(ctx context.Context, tid string, useCache bool, gen uint64, now int64) (string, error) {
	return r.lookup(ctx, 't', tid, useCache, gen, func(ctx context.Context) (string, error) {
		return r.existsTenant(ctx, tid, useCache, gen, now)
	})
}

// existsTenant asks Redis whether tenant tid exists and caches the answer
// when useCache.
func (r *Resolver) existsTenant(ctx context.Context, tid string, useCache bool, gen uint64, now int64) (string, error) {
	n, err := r.rdb.Exists(ctx, entKey(tid)).Result()
	if err != nil {
		return "", fmt.Errorf("tenant: check tenant: %w", err)
	}
	if n == 0 {
		if useCache {
			r.tenants.put(tid, entry{expires: now + r.negTTL}, gen, now)
		}
		return "", ErrUnknown
	}
	if useCache {
		r.tenants.put(tid, entry{tenant: tid, expires: now + r.posTTL}, gen, now)
	}
	return tid, nil
}

func (r *Resolver) resolveJWT(ctx context.Context, v []byte) (string, error) {
	tok, err := parseBearer(v)
	if err != nil {
		return "", err
	}
	if !plausibleJWT(tok) {
		return "", ErrInvalid
	}
	sum := sha256.Sum256(tok)
	now := r.now()
	useCache := r.live.Load()
	var gen uint64
	if useCache {
		e, ok, g := r.tokens.get(sum[:], now)
		if ok {
			return r.checkTenant(ctx, e.tenant)
		}
		gen = g
	}
	tid, exp, err := r.jwt.verify(string(tok))
	if err != nil {
		return "", err
	}
	if useCache {
		// Only verified tokens are cached, and never past their own expiry
		// (less one clock tick, since the coarse clock may lag).
		expires := now + r.posTTL
		if exp != 0 && exp-int64(clockTick) < expires {
			expires = exp - int64(clockTick)
		}
		if expires > now {
			r.tokens.put(string(sum[:]), entry{tenant: tid, expires: expires}, gen, now)
		}
	}
	return r.checkTenant(ctx, tid)
}

func (r *Resolver) lookupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.lookupTimeout > 0 {
		return context.WithTimeout(ctx, r.lookupTimeout)
	}
	return ctx, func() {}
}
