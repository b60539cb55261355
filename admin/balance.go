package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/billing"
)

type creditRequest struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
	Note        string `json:"note"`
}

type balanceResponse struct {
	TenantID     string `json:"tenant_id"`
	AmountMinor  int64  `json:"amount_minor"`
	Currency     string `json:"currency"`
	Note         string `json:"note"`
	BalanceMinor int64  `json:"balance_minor"`
	// Applied is false when this credit was already booked (a retry).
	Applied bool `json:"applied"`
}

// creditKind is the ledger kind of operator credits.
const creditKind = "admin_credit"

// credit books a credit on the tenant's balance. The note is the credit's
// idempotency key within the tenant's current billing period: the ledger
// absorbs a second (tenant, kind, period, note), so a retried credit
// answers 200 with the balance and books nothing; a second, distinct credit
// in the same period needs another note.
func (a *API) credit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req creditRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	req.Note = strings.TrimSpace(req.Note)
	switch {
	case req.AmountMinor <= 0 || req.AmountMinor > billing.MaxAmountMinor:
		WriteError(w, http.StatusBadRequest, "invalid_json",
			fmt.Sprintf("amount_minor: required, an integer from 1 to %d.", billing.MaxAmountMinor))
		return
	case req.Note == "" || utf8.RuneCountInString(req.Note) > 500 || !storable(req.Note):
		WriteError(w, http.StatusBadRequest, "invalid_json", "note: required, 1 to 500 characters without NUL; it identifies the credit for retries.")
		return
	}
	period, err := a.creditPeriod(r, id)
	if err != nil {
		a.storeError(w, r, "credit", "invalid_json", err)
		return
	}
	applied, bal, err := a.db.CreditBalanceAudited(r.Context(), billing.LedgerEntry{
		TenantID: id, AmountMinor: req.AmountMinor, Currency: req.Currency, Kind: creditKind,
		PeriodStart: period, Note: req.Note,
	}, actor)
	if err != nil {
		a.storeError(w, r, "credit", "invalid_json", err)
		return
	}
	status := http.StatusCreated
	if !applied {
		status = http.StatusOK
	}
	writeJSON(w, status, balanceResponse{TenantID: id, AmountMinor: req.AmountMinor, Currency: req.Currency,
		Note: req.Note, BalanceMinor: bal, Applied: applied})
}

// creditPeriod is the start of the tenant's current billing period: its
// live subscription's, or the calendar month's without one.
func (a *API) creditPeriod(r *http.Request, id string) (time.Time, error) {
	sub, err := a.db.GetSubscription(r.Context(), id)
	switch {
	case err == nil:
		return sub.PeriodStart, nil
	case errors.Is(err, billing.ErrNoSubscription):
		start, _ := billing.MonthPeriod(a.now())
		return start, nil
	}
	return time.Time{}, err
}
