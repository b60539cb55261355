package account

import (
	"net/http"

	"github.com/tollgate/tollgate/config"
)

type priceJSON struct {
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

type planJSON struct {
	Slug  string    `json:"slug"`
	Name  string    `json:"name"`
	Price priceJSON `json:"price"`
	// Limits by feature; null means unlimited.
	Limits map[string]*int64 `json:"limits"`
	Flags  map[string]bool   `json:"flags"`
}

type plansJSON struct {
	Plans []planJSON `json:"plans"`
}

// plans lists the plans on offer (active ones), cheapest first.
func (a *API) plans(w http.ResponseWriter, r *http.Request, _ principal) {
	ctx, cancel := a.storeCtx(r)
	defer cancel()
	ps, err := a.store.ListPlans(ctx, true)
	if err != nil {
		writeAPIError(w, a.storeError("list plans", err))
		return
	}
	out := plansJSON{Plans: make([]planJSON, 0, len(ps))}
	for _, p := range ps {
		pj := planJSON{Slug: p.Slug, Name: p.Name, Price: priceJSON{p.PriceMinor, p.Currency},
			Limits: make(map[string]*int64, len(p.Limits)), Flags: make(map[string]bool, len(p.Flags))}
		for name, v := range p.Limits {
			pj.Limits[name] = limitPtr(v)
		}
		for name, on := range p.Flags {
			pj.Flags[name] = on
		}
		out.Plans = append(out.Plans, pj)
	}
	writeJSON(w, http.StatusOK, out)
}

// limitPtr renders a limit, nil (JSON null) for unlimited.
func limitPtr(v int64) *int64 {
	if v <= config.Unlimited {
		return nil
	}
	return &v
}
