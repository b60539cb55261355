package admin

import (
	"net/http"
	"strconv"

	"github.com/tollgate/tollgate/billing"
)

type auditResponse struct {
	ID        int64          `json:"id"`
	Actor     string         `json:"actor"`
	Action    string         `json:"action"`
	TenantID  string         `json:"tenant_id,omitempty"`
	Detail    map[string]any `json:"detail"`
	CreatedAt string         `json:"created_at"`
}

// audit lists audit entries newest first, optionally of one tenant.
func (a *API) audit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	aq := billing.AuditQuery{TenantID: q.Get("tenant_id")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 500 {
			WriteError(w, http.StatusBadRequest, "invalid_query", "limit must be an integer from 1 to 500.")
			return
		}
		aq.Limit = n
	}
	entries, err := a.db.AuditEntries(r.Context(), aq)
	if err != nil {
		a.storeError(w, r, "audit", "invalid_query", err)
		return
	}
	out := struct {
		Entries []auditResponse `json:"entries"`
	}{Entries: make([]auditResponse, len(entries))}
	for i, e := range entries {
		out.Entries[i] = auditResponse{ID: e.ID, Actor: e.Actor, Action: e.Action, TenantID: e.TenantID,
			Detail: e.Detail, CreatedAt: ts(e.CreatedAt)}
	}
	writeJSON(w, http.StatusOK, out)
}
