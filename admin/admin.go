// Package admin serves the operator API on the API listener: creating
// tenants and moving them between plans. Every change is written through to
// Redis in the same request, so the proxy enforces it on the next request.
package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
)

// Entitlements is the part of the quota store the admin API writes.
type Entitlements interface {
	PutEntitlement(ctx context.Context, e quota.Entitlement) error
	GetEntitlement(ctx context.Context, tenantID string) (map[string]string, bool, error)
}

// API is the admin HTTP API.
type API struct {
	cfg   *config.Config
	rdb   redis.UniversalClient
	ents  Entitlements
	log   *zap.Logger
	token []byte
	now   func() time.Time
}

// New returns the admin API. An empty admin token disables it: every call
// answers 401.
func New(cfg *config.Config, rdb redis.UniversalClient, ents Entitlements, log *zap.Logger) *API {
	if log == nil {
		log = zap.NewNop()
	}
	return &API{cfg: cfg, rdb: rdb, ents: ents, log: log, token: []byte(cfg.Admin.Token), now: time.Now}
}

// Register adds the admin routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.Handle("POST /admin/v1/tenants", a.auth(a.createTenant))
	mux.Handle("GET /admin/v1/tenants/{id}", a.auth(a.getTenant))
	mux.Handle("PUT /admin/v1/tenants/{id}/plan", a.auth(a.setPlan))
}

// maxBody caps admin request bodies; they are a few small fields.
const maxBody = 64 << 10

func (a *API) auth(next func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if len(a.token) == 0 || !ok || subtle.ConstantTimeCompare([]byte(got), a.token) != 1 {
			WriteError(w, http.StatusUnauthorized, "unauthorized", "Send Authorization: Bearer <admin token>.")
			return
		}
		next(w, r)
	})
}

// tenantKey holds the tenant's descriptive record; the entitlement hash is
// rewritten whole on every plan change, so the name lives beside it.
func tenantKey(id string) string { return "tg:{" + id + "}:tenant" }

type createTenantRequest struct {
	Name string `json:"name"`
	Plan string `json:"plan"`
}

type tenantResponse struct {
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Plan   string `json:"plan"`
	APIKey string `json:"api_key,omitempty"`
}

func (a *API) createTenant(w http.ResponseWriter, r *http.Request) {
	var req createTenantRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" || len(req.Name) > 200 {
		WriteError(w, http.StatusBadRequest, "invalid_name", "name is required: 1 to 200 characters.")
		return
	}
	if req.Plan == "" {
		req.Plan = a.cfg.DefaultPlan
	}
	plan, ok := a.cfg.PlanBySlug[req.Plan]
	if !ok {
		a.writeInvalidPlan(w, req.Plan)
		return
	}
	id, err := newTenantID()
	if err != nil {
		a.internal(w, "create tenant", err)
		return
	}
	ctx := r.Context()
	if err := a.rdb.HSet(ctx, tenantKey(id), "name", req.Name, "created_at", a.now().UTC().Format(time.RFC3339)).Err(); err != nil {
		a.unavailable(w, "create tenant", err)
		return
	}
	if err := a.ents.PutEntitlement(ctx, quota.Entitlement{TenantID: id, Plan: plan, Status: "active"}); err != nil {
		a.unavailable(w, "create tenant", err)
		return
	}
	key, err := tenant.IssueKey(ctx, a.rdb, id)
	if err != nil {
		a.unavailable(w, "create tenant", err)
		return
	}
	// A proxy may have cached this id as unknown (trusted-header tenants);
	// the new tenant must work on its first request.
	if err := tenant.Invalidate(ctx, a.rdb, id); err != nil {
		a.log.Warn("invalidate new tenant", zap.String("tenant", id), zap.Error(err))
	}
	a.log.Info("tenant created", zap.String("tenant", id), zap.String("plan", plan.Slug))
	writeJSON(w, http.StatusCreated, tenantResponse{ID: id, Plan: plan.Slug, APIKey: key})
}

func (a *API) getTenant(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ent, found, err := a.ents.GetEntitlement(r.Context(), id)
	if err != nil {
		a.unavailable(w, "get tenant", err)
		return
	}
	if !found {
		writeTenantNotFound(w, id)
		return
	}
	name, err := a.rdb.HGet(r.Context(), tenantKey(id), "name").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		a.unavailable(w, "get tenant", err)
		return
	}
	writeJSON(w, http.StatusOK, tenantResponse{ID: id, Name: name, Plan: ent["plan"]})
}

type setPlanRequest struct {
	Plan string `json:"plan"`
}

// setPlan moves a tenant to another plan. The billing period (anchor) and
// this period's usage are kept: only limits and flags change.
func (a *API) setPlan(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req setPlanRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	plan, ok := a.cfg.PlanBySlug[req.Plan]
	if !ok {
		a.writeInvalidPlan(w, req.Plan)
		return
	}
	ctx := r.Context()
	ent, found, err := a.ents.GetEntitlement(ctx, id)
	if err != nil {
		a.unavailable(w, "set plan", err)
		return
	}
	if !found {
		writeTenantNotFound(w, id)
		return
	}
	anchor, _ := strconv.ParseInt(ent["anchor"], 10, 64)
	e := quota.Entitlement{TenantID: id, Plan: plan, Status: ent["status"], Anchor: anchor}
	if err := a.ents.PutEntitlement(ctx, e); err != nil {
		a.unavailable(w, "set plan", err)
		return
	}
	a.log.Info("tenant plan changed", zap.String("tenant", id), zap.String("from", ent["plan"]), zap.String("to", plan.Slug))
	writeJSON(w, http.StatusOK, tenantResponse{ID: id, Plan: plan.Slug})
}

func (a *API) writeInvalidPlan(w http.ResponseWriter, slug string) {
	slugs := make([]string, len(a.cfg.Plans))
	for i, p := range a.cfg.Plans {
		slugs[i] = p.Slug
	}
	WriteError(w, http.StatusBadRequest, "invalid_plan",
		fmt.Sprintf("plan %q is not one of %s.", slug, strings.Join(slugs, ", ")))
}

func writeTenantNotFound(w http.ResponseWriter, id string) {
	WriteError(w, http.StatusNotFound, "tenant_not_found", fmt.Sprintf("No tenant has id %q.", id))
}

func (a *API) unavailable(w http.ResponseWriter, op string, err error) {
	a.log.Error(op, zap.Error(err))
	WriteError(w, http.StatusServiceUnavailable, "store_unavailable", "The tenant store is unreachable. Retry shortly.")
}

func (a *API) internal(w http.ResponseWriter, op string, err error) {
	a.log.Error(op, zap.Error(err))
	WriteError(w, http.StatusInternalServerError, "internal_error", "Something went wrong on our side.")
}

func newTenantID() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new tenant id: %w", err)
	}
	return "ten_" + hex.EncodeToString(b[:]), nil
}

// decodeJSON reads one JSON object with only known fields. It answers the
// request itself when the body is not acceptable.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Send Content-Type: application/json.")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			WriteError(w, http.StatusRequestEntityTooLarge, "body_too_large", "Request body is larger than 64 KiB.")
			return false
		}
		WriteError(w, http.StatusBadRequest, "invalid_json", "Request body is not valid JSON for this endpoint: "+err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		WriteError(w, http.StatusBadRequest, "invalid_json", "Request body must hold exactly one JSON object.")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes Tollgate's JSON error shape {"error","message"}.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{code, msg})
}
