// Package config loads Tollgate's YAML configuration, applies environment
// overrides and validates everything in one place, so the rest of the program
// only ever sees typed, checked values.
package config

import (
	"math"
	"time"
)

// Config is the whole, validated configuration. Every field is ready to use:
// defaults are filled in and cross references (plan → feature, route →
// feature) are resolved.
type Config struct {
	// Source is the file the configuration was read from; errors name it.
	Source string

	Listen    string // proxy listener, TOLLGATE_LISTEN, default 127.0.0.1:8080
	APIListen string // admin/billing API listener, TOLLGATE_API_LISTEN, default 127.0.0.1:8081

	// Procs is how many threads may run Tollgate's Go code at once (the
	// runtime's GOMAXPROCS): ProcsAll or a count >= 1. TOLLGATE_PROCS,
	// default all. cmd/tollgate applies it (Procs.For).
	Procs Procs
	// Workers is how many processes serve the listeners (WorkersAuto: one
	// per P), each with its share of Procs. TOLLGATE_WORKERS, default 1.
	// cmd/tollgate starts them (Workers.Split).
	Workers Workers

	Upstream Upstream
	Redis    Redis
	Database Database
	Admin    Admin
	Tenant   TenantIdentification
	Account  Account // the tenant billing API (types_account.go)

	// Features in declaration order; FeatureByName indexes the same values.
	Features      []*Feature
	FeatureByName map[string]*Feature

	// Plans in declaration order; PlanBySlug indexes the same values.
	Plans      []*Plan
	PlanBySlug map[string]*Plan
	// DefaultPlan is the slug given to tenants created without a plan.
	DefaultPlan string

	Routes []*Route
	// Router matches method+path to a Route without allocating.
	Router *Router
}

// Upstream is the API Tollgate fronts.
type Upstream struct {
	URL    string // TOLLGATE_UPSTREAM_URL, e.g. http://127.0.0.1:9000
	Scheme string // "http" or "https", from URL
	Host   string // host:port, from URL

	// Timeout bounds the wait for the upstream's response headers; past it
	// the client gets 504. Default 30s.
	Timeout time.Duration
	// DialTimeout bounds connecting; a refused or timed-out dial is a 502.
	// Default 2s.
	DialTimeout time.Duration
	// MaxConns caps pooled upstream connections. Default 1024.
	MaxConns int
	// MaxBufferedBody is the most of a request body Tollgate reads into
	// memory to evaluate a body condition or a body amount. Default 1 MiB.
	MaxBufferedBody int
}

// Redis holds the connection to the quota store.
type Redis struct {
	URL string // TOLLGATE_REDIS_URL, default redis://127.0.0.1:6379/0
	// Timeout is the longest a request waits on Redis before the feature's
	// fail mode applies. Default 50ms.
	Timeout time.Duration
	// PoolSize is go-redis' pool size. Default 10 per CPU (go-redis default)
	// when 0.
	PoolSize int
	// Pipeline sends the per-request quota scripts of all requests over
	// one shared connection, written and read in batches (quota's
	// pipeline). Default true; false gives each call a pooled connection.
	Pipeline bool
	// ReconcileInterval is how often usage counted locally while Redis was
	// unreachable is pushed back. Default 1s.
	ReconcileInterval time.Duration
}

// Database is the billing store (PostgreSQL).
type Database struct {
	URL string // TOLLGATE_DATABASE_URL
}

// Admin guards the admin API.
type Admin struct {
	// Token is TOLLGATE_ADMIN_TOKEN, else the variable admin.token_env
	// names (which must then be set). Empty, with neither configured,
	// disables the admin API (401 always).
	Token string
}

// TenantSource says where the tenant of a request comes from.
type TenantSource string

const (
	// TenantAPIKey: a Tollgate-issued API key as "Authorization: Bearer <key>".
	TenantAPIKey TenantSource = "api_key"
	// TenantHeader: a trusted header set by something in front of Tollgate.
	TenantHeader TenantSource = "header"
	// TenantJWT: a claim of an HS256 or RS256 JSON Web Token.
	TenantJWT TenantSource = "jwt"
)

// TenantIdentification configures how the proxy finds a request's tenant.
type TenantIdentification struct {
	Source TenantSource
	// Header is the header to read: Authorization for api_key and jwt
	// (default), X-Tenant-Id for header (default).
	Header string
	// JWT settings, only for Source == TenantJWT.
	JWT JWT
}

// JWT verifies dashboard or gateway tokens.
type JWT struct {
	Algorithm string // "HS256" or "RS256"
	Claim     string // claim holding the tenant id, default "tenant_id"
	// Secret is the HS256 key (from the secret_env environment variable).
	Secret []byte
	// PublicKeyPEM is the RS256 key (from public_key_file).
	PublicKeyPEM []byte
	Issuer       string // optional; checked when set
	Audience     string // optional; checked when set
}

// FeatureKind is what a feature counts.
type FeatureKind uint8

const (
	// Metered features count per billing period and reset at its end
	// (messages, api_calls, ai_tokens).
	Metered FeatureKind = iota + 1
	// Gauge features count live resources that rise on create and fall on
	// delete (agents, channels, kb_articles, seats).
	Gauge
	// Flag features are on or off per plan (integrations, ai_auto_reply).
	Flag
)

func (k FeatureKind) String() string {
	switch k {
	case Metered:
		return "metered"
	case Gauge:
		return "gauge"
	case Flag:
		return "flag"
	}
	return "unknown"
}

// FailMode is what happens to a request when Redis cannot answer in time.
type FailMode uint8

const (
	// FailOpen forwards the request and counts it locally; the count is
	// reconciled into Redis when it is reachable again.
	FailOpen FailMode = iota + 1
	// FailClosed answers 503 JSON without forwarding.
	FailClosed
)

func (m FailMode) String() string {
	switch m {
	case FailOpen:
		return "open"
	case FailClosed:
		return "closed"
	}
	return "unknown"
}

// QuotaMode is how a metered feature's limit is enforced.
type QuotaMode uint8

const (
	// ModeExact reserves every request in Redis with one script call.
	ModeExact QuotaMode = iota + 1
	// ModeLease leases chunks of quota per instance and admits from them
	// locally; it never admits past the limit but costs far fewer Redis
	// calls. Metered features only.
	ModeLease
)

func (m QuotaMode) String() string {
	switch m {
	case ModeExact:
		return "exact"
	case ModeLease:
		return "lease"
	}
	return "unknown"
}

// Feature is one thing a plan meters or enables.
type Feature struct {
	Name string
	Kind FeatureKind
	// Index is the feature's position in Config.Features; hot paths use it
	// instead of map lookups.
	Index int

	// Warning is the fraction of the limit at which responses carry
	// X-Quota-Warning: true. Default 0.8. Metered and gauge only.
	Warning float64
	// Grace is the ceiling as a multiple of the limit: between the limit and
	// limit×Grace requests still pass (with the warning). Default 1.0 (hard
	// limit); seed 002 uses 1.10. Must be >= 1.
	Grace float64
	// FailMode defaults to open for metered, closed for gauges and flags.
	FailMode FailMode
	// Mode is how a metered feature is enforced: ModeExact (default, one
	// Redis call per request) or ModeLease (instances lease chunks of quota
	// and admit locally). Always ModeExact for gauges and flags; the zero
	// value (configurations built in code) means ModeExact.
	Mode QuotaMode

	// ErrorCode is the error a request gets when the feature stops it:
	// "limit_exceeded" for metered and gauges, "feature_locked" (default) or
	// "feature_not_available" for flags.
	ErrorCode string
	// Message is the error message template. Placeholders: {limit},
	// {current}, {plan} (display name), {feature}.
	// Defaults: metered "Monthly {feature} limit of {limit} reached. Upgrade
	// your plan."; gauge "Upgrade to add more {feature}. Current plan allows
	// {limit} {feature}."; flag "{feature} is not available on the {plan}
	// plan.".
	Message string
}

// Unlimited is the limit value of a plan that does not cap a feature.
const Unlimited int64 = -1

// maxAmount bounds plan limits, their ceilings (limit × Grace), fixed meter
// amounts and body amounts: Redis' Lua reads numbers as doubles, which are
// exact only up to 2^53, and the quota scripts report a limit or counter
// beyond it as malformed.
const maxAmount = 1<<53 - 1

// maxAmountText is maxAmount as error messages state it.
const maxAmountText = "9007199254740991 (2^53-1)"

// ceiling is the most usage a limit admits with grace, computed as the
// quota scripts compute it: floor(limit × grace + 1e-9). A grace below 1
// counts as 1, as in the quota package.
func ceiling(limit int64, grace float64) float64 {
	if !(grace >= 1) {
		grace = 1
	}
	return math.Floor(float64(limit)*grace + 1e-9)
}

// maxLimit is the largest limit whose ceiling with grace stays within
// maxAmount.
func maxLimit(grace float64) int64 {
	if !(grace > 1) {
		return maxAmount
	}
	l := int64(maxAmount / grace)
	for l > 0 && ceiling(l, grace) > maxAmount {
		l--
	}
	return l
}

// Plan is something a tenant subscribes to.
type Plan struct {
	Slug string // "free", "mini", "pro"
	Name string // display name used in errors: "Free", "Mini", "Pro"
	// PriceMinor is the monthly base price in minor units of Currency.
	PriceMinor int64
	Currency   string // ISO 4217, upper case, e.g. "USD"
	// Limits holds a limit for every metered and gauge feature, indexed by
	// Feature.Index (flag entries unused). Unlimited means no cap.
	Limits []int64
	// Flags holds, indexed by Feature.Index, whether a flag feature is
	// enabled (non-flag entries unused).
	Flags []bool
}

// Limit returns the plan's limit for f.
func (p *Plan) Limit(f *Feature) int64 { return p.Limits[f.Index] }

// Enabled reports whether the plan enables flag f.
func (p *Plan) Enabled(f *Feature) bool { return p.Flags[f.Index] }

// AmountSource says where a metered route's amount comes from.
type AmountSource uint8

const (
	// AmountFixed: Route.Meter.Amount (+1 on create, -1 on delete, or any
	// other fixed integer).
	AmountFixed AmountSource = iota + 1
	// AmountBodyField: an integer field of the JSON request body, known
	// before forwarding, so it is reserved like a fixed amount.
	AmountBodyField
	// AmountResponseHeader: an integer header of the upstream response
	// (e.g. X-Tokens-Used). Only known afterwards: the request is admitted
	// while usage is below the ceiling and the amount is charged on 2xx.
	AmountResponseHeader
)

// Meter is what a route counts.
type Meter struct {
	Feature *Feature
	Source  AmountSource
	Amount  int64  // for AmountFixed; negative only for gauges
	Field   string // JSON path (dot separated) for AmountBodyField
	Header  string // header name for AmountResponseHeader
}

// Requirement is a flag a route needs, optionally only when the JSON body
// matches a condition (e.g. a Free tenant may create a widget channel, but
// any other type needs the integrations flag).
type Requirement struct {
	Flag *Feature
	When *BodyCondition // nil: always required
}

// CondOp is a body condition's comparison.
type CondOp uint8

const (
	CondEquals CondOp = iota + 1
	CondNotEquals
	CondIn
	CondNotIn
	CondExists
	CondNotExists
)

// BodyCondition tests one field of the JSON request body.
type BodyCondition struct {
	Field string // dot-separated path, e.g. "type" or "channel.kind"
	Op    CondOp
	// Values are the JSON scalars to compare with, each as its canonical
	// JSON text for numbers/booleans/null and the plain string for strings.
	Values []string
}

// Route is one metered or gated endpoint of the upstream API.
type Route struct {
	Method  string // upper case; "*" matches any method
	Pattern string // as written, e.g. /api/v1/agents/{id}; the router decodes its escapes
	Meter   *Meter // nil when the route only requires flags
	Require []Requirement
	// NeedsBody is true when a body condition or a body amount has to read
	// the request body.
	NeedsBody bool
}
