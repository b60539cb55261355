package account

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestAuth(t *testing.T) {
	e := newEnv(t, envOpts{})
	a, b := e.tenantOn("mini"), e.tenantOn("free")
	revoked := e.tenantOn("mini")
	keys, err := e.db.ListAPIKeys(testCtx(t), revoked.ID)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	if _, err := e.db.RevokeAPIKey(testCtx(t), revoked.ID, keys[0].ID); err != nil {
		t.Fatal(err)
	}
	unknownKey := "tg_" + "0000000000000000000000000000000000000000"
	forA := signToken(t, []string{a.ID})
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"tenants": []string{a.ID}})
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	otherSecret, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"tenants": []string{a.ID}}).SignedString([]byte("not the secret"))

	cases := []struct {
		name   string
		path   string
		cred   string // sent as Bearer unless raw is set
		raw    string // the whole Authorization value
		hdr    []string
		status int
		code   string
	}{
		{"no credential", "/subscription", "", "", nil, 401, "unauthorized"},
		{"bearer without credential", "/subscription", "", "Bearer ", nil, 401, "unauthorized"},
		{"basic scheme", "/subscription", "", "Basic dXNlcjpwYXNz", nil, 401, "unauthorized"},
		{"two credentials", "/subscription", "", "Bearer a b", nil, 401, "unauthorized"},
		{"garbage credential", "/subscription", "not-a-key", "", nil, 401, "unauthorized"},
		{"unknown key", "/subscription", unknownKey, "", nil, 401, "unauthorized"},
		{"revoked key", "/subscription", revoked.key, "", nil, 401, "unauthorized"},
		{"revoked key on plans", "/plans", revoked.key, "", nil, 401, "unauthorized"},
		{"key", "/subscription", a.key, "", nil, 200, ""},
		{"key, lower-case scheme", "/subscription", "", "bearer " + a.key, nil, 200, ""},
		{"key with its own tenant", "/subscription", a.key, "", []string{"X-Tenant-Id", a.ID}, 200, ""},
		{"key with another tenant", "/subscription", a.key, "", []string{"X-Tenant-Id", b.ID}, 403, "forbidden"},
		{"key with another tenant on plans", "/plans", a.key, "", []string{"X-Tenant-Id", b.ID}, 403, "forbidden"},
		{"key with another tenant on invoices", "/invoices", a.key, "", []string{"X-Tenant-Id", b.ID}, 403, "forbidden"},
		{"malformed tenant header", "/subscription", a.key, "", []string{"X-Tenant-Id", "a{b}"}, 400, "invalid_request"},
		{"two tenant headers", "/subscription", a.key, "", []string{"X-Tenant-Id", a.ID, "X-Tenant-Id", a.ID}, 400, "invalid_request"},
		{"token for the tenant", "/usage", forA, "", []string{"X-Tenant-Id", a.ID}, 200, ""},
		{"token as one string", "/subscription", signToken(t, a.ID), "", []string{"X-Tenant-Id", a.ID}, 200, ""},
		{"token for another tenant", "/subscription", forA, "", []string{"X-Tenant-Id", b.ID}, 403, "forbidden"},
		{"token for another tenant on plans", "/plans", forA, "", []string{"X-Tenant-Id", b.ID}, 403, "forbidden"},
		{"token listing none", "/subscription", signToken(t, []string{}), "", []string{"X-Tenant-Id", a.ID}, 403, "forbidden"},
		{"token without tenant header", "/subscription", forA, "", nil, 400, "invalid_request"},
		{"token without tenant header on invoices", "/invoices", forA, "", nil, 400, "invalid_request"},
		{"token without tenant header on plans", "/plans", forA, "", nil, 200, ""},
		{"token for a tenant that does not exist", "/subscription", signToken(t, []string{"ten_ghost"}), "", []string{"X-Tenant-Id", "ten_ghost"}, 404, "tenant_not_found"},
		{"expired token", "/subscription", signToken(t, []string{a.ID}, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), "", []string{"X-Tenant-Id", a.ID}, 401, "unauthorized"},
		{"token without tenants claim", "/subscription", signToken(t, []string{a.ID}, func(c jwt.MapClaims) { delete(c, "tenants") }), "", []string{"X-Tenant-Id", a.ID}, 401, "unauthorized"},
		{"token with a non-string tenant", "/subscription", signToken(t, []any{a.ID, 7}), "", []string{"X-Tenant-Id", a.ID}, 401, "unauthorized"},
		{"token signed with another secret", "/subscription", otherSecret, "", []string{"X-Tenant-Id", a.ID}, 401, "unauthorized"},
		{"alg none", "/subscription", noneTok, "", []string{"X-Tenant-Id", a.ID}, 401, "unauthorized"},
	}
	for _, c := range cases {
		for where, base := range map[string]string{"root": e.apiURL, "proxy": e.proxyURL + "/api/v1/billing"} {
			t.Run(c.name+"@"+where, func(t *testing.T) {
				hdr := c.hdr
				cred := c.cred
				if c.raw != "" {
					hdr = append([]string{"Authorization", c.raw}, hdr...)
				}
				r := e.get(base, c.path, cred, hdr...)
				if c.status == http.StatusOK {
					if r.status != http.StatusOK {
						t.Fatalf("status %d: %s", r.status, r.body)
					}
					return
				}
				wantError(t, r, c.status, c.code)
				if c.status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
			})
		}
	}
}

// With no dashboard_jwt configured, tokens are refused and keys still work.
func TestAuthWithoutDashboardTokens(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.tenantOn("mini")
	cfg := *e.cfg
	cfg.Account.DashboardJWT = nil
	api, err := New(&cfg, e.db, e.quota)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cred   string
		hdr    []string
		status int
	}{
		{signToken(t, []string{a.ID}), []string{"X-Tenant-Id", a.ID}, http.StatusUnauthorized},
		{a.key, nil, http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, "/subscription", nil)
		req.Header.Set("Authorization", "Bearer "+c.cred)
		for i := 0; i+1 < len(c.hdr); i += 2 {
			req.Header.Set(c.hdr[i], c.hdr[i+1])
		}
		w := httptest.NewRecorder()
		api.ServeHTTP(w, req)
		if w.Code != c.status {
			t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body)
		}
	}
}
