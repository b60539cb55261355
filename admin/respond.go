package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
)

// maxBody caps admin request bodies; they are a few small fields.
const maxBody = 64 << 10

// decodeJSON reads one JSON object with only known fields. It answers the
// request itself when the body is not acceptable. A Content-Type must be
// application/json, in any case, parameters allowed; none is read as JSON.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if !jsonContentType(r.Header.Get("Content-Type")) {
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

// storable reports whether PostgreSQL can store s as text: valid UTF-8
// without NUL bytes.
func storable(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// unstorableParam names the first path id or query parameter whose value
// PostgreSQL could not store, "" when there is none. Such a value names
// nothing and is the caller's mistake, answered 400 invalid_query before a
// handler passes it on.
func unstorableParam(r *http.Request) string {
	for _, name := range []string{"id", "key_id"} {
		if !storable(r.PathValue(name)) {
			return "path parameter " + name
		}
	}
	for name, vs := range r.URL.Query() {
		for _, v := range vs {
			if !storable(v) {
				return fmt.Sprintf("query parameter %q", name)
			}
		}
	}
	return ""
}

// jsonContentType reports whether ct names JSON: empty, or the media type
// application/json compared whole and case-insensitively, with any
// parameters (charset=utf-8).
func jsonContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes Tollgate's JSON error shape {"error","message"}.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: code, Message: msg})
}

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	// Set on a 503 after a committed change, so the caller keeps what it
	// would otherwise lose: the new tenant's id and its one-time key.
	ID     string `json:"id,omitempty"`
	APIKey string `json:"api_key,omitempty"`
}

// storeError answers a billing error: the store's families map to 4xx;
// anything else means PostgreSQL did not answer (or failed mid-way, in
// which case the transaction was rolled back), so nothing changed.
// invalidCode is the 400 code for ErrInvalid from this endpoint.
func (a *API) storeError(w http.ResponseWriter, r *http.Request, op, invalidCode string, err error) {
	switch {
	case errors.Is(err, billing.ErrTenantNotFound):
		WriteError(w, http.StatusNotFound, "tenant_not_found", fmt.Sprintf("No tenant has id %q.", r.PathValue("id")))
	case errors.Is(err, billing.ErrKeyNotFound):
		WriteError(w, http.StatusNotFound, "key_not_found",
			fmt.Sprintf("Tenant %q has no API key with id %q.", r.PathValue("id"), r.PathValue("key_id")))
	case errors.Is(err, billing.ErrNoSubscription):
		WriteError(w, http.StatusNotFound, "no_subscription", fmt.Sprintf("Tenant %q has no live subscription.", r.PathValue("id")))
	case errors.Is(err, billing.ErrPlanNotFound), errors.Is(err, billing.ErrPlanInactive):
		a.writeInvalidPlan(r.Context(), w, err)
	case errors.Is(err, billing.ErrConflict):
		WriteError(w, http.StatusConflict, "conflict", "A concurrent change conflicts with this one. Read the current state and retry.")
	case errors.Is(err, billing.ErrInvalid):
		WriteError(w, http.StatusBadRequest, invalidCode, err.Error())
	default:
		a.log.Error(op, zap.Error(err))
		WriteError(w, http.StatusServiceUnavailable, "store_unavailable",
			"The billing store (PostgreSQL) is unreachable; nothing was changed. Retry shortly.")
	}
}

// redisError answers a failed write-through after a committed change and
// queues the tenant for Run.
func (a *API) redisError(w http.ResponseWriter, op, tenantID string, err error, extra errorBody) {
	a.log.Error(op+": write-through to redis", zap.String("tenant", tenantID), zap.Error(err))
	a.queue(tenantID)
	extra.Error = "store_unavailable"
	extra.Message = "The change is saved in the billing store but Redis is unreachable; it will reach the proxies when Redis is back."
	writeJSON(w, http.StatusServiceUnavailable, extra)
}

// writeInvalidPlan names the plans that can be chosen, read from
// PostgreSQL since admins may add or retire plans.
func (a *API) writeInvalidPlan(ctx context.Context, w http.ResponseWriter, cause error) {
	msg := "plan is not an active plan."
	if errors.Is(cause, billing.ErrPlanInactive) {
		msg = "plan is no longer offered."
	}
	if plans, err := a.db.ListPlans(ctx, true); err == nil {
		slugs := make([]string, len(plans))
		for i, p := range plans {
			slugs[i] = p.Slug
		}
		msg += " Choose one of " + strings.Join(slugs, ", ") + "."
	}
	WriteError(w, http.StatusBadRequest, "invalid_plan", msg)
}

// writeCtx outlives the request: once PostgreSQL has committed, a client
// hanging up must not cut the write-through short.
func writeCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
}

// ts formats instants the way the API answers them.
func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func tsPtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := ts(*t)
	return &s
}
