package account

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/tenant"
)

// principal is who a request acts for.
type principal struct {
	// tenant is the tenant the request reads; zero for a dashboard token
	// on a route that needs none (GET /plans without X-Tenant-Id).
	tenant billing.Tenant
}

type authedFunc func(w http.ResponseWriter, r *http.Request, p principal)

// authed authenticates the request before fn. needTenant says the route
// reads one tenant's data, so a dashboard token must name it.
func (a *API) authed(needTenant bool, fn authedFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One deadline for the whole request: authentication and the answer
		// together never wait on a dead database longer than the timeout.
		ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
		defer cancel()
		r = r.WithContext(ctx)
		p, e := a.authenticate(r, needTenant)
		if e != nil {
			writeAPIError(w, e)
			return
		}
		fn(w, r, p)
	})
}

const missingCredential = "Send Authorization: Bearer <API key>, or a dashboard token with X-Tenant-Id."

// authenticate applies the rules of docs/account.md: an API key acts for
// its own tenant only; a dashboard token acts for the tenant X-Tenant-Id
// names, which the token must list. Another tenant's data is never
// visible: asking for it is a 403.
func (a *API) authenticate(r *http.Request, needTenant bool) (principal, *apiError) {
	authz := r.Header.Values("Authorization")
	if len(authz) == 0 {
		return principal{}, errUnauthorized(missingCredential)
	}
	if len(authz) > 1 {
		return principal{}, errUnauthorized("Send exactly one Authorization header.")
	}
	cred, err := parseBearer(authz[0])
	switch {
	case errors.Is(err, errNoCredential):
		return principal{}, errUnauthorized(missingCredential)
	case err != nil:
		return principal{}, errUnauthorized("The Authorization header must be Bearer <API key or dashboard token>.")
	}
	want, e := requestedTenant(r)
	if e != nil {
		return principal{}, e
	}

	switch {
	case isAPIKey(cred):
		return a.byAPIKey(r, cred, want)
	case a.jwt != nil && plausibleJWT(cred):
		return a.byToken(r, cred, want, needTenant)
	case plausibleJWT(cred):
		return principal{}, errUnauthorized("Dashboard tokens are not accepted here; send an API key.")
	}
	return principal{}, errUnauthorized("The credential is not an API key or a dashboard token.")
}

// requestedTenant reads X-Tenant-Id: "" when absent.
func requestedTenant(r *http.Request) (string, *apiError) {
	vals := r.Header.Values("X-Tenant-Id")
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1:
		return "", errInvalidRequest("Send X-Tenant-Id once.")
	case !validTenantID(vals[0]):
		return "", errInvalidRequest("X-Tenant-Id must be a tenant id: 1 to 64 characters of A-Z, a-z, 0-9, _, . and -.")
	}
	return vals[0], nil
}

func (a *API) byAPIKey(r *http.Request, key, want string) (principal, *apiError) {
	ctx, cancel := a.storeCtx(r)
	defer cancel()
	t, err := a.store.TenantByKeyHash(ctx, tenant.HashKey(key))
	switch {
	case errors.Is(err, billing.ErrNotFound), errors.Is(err, billing.ErrInvalid):
		return principal{}, errUnauthorized("The API key is unknown or revoked.")
	case err != nil:
		return principal{}, a.storeError("authenticate api key", err)
	}
	if want != "" && want != t.ID {
		return principal{}, errForbidden("This API key may only read its own tenant.")
	}
	return principal{tenant: t}, nil
}

func (a *API) byToken(r *http.Request, tok, want string, needTenant bool) (principal, *apiError) {
	allowed, err := a.jwt.verify(tok)
	if err != nil {
		return principal{}, errUnauthorized("The dashboard token is malformed, expired or not signed correctly.")
	}
	if want == "" {
		if needTenant {
			return principal{}, errInvalidRequest("X-Tenant-Id is required with a dashboard token.")
		}
		return principal{}, nil
	}
	if !slices.Contains(allowed, want) {
		return principal{}, errForbidden("This token may not act for the tenant named by X-Tenant-Id.")
	}
	if !needTenant {
		return principal{}, nil
	}
	ctx, cancel := a.storeCtx(r)
	defer cancel()
	t, err := a.store.GetTenant(ctx, want)
	switch {
	case errors.Is(err, billing.ErrTenantNotFound):
		return principal{}, errTenantNotFound
	case err != nil:
		return principal{}, a.storeError("authenticate dashboard token", err)
	}
	return principal{tenant: t}, nil
}
