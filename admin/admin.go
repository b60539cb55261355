package admin

import (
	"context"
	"crypto/subtle"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
)

// Entitlements is the part of the quota store the admin API writes;
// *quota.Store implements it.
type Entitlements interface {
	PutEntitlement(ctx context.Context, e quota.Entitlement) error
	SetGauge(ctx context.Context, tenantID string, f *config.Feature, n int64) error
}

// API is the admin HTTP API.
type API struct {
	cfg   *config.Config
	db    *billing.Store
	rdb   redis.UniversalClient
	ents  Entitlements
	log   *zap.Logger
	token []byte
	now   func() time.Time

	// pending holds tenants whose write-through failed, with the sequence
	// number of the latest failure; Run retries them.
	mu      sync.Mutex
	pending map[string]uint64
	seq     uint64
	// refresh is the plans' write-through under way (RefreshPlans), nil
	// when none; refreshGen counts RefreshPlans calls, so Run can tell its
	// refresh was replaced. Both under mu.
	refresh    *planRefresh
	refreshGen uint64
	// wake starts Run's next round at once (a new refresh).
	wake chan struct{}

	// tenantLocks are this process's part of a tenant's write-through
	// lock (see withTenant): a one-slot semaphore per shard.
	tenantLocks [64]chan struct{}
}

// sectionTimeout bounds a tenant's write-through section: waiting for its
// lock, reading PostgreSQL and writing Redis.
const sectionTimeout = 5 * time.Second

// withTenant runs fn holding the tenant's write-through lock, within
// sectionTimeout. Every path that writes what a tenant is entitled to or
// its keys to Redis runs in it, after its change committed in PostgreSQL,
// and reads the tenant through l, on the connection that holds the lock.
// So write-throughs of one tenant never interleave, in this process or
// across worker processes and replicas: a sync that read a key as live
// cannot SET it after a concurrent revocation's DEL, and of two plan
// changes the later write-through (which reads both commits) writes last.
//
// The lock is PostgreSQL's (billing.Store.LockTenant, an advisory lock
// held in a transaction). This process's sections queue first on a shard
// of tenantLocks, so they wait here rather than each holding a pooled
// connection while it waits for PostgreSQL.
func (a *API) withTenant(ctx context.Context, id string, fn func(ctx context.Context, l *billing.TenantLock) error) error {
	ctx, cancel := context.WithTimeout(ctx, sectionTimeout)
	defer cancel()
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	slot := a.tenantLocks[h.Sum32()%uint32(len(a.tenantLocks))]
	select {
	case slot <- struct{}{}:
		defer func() { <-slot }()
	case <-ctx.Done():
		return fmt.Errorf("lock tenant %q: %w", id, ctx.Err())
	}
	l, err := a.db.LockTenant(ctx, id)
	if err != nil {
		return err
	}
	defer l.Unlock()
	return fn(ctx, l)
}

// actor names the admin API in audit rows.
const actor = "admin"

// New returns the admin API on the billing store db (migrated, plans
// synced) and the Redis the proxies read (rdb for API key hashes and
// invalidations, ents for entitlements and gauges). An empty admin token
// disables it: every call answers 401. Start Run to retry write-throughs
// that failed while Redis was down and to carry out RefreshPlans.
func New(cfg *config.Config, db *billing.Store, rdb redis.UniversalClient, ents Entitlements, log *zap.Logger) *API {
	if log == nil {
		log = zap.NewNop()
	}
	a := &API{cfg: cfg, db: db, rdb: rdb, ents: ents, log: log, token: []byte(cfg.Admin.Token), now: time.Now,
		pending: map[string]uint64{}, wake: make(chan struct{}, 1)}
	for i := range a.tenantLocks {
		a.tenantLocks[i] = make(chan struct{}, 1)
	}
	return a
}

// Register adds the admin routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	const t = "/admin/v1/tenants"
	mux.Handle("POST "+t, a.auth(a.createTenant))
	mux.Handle("GET "+t, a.auth(a.listTenants))
	mux.Handle("GET "+t+"/{id}", a.auth(a.getTenant))
	mux.Handle("PUT "+t+"/{id}/plan", a.auth(a.setPlan))
	mux.Handle("POST "+t+"/{id}/keys", a.auth(a.issueKey))
	mux.Handle("GET "+t+"/{id}/keys", a.auth(a.listKeys))
	mux.Handle("DELETE "+t+"/{id}/keys/{key_id}", a.auth(a.revokeKey))
	mux.Handle("PUT "+t+"/{id}/gauges/{feature}", a.auth(a.setGauge))
	mux.Handle("POST "+t+"/{id}/balance/credits", a.auth(a.credit))
	mux.Handle("PUT "+t+"/{id}/subscription", a.auth(a.putSubscription))
	mux.Handle("DELETE "+t+"/{id}/subscription/cooldown", a.auth(a.clearCooldown))
	mux.Handle("GET /admin/v1/audit", a.auth(a.audit))
}

func (a *API) auth(next func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if len(a.token) == 0 || !ok || subtle.ConstantTimeCompare([]byte(got), a.token) != 1 {
			WriteError(w, http.StatusUnauthorized, "unauthorized", "Send Authorization: Bearer <admin token>.")
			return
		}
		if name := unstorableParam(r); name != "" {
			WriteError(w, http.StatusBadRequest, "invalid_query", name+" must be valid UTF-8 without NUL bytes.")
			return
		}
		next(w, r.WithContext(billing.WithActor(r.Context(), actor)))
	})
}
