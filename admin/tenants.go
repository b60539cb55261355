package admin

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
)

type createTenantRequest struct {
	Name string `json:"name"`
	Plan string `json:"plan"`
}

type tenantResponse struct {
	ID     string `json:"id"`
	Plan   string `json:"plan"`
	APIKey string `json:"api_key,omitempty"`
}

// createTenant stores the tenant, its first key, a manual subscription for
// the current calendar month and an audit row in one transaction, then
// writes it through.
func (a *API) createTenant(w http.ResponseWriter, r *http.Request) {
	var req createTenantRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || utf8.RuneCountInString(req.Name) > 200 || !storable(req.Name) {
		WriteError(w, http.StatusBadRequest, "invalid_name", "name is required: 1 to 200 characters, without NUL.")
		return
	}
	if req.Plan == "" {
		req.Plan = a.cfg.DefaultPlan
	}
	if !storable(req.Plan) {
		a.writeInvalidPlan(r.Context(), w, billing.ErrPlanNotFound)
		return
	}
	t, key, err := a.db.CreateTenant(r.Context(), req.Name, req.Plan)
	if err != nil {
		a.storeError(w, r, "create tenant", "invalid_name", err)
		return
	}
	ctx, cancel := writeCtx(r)
	defer cancel()
	// Invalidate: a proxy may have cached this id as unknown (trusted-header
	// tenants); the new tenant must work on its first request.
	if err := a.sync(ctx, t.ID, true); err != nil {
		a.redisError(w, "create tenant", t.ID, err, errorBody{ID: t.ID, APIKey: key})
		return
	}
	a.log.Info("tenant created", zap.String("tenant", t.ID), zap.String("plan", t.Plan))
	writeJSON(w, http.StatusCreated, tenantResponse{ID: t.ID, Plan: t.Plan, APIKey: key})
}

type setPlanRequest struct {
	Plan string `json:"plan"`
}

// setPlan is an operator override of the live subscription's plan: the
// period and this period's usage are kept, nothing is prorated.
func (a *API) setPlan(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req setPlanRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if !storable(req.Plan) {
		a.writeInvalidPlan(r.Context(), w, billing.ErrPlanNotFound)
		return
	}
	// Checked before the tenant so an unknown plan is a 400 whatever the id.
	if p, err := a.db.GetPlan(r.Context(), req.Plan); err != nil || !p.Active {
		if err == nil {
			err = billing.ErrPlanInactive
		}
		a.storeError(w, r, "set plan", "invalid_plan", err)
		return
	}
	pc, err := a.db.SetPlan(r.Context(), id, req.Plan, actor)
	if err != nil {
		a.storeError(w, r, "set plan", "invalid_plan", err)
		return
	}
	ctx, cancel := writeCtx(r)
	defer cancel()
	// Written through even when unchanged: a PUT repairs a stale Redis.
	if err := a.sync(ctx, id, false); err != nil {
		a.redisError(w, "set plan", id, err, errorBody{})
		return
	}
	if pc.Changed {
		a.log.Info("tenant plan changed", zap.String("tenant", id), zap.String("from", pc.From), zap.String("to", req.Plan))
	}
	writeJSON(w, http.StatusOK, tenantResponse{ID: id, Plan: pc.Subscription.Plan})
}

type tenantSummary struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Plan      *string `json:"plan"`   // null without a live subscription
	Status    string  `json:"status"` // the subscription's; "none" when it never subscribed
	CreatedAt string  `json:"created_at"`
}

func summary(t billing.Tenant, status string) tenantSummary {
	s := tenantSummary{ID: t.ID, Name: t.Name, Status: status, CreatedAt: ts(t.CreatedAt)}
	if t.Plan != "" {
		s.Plan = &t.Plan
	}
	if s.Status == "" {
		s.Status = "none"
	}
	return s
}

// listTenants pages through tenants in id order; next is the cursor of
// the following page (pass it as after), null on the last one.
func (a *API) listTenants(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 50
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 500 {
			WriteError(w, http.StatusBadRequest, "invalid_query", "limit must be an integer from 1 to 500.")
			return
		}
		limit = n
	}
	rows, err := a.db.ListTenantStatuses(r.Context(), limit, q.Get("after"))
	if err != nil {
		a.storeError(w, r, "list tenants", "invalid_query", err)
		return
	}
	out := struct {
		Tenants []tenantSummary `json:"tenants"`
		Next    *string         `json:"next"`
	}{Tenants: make([]tenantSummary, len(rows))}
	for i, t := range rows {
		out.Tenants[i] = summary(t.Tenant, t.Status)
	}
	if len(rows) == limit {
		out.Next = &rows[len(rows)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getTenant(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	t, err := a.db.GetTenant(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "get tenant", "invalid_query", err)
		return
	}
	sub, err := a.db.LatestSubscription(r.Context(), id)
	if err != nil && !errors.Is(err, billing.ErrNoSubscription) {
		a.storeError(w, r, "get tenant", "invalid_query", err)
		return
	}
	out := struct {
		tenantSummary
		Subscription *subscriptionResponse `json:"subscription"`
	}{tenantSummary: summary(t, sub.Status)}
	if err == nil {
		s := subscriptionJSON(sub)
		out.Subscription = &s
	}
	writeJSON(w, http.StatusOK, out)
}
