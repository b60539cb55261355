package admin

import (
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
)

// maxGauge is the largest count a gauge may be set to: the quota scripts
// read counters as doubles, exact up to 2^53, and refuse larger ones as
// malformed, which would fail every create on the gauge.
const maxGauge = 1<<53 - 1

type gaugeRequest struct {
	Count *int64 `json:"count"`
}

type gaugeResponse struct {
	Feature string `json:"feature"`
	Count   int64  `json:"count"`
}

// setGauge sets a gauge to the live count the product's own database
// holds. Gauges live in Redis only, so Redis is written first and the audit
// row after it: a failure before the write changes nothing.
func (a *API) setGauge(w http.ResponseWriter, r *http.Request) {
	id, name := r.PathValue("id"), r.PathValue("feature")
	f := a.cfg.FeatureByName[name]
	if f == nil || f.Kind != config.Gauge {
		WriteError(w, http.StatusBadRequest, "invalid_feature", fmt.Sprintf("%q is not a gauge feature.", name))
		return
	}
	var req gaugeRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Count == nil || *req.Count < 0 || *req.Count > maxGauge {
		WriteError(w, http.StatusBadRequest, "invalid_json", "count: required, an integer from 0 to 9007199254740991 (2^53-1).")
		return
	}
	if _, err := a.db.GetTenant(r.Context(), id); err != nil {
		a.storeError(w, r, "set gauge", "invalid_json", err)
		return
	}
	ctx, cancel := writeCtx(r)
	defer cancel()
	if err := a.ents.SetGauge(ctx, id, f, *req.Count); err != nil {
		a.log.Error("set gauge", zap.String("tenant", id), zap.Error(err))
		WriteError(w, http.StatusServiceUnavailable, "store_unavailable", "Redis is unreachable; the count was not set. Retry shortly.")
		return
	}
	if err := a.db.RecordAudit(ctx, billing.AuditEntry{Actor: actor, Action: billing.ActionGaugeSet, TenantID: id,
		Detail: map[string]any{"feature": name, "count": *req.Count}}); err != nil {
		a.log.Error("set gauge: audit", zap.String("tenant", id), zap.Error(err))
		WriteError(w, http.StatusServiceUnavailable, "store_unavailable",
			"The count was set in Redis but the audit entry could not be written to the billing store.")
		return
	}
	writeJSON(w, http.StatusOK, gaugeResponse{Feature: name, Count: *req.Count})
}
