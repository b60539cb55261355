package account

import (
	"net/http"
	"testing"

	"github.com/tollgate/tollgate/billing"
)

// Under a mount only the API's GET routes are Tollgate's: other methods and
// paths are the upstream's, metered and forwarded as usual.
func TestMountLeavesTheRestToTheUpstream(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.tenantOn("mini")
	cases := []struct {
		method, path string
		upstream     bool
	}{
		{http.MethodGet, "/billing/plans", false},
		{http.MethodHead, "/billing/subscription", false},
		{http.MethodGet, "/api/v1/billing/checkout-url?plan=mini", true}, // seed 001's own endpoint
		{http.MethodPost, "/billing/checkout", true},                     // seed 002
		{http.MethodPost, "/billing/plans", true},
		{http.MethodPatch, "/v1/workspace/subscription", true}, // seed 003's tier switch
		{http.MethodGet, "/billingx/plans", true},
		{http.MethodGet, "/billing", true},
		{http.MethodGet, "/billing/", true},
		{http.MethodGet, "/billing/plans/extra", true},
		{http.MethodGet, "/api/v1/agents", true},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			before := e.upHits.Load()
			r := e.do(c.method, e.proxyURL+c.path, a.key)
			forwarded := e.upHits.Load() != before
			if forwarded != c.upstream || r.status >= 300 {
				t.Fatalf("forwarded = %v, want %v (status %d: %s)", forwarded, c.upstream, r.status, r.body)
			}
		})
	}
	// Forwarded requests under a mount still need a tenant, like any other.
	r := e.do(http.MethodPost, e.proxyURL+"/billing/checkout", "")
	wantError(t, r, http.StatusUnauthorized, "unauthorized")
}

// The query string survives the prefix being removed; an unnormalised path
// reaches the same endpoint.
func TestMountKeepsQueryAndNormalisesPath(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.tenantOn("mini")
	ctx := testCtx(t)
	for i := 0; i < 3; i++ {
		if _, err := e.db.PutInvoice(ctx, billing.Invoice{TenantID: a.ID, Status: "paid", AmountDueMinor: 1, Currency: "USD"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{"/api/v1/billing/invoices?limit=2", "/api//v1/billing/./invoices?limit=2"} {
		r := e.get(e.proxyURL, path, a.key)
		if n := len(r.json(t)["invoices"].([]any)); r.status != http.StatusOK || n != 2 {
			t.Fatalf("%s: %d, %d invoices: %s", path, r.status, n, r.body)
		}
	}
	wantError(t, e.get(e.proxyURL, "/billing/invoices?limit=500", a.key), http.StatusBadRequest, "invalid_request")
}

// At the API listener's root a wrong method is a JSON 405.
func TestRootMethodNotAllowed(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.do(http.MethodPost, e.apiURL+"/subscription", "")
	wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	if r.header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("Allow = %q", r.header.Get("Allow"))
	}
}
