// Package account is the tenant-facing billing API: a tenant (with one of
// its API keys, or a dashboard token naming it) reads the plans on offer,
// its subscription, its usage against its plan's limits and its invoices.
//
// The API is served at the API listener's root (Register) and, through the
// proxy, under the configured mount prefixes (the API is an http.Handler
// and a proxy.MountMatcher, for proxy.WithMount), so paths that products
// already document — /api/v1/billing/..., /billing/..., /v1/workspace/... —
// are answered verbatim. PostgreSQL (package billing) is the source of
// truth; live usage comes from Redis when it answers. docs/account.md
// describes the answers and the authentication rules.
package account
