package config

// Account configures the tenant-facing billing API (package account). It is
// served at the API listener's root and, through the proxy, under Mounts.
type Account struct {
	// Mounts are proxy path prefixes (e.g. /api/v1/billing) under which the
	// proxy answers the billing API's GET routes itself instead of
	// forwarding them. Each starts with "/", has no trailing slash and is
	// not "/" alone. Empty: the proxy serves none.
	Mounts []string
	// DashboardJWT verifies dashboard tokens; nil when not configured, in
	// which case only tenant API keys are accepted. Claim is the claim
	// listing the tenant ids a token may act for (tenants_claim, default
	// "tenants").
	DashboardJWT *JWT
}
