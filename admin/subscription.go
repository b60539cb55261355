package admin

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/tollgate/tollgate/billing"
)

type subscriptionResponse struct {
	ID                string  `json:"id"`
	TenantID          string  `json:"tenant_id"`
	Plan              string  `json:"plan"`
	Status            string  `json:"status"`
	PeriodStart       string  `json:"period_start"`
	PeriodEnd         string  `json:"period_end"`
	CancelAtPeriodEnd bool    `json:"cancel_at_period_end"`
	LastTierSwitchAt  *string `json:"last_tier_switch_at"`
	Provider          string  `json:"provider"`
	CreatedAt         string  `json:"created_at"`
	UpdatedAt         string  `json:"updated_at"`
}

func subscriptionJSON(s billing.Subscription) subscriptionResponse {
	return subscriptionResponse{ID: s.ID, TenantID: s.TenantID, Plan: s.Plan, Status: s.Status,
		PeriodStart: ts(s.PeriodStart), PeriodEnd: ts(s.PeriodEnd), CancelAtPeriodEnd: s.CancelAtPeriodEnd,
		LastTierSwitchAt: tsPtr(s.LastTierSwitchAt), Provider: s.Provider,
		CreatedAt: ts(s.CreatedAt), UpdatedAt: ts(s.UpdatedAt)}
}

type putSubscriptionRequest struct {
	Plan              string `json:"plan"`
	Status            string `json:"status"`
	PeriodStart       string `json:"period_start"`
	PeriodEnd         string `json:"period_end"`
	CancelAtPeriodEnd bool   `json:"cancel_at_period_end"`
}

var subStatuses = []string{billing.StatusActive, billing.StatusTrialing, billing.StatusPastDue,
	billing.StatusCanceled, billing.StatusUnpaid}

// validate returns the message of the first bad field, naming it.
func (req *putSubscriptionRequest) validate() (start, end time.Time, msg string) {
	if req.Status == "" {
		req.Status = billing.StatusActive
	}
	if !slices.Contains(subStatuses, req.Status) {
		return start, end, fmt.Sprintf("status: %q is not one of %v.", req.Status, subStatuses)
	}
	start, err := time.Parse(time.RFC3339, req.PeriodStart)
	if err != nil {
		return start, end, "period_start: want an RFC 3339 time such as 2026-05-01T00:00:00Z."
	}
	end, err = time.Parse(time.RFC3339, req.PeriodEnd)
	if err != nil {
		return start, end, "period_end: want an RFC 3339 time such as 2026-06-01T00:00:00Z."
	}
	if !end.After(start) {
		return start, end, "period_end: must be after period_start."
	}
	return start.UTC(), end.UTC(), ""
}

// putSubscription creates or replaces the tenant's live subscription with
// explicit period bounds. The proxy's period anchor becomes period_start
// (calendar months when the bounds are exactly one).
func (a *API) putSubscription(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req putSubscriptionRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Plan == "" {
		WriteError(w, http.StatusBadRequest, "invalid_subscription", "plan: required.")
		return
	}
	if !storable(req.Plan) {
		a.writeInvalidPlan(r.Context(), w, billing.ErrPlanNotFound)
		return
	}
	start, end, msg := req.validate()
	if msg != "" {
		WriteError(w, http.StatusBadRequest, "invalid_subscription", msg)
		return
	}
	sub, _, err := a.db.ReplaceSubscription(r.Context(), billing.NewSubscription{
		TenantID: id, Plan: req.Plan, Status: req.Status, PeriodStart: start, PeriodEnd: end,
		CancelAtPeriodEnd: req.CancelAtPeriodEnd, Provider: billing.ProviderManual,
	}, actor)
	if err != nil {
		a.storeError(w, r, "put subscription", "invalid_subscription", err)
		return
	}
	ctx, cancel := writeCtx(r)
	defer cancel()
	if err := a.sync(ctx, id, false); err != nil {
		a.redisError(w, "put subscription", id, err, errorBody{})
		return
	}
	writeJSON(w, http.StatusOK, subscriptionJSON(sub))
}

// clearCooldown clears the time of the tenant's last plan switch, which a
// tier-switch cooldown will be counted from (none is enforced yet). Nothing
// the proxy enforces changes, so there is nothing to write through.
func (a *API) clearCooldown(w http.ResponseWriter, r *http.Request) {
	sub, err := a.db.ClearTierCooldown(r.Context(), r.PathValue("id"), actor)
	if err != nil {
		a.storeError(w, r, "clear cooldown", "invalid_subscription", err)
		return
	}
	writeJSON(w, http.StatusOK, subscriptionJSON(sub))
}
