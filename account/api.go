package account

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/docs"
)

// UsageReader is the part of the quota store (Redis) the usage endpoints
// read; *quota.Store is one.
type UsageReader interface {
	Usage(ctx context.Context, tenantID string, f *config.Feature) (int64, error)
	GetEntitlement(ctx context.Context, tenantID string) (map[string]string, bool, error)
}

// API is the tenant billing API. It is an http.Handler serving the tenant
// routes at its root and a proxy.MountMatcher, so it can be given to
// proxy.WithMount as it is.
type API struct {
	cfg     *config.Config
	store   *billing.Store
	usage   UsageReader
	jwt     *dashboardVerifier
	log     *zap.Logger
	timeout time.Duration
	now     func() time.Time
	tenant  *http.ServeMux // the tenant routes only: what mounts serve
}

// Option configures an API.
type Option func(*API)

// WithLogger sets the logger; the default discards.
func WithLogger(l *zap.Logger) Option {
	return func(a *API) {
		if l != nil {
			a.log = l
		}
	}
}

// WithTimeout bounds each request's wait on PostgreSQL; past it the answer
// is 503 store_unavailable. Default 2s.
func WithTimeout(d time.Duration) Option {
	return func(a *API) {
		if d > 0 {
			a.timeout = d
		}
	}
}

// WithClock sets the clock that picks the current usage period; tests move
// it.
func WithClock(now func() time.Time) Option {
	return func(a *API) {
		if now != nil {
			a.now = now
		}
	}
}

// DefaultTimeout is how long a request waits on a store by default.
const DefaultTimeout = 2 * time.Second

// usageTimeout bounds the Redis reads of the usage endpoints; the Redis
// client's own (shorter) timeouts normally apply first.
const usageTimeout = 500 * time.Millisecond

// New returns the API for cfg (cfg.Account and the features), reading
// PostgreSQL through store and live usage through usage. usage may be nil:
// usage then always comes from PostgreSQL. It fails only when
// cfg.Account.DashboardJWT holds an unusable key.
func New(cfg *config.Config, store *billing.Store, usage UsageReader, opts ...Option) (*API, error) {
	if cfg == nil || store == nil {
		return nil, fmt.Errorf("account: new: config and store are required")
	}
	a := &API{cfg: cfg, store: store, usage: usage, log: zap.NewNop(), timeout: DefaultTimeout, now: time.Now}
	for _, o := range opts {
		o(a)
	}
	if j := cfg.Account.DashboardJWT; j != nil {
		v, err := newDashboardVerifier(j)
		if err != nil {
			return nil, fmt.Errorf("account: new: %w", err)
		}
		a.jwt = v
	}
	a.tenant = http.NewServeMux()
	for _, rt := range a.routes() {
		a.tenant.Handle("GET "+rt.path, rt.h)
	}
	return a, nil
}

type route struct {
	path string
	h    http.Handler
}

// routes are the tenant endpoints. The /subscription/... aliases are seed
// 001's paths for the same answers.
func (a *API) routes() []route {
	return []route{
		{"/plans", a.authed(false, a.plans)},
		{"/subscription", a.authed(true, a.subscription)},
		{"/usage", a.authed(true, a.usageReport)},
		{"/subscription/usage", a.authed(true, a.usageReport)},
		{"/invoices", a.authed(true, a.invoices)},
		{"/subscription/invoices", a.authed(true, a.invoices)},
	}
}

// OpenAPIPath is where Register serves the OpenAPI document.
const OpenAPIPath = "/openapi.yaml"

// Register adds the tenant routes and GET /openapi.yaml to the API
// listener's mux. Other methods on the same paths get a JSON 405.
func (a *API) Register(mux *http.ServeMux) {
	for _, rt := range a.routes() {
		mux.Handle("GET "+rt.path, rt.h)
		mux.HandleFunc(rt.path, methodNotAllowed)
	}
	mux.HandleFunc("GET "+OpenAPIPath, serveOpenAPI)
}

// Routes lists the method patterns Register adds (the JSON 405 fallbacks
// aside), for checks such as the OpenAPI document's.
func (a *API) Routes() []string {
	rts := a.routes()
	out := make([]string, 0, len(rts)+1)
	for _, rt := range rts {
		out = append(out, "GET "+rt.path)
	}
	return append(out, "GET "+OpenAPIPath)
}

// Mounts returns the configured proxy mount prefixes, for proxy.WithMount.
func (a *API) Mounts() []string { return a.cfg.Account.Mounts }

// ServeHTTP serves the tenant routes at the root; a request the API does
// not serve gets a JSON 404. The proxy only passes requests MatchMount
// claims.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, pattern := a.tenant.Handler(r); pattern != "" {
		h.ServeHTTP(w, r)
		return
	}
	WriteError(w, http.StatusNotFound, "not_found", "No billing endpoint at this path.")
}

// MatchMount reports whether the API serves method and path (the path with
// the mount prefix removed): GET and HEAD on its routes. Everything else
// under a mount prefix stays the upstream's.
func (a *API) MatchMount(method, path string) bool {
	if method != http.MethodGet && method != http.MethodHead {
		return false
	}
	switch path {
	case "/plans", "/subscription", "/usage", "/subscription/usage", "/invoices", "/subscription/invoices":
		return true
	}
	return false
}

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(docs.OpenAPI)
}

// storeCtx bounds a store call so a dead database is a quick 503, not a
// hung request; under authed it inherits the request's deadline.
func (a *API) storeCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.timeout)
}

// storeError maps an unexpected store error to 503 and logs it.
func (a *API) storeError(op string, err error) *apiError {
	a.log.Warn("billing store unavailable", zap.String("op", op), zap.Error(err))
	return errStoreUnavailable
}
