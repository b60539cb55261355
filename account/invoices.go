package account

import (
	"net/http"

	"github.com/tollgate/tollgate/billing"
)

type invoiceJSON struct {
	ID              string `json:"id"`
	Number          string `json:"number"`
	Status          string `json:"status"`
	AmountDueMinor  int64  `json:"amount_due_minor"`
	AmountPaidMinor int64  `json:"amount_paid_minor"`
	Currency        string `json:"currency"`
	PeriodStart     string `json:"period_start"`
	PeriodEnd       string `json:"period_end"`
	HostedURL       string `json:"hosted_url"`
	CreatedAt       string `json:"created_at"`
}

type invoicesJSON struct {
	Invoices []invoiceJSON `json:"invoices"`
}

func invoiceOf(in billing.Invoice) invoiceJSON {
	return invoiceJSON{
		ID: in.ID, Number: in.Number, Status: in.Status,
		AmountDueMinor: in.AmountDueMinor, AmountPaidMinor: in.AmountPaidMinor, Currency: in.Currency,
		PeriodStart: rfc3339(in.PeriodStart), PeriodEnd: rfc3339(in.PeriodEnd),
		HostedURL: in.HostedURL, CreatedAt: rfc3339(in.CreatedAt),
	}
}

// invoices lists the tenant's invoices, newest first.
func (a *API) invoices(w http.ResponseWriter, r *http.Request, p principal) {
	q, e := parseInvoiceQuery(r.URL.RawQuery)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	ctx, cancel := a.storeCtx(r)
	defer cancel()
	ins, err := a.store.ListInvoices(ctx, p.tenant.ID, q.limit, q.status)
	if err != nil {
		writeAPIError(w, a.storeError("list invoices", err))
		return
	}
	out := invoicesJSON{Invoices: make([]invoiceJSON, 0, len(ins))}
	for _, in := range ins {
		out.Invoices = append(out.Invoices, invoiceOf(in))
	}
	writeJSON(w, http.StatusOK, out)
}
