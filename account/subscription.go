package account

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/tollgate/tollgate/billing"
)

// subscriptionJSON is seed 003's subscription object plus
// cancel_at_period_end, in the seed's key order.
type subscriptionJSON struct {
	ID                string  `json:"id"`
	WorkspaceID       string  `json:"workspace_id"`
	Plan              string  `json:"plan"`
	Status            string  `json:"status"`
	PeriodStart       string  `json:"period_start"`
	PeriodEnd         string  `json:"period_end"`
	LastTierSwitchAt  *string `json:"last_tier_switch_at,omitempty"`
	CreatedAt         string  `json:"created_at"`
	UpdatedAt         string  `json:"updated_at"`
	CancelAtPeriodEnd bool    `json:"cancel_at_period_end"`
}

// rfc3339 is the seeds' time format: UTC, whole seconds.
func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func subscriptionOf(s billing.Subscription) subscriptionJSON {
	out := subscriptionJSON{
		ID: s.ID, WorkspaceID: s.TenantID, Plan: s.Plan, Status: s.Status,
		PeriodStart: rfc3339(s.PeriodStart), PeriodEnd: rfc3339(s.PeriodEnd),
		CreatedAt: rfc3339(s.CreatedAt), UpdatedAt: rfc3339(s.UpdatedAt),
		CancelAtPeriodEnd: s.CancelAtPeriodEnd,
	}
	if s.LastTierSwitchAt != nil {
		ts := rfc3339(*s.LastTierSwitchAt)
		out.LastTierSwitchAt = &ts
	}
	return out
}

func (a *API) subscription(w http.ResponseWriter, r *http.Request, p principal) {
	ctx, cancel := a.storeCtx(r)
	defer cancel()
	sub, e := a.currentSubscription(ctx, p.tenant.ID)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, subscriptionOf(sub))
}

// currentSubscription is the tenant's live subscription or, when it has
// none, its most recent canceled one (still shown, with status canceled);
// a tenant that never subscribed is pay-as-you-go: 404 no_subscription.
func (a *API) currentSubscription(ctx context.Context, tenantID string) (billing.Subscription, *apiError) {
	sub, err := a.store.LatestSubscription(ctx, tenantID)
	switch {
	case errors.Is(err, billing.ErrNoSubscription):
		return sub, errNoSubscription
	case errors.Is(err, billing.ErrTenantNotFound):
		// Deleted between authentication and now.
		return sub, errTenantNotFound
	case err != nil:
		return sub, a.storeError("latest subscription", err)
	}
	return sub, nil
}
