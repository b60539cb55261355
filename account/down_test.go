package account

import (
	"net/http"
	"testing"
)

// PostgreSQL down: every endpoint, everywhere, answers 503 store_unavailable
// as JSON at once, while the proxy keeps enforcing from Redis.
func TestPostgresDown(t *testing.T) {
	e := newEnv(t, envOpts{pgDown: true})
	a := e.tenantOn("free")
	tok := signToken(t, []string{a.ID})
	for name, base := range e.bases() {
		for _, p := range tenantPaths {
			t.Run(name+p.path, func(t *testing.T) {
				wantError(t, e.get(base, p.path, a.key), http.StatusServiceUnavailable, "store_unavailable")
				wantError(t, e.get(base, p.path, tok, "X-Tenant-Id", a.ID), http.StatusServiceUnavailable, "store_unavailable")
			})
		}
	}
	// Auth failures that need no database are still told apart.
	wantError(t, e.get(e.apiURL, "/subscription", ""), http.StatusUnauthorized, "unauthorized")
	wantError(t, e.get(e.apiURL, "/subscription", tok, "X-Tenant-Id", "ten_other"), http.StatusForbidden, "forbidden")

	r := e.do(http.MethodPost, e.proxyURL+"/api/v1/messages", a.key)
	if r.status != http.StatusCreated || r.header.Get("X-Upstream") != "yes" {
		t.Fatalf("metered request with PostgreSQL down: %d %s", r.status, r.body)
	}
	if got := r.header.Get("X-Quota-Remaining"); got != "9" {
		t.Fatalf("X-Quota-Remaining = %q, want 9 (enforced from Redis)", got)
	}
}
