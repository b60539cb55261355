package account

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing"
)

var tenantPaths = []struct {
	path string
	key  string // a top-level key the answer has
}{
	{"/plans", "plans"},
	{"/subscription", "status"},
	{"/usage", "features"},
	{"/subscription/usage", "features"},
	{"/invoices", "invoices"},
	{"/subscription/invoices", "invoices"},
}

// Every endpoint answers at the API listener's root and through the proxy
// under every mount, with an API key and with a dashboard token, and
// nothing reaches the upstream.
func TestEveryEndpointEverywhere(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.tenantOn("mini")
	tok := signToken(t, []string{a.ID})
	for name, base := range e.bases() {
		for _, p := range tenantPaths {
			for _, auth := range []struct {
				name string
				cred string
				hdr  []string
			}{
				{"api key", a.key, nil},
				{"dashboard token", tok, []string{"X-Tenant-Id", a.ID}},
			} {
				t.Run(name+p.path+"/"+auth.name, func(t *testing.T) {
					r := e.get(base, p.path, auth.cred, auth.hdr...)
					if r.status != http.StatusOK {
						t.Fatalf("status %d: %s", r.status, r.body)
					}
					if ct := r.header.Get("Content-Type"); ct != "application/json" {
						t.Errorf("Content-Type = %q", ct)
					}
					if cc := r.header.Get("Cache-Control"); cc != "no-store" {
						t.Errorf("Cache-Control = %q", cc)
					}
					if _, ok := r.json(t)[p.key]; !ok {
						t.Fatalf("no %q in %s", p.key, r.body)
					}
				})
			}
		}
	}
	if n := e.upHits.Load(); n != 0 {
		t.Fatalf("upstream saw %d requests; mounted routes must be answered by Tollgate", n)
	}
}

func TestPlans(t *testing.T) {
	e := newEnv(t, envOpts{})
	// Seed 002 lists plans with a dashboard token alone.
	r := e.get(e.proxyURL+"/billing", "/plans", signToken(t, []string{"ten_x"}))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	want := `{"plans":[` +
		`{"slug":"free","name":"Free","price":{"amount_minor":0,"currency":"USD"},"limits":{"agents":1,"channels":1,"messages":10},"flags":{"ai_auto_reply":false,"integrations":false}},` +
		`{"slug":"mini","name":"Mini","price":{"amount_minor":1900,"currency":"USD"},"limits":{"agents":2,"channels":3,"messages":2500},"flags":{"ai_auto_reply":true,"integrations":true}},` +
		`{"slug":"pro","name":"Pro","price":{"amount_minor":4900,"currency":"USD"},"limits":{"agents":5,"channels":100,"messages":null},"flags":{"ai_auto_reply":true,"integrations":true}}]}`
	if got := strings.TrimSpace(string(r.body)); got != want {
		t.Fatalf("plans\n got: %s\nwant: %s", got, want)
	}

	// An inactive plan is not on offer.
	off := false
	if _, err := e.db.UpdatePlan(testCtx(t), "free", billing.PlanUpdate{Active: &off}, "test"); err != nil {
		t.Fatal(err)
	}
	r = e.get(e.apiURL, "/plans", signToken(t, "ten_x"))
	if strings.Contains(string(r.body), `"free"`) {
		t.Fatalf("inactive plan listed: %s", r.body)
	}
}

func TestSubscription(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	a := e.tenantOn("mini")
	sub, err := e.db.GetSubscription(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }

	r := e.get(e.proxyURL+"/v1/workspace", "/subscription", a.key)
	want := `{"id":"` + sub.ID + `","workspace_id":"` + a.ID + `","plan":"mini","status":"active",` +
		`"period_start":"` + ts(sub.PeriodStart) + `","period_end":"` + ts(sub.PeriodEnd) + `",` +
		`"created_at":"` + ts(sub.CreatedAt) + `","updated_at":"` + ts(sub.UpdatedAt) + `","cancel_at_period_end":false}`
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != want {
		t.Fatalf("subscription %d\n got: %s\nwant: %s", r.status, r.body, want)
	}

	// A tier switch stamps last_tier_switch_at.
	pc, err := e.db.SetPlan(ctx, a.ID, "pro", "test")
	if err != nil {
		t.Fatal(err)
	}
	v := e.get(e.apiURL, "/subscription", a.key).json(t)
	if v["plan"] != "pro" || v["last_tier_switch_at"] != ts(*pc.Subscription.LastTierSwitchAt) {
		t.Fatalf("after switch: %v", v)
	}

	t.Run("payg is 404 no_subscription", func(t *testing.T) {
		p := e.tenantOn("")
		for _, base := range []string{e.apiURL, e.proxyURL + "/v1/workspace"} {
			wantError(t, e.get(base, "/subscription", p.key), http.StatusNotFound, "no_subscription")
		}
	})

	t.Run("canceled is 200 with status canceled", func(t *testing.T) {
		c := e.tenantOn("")
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		if _, err := e.db.CreateSubscription(ctx, billing.NewSubscription{TenantID: c.ID, Plan: "mini",
			Status: billing.StatusCanceled, PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0), CancelAtPeriodEnd: true}, "test"); err != nil {
			t.Fatal(err)
		}
		r := e.get(e.proxyURL+"/api/v1/billing", "/subscription", c.key)
		v := r.json(t)
		if r.status != http.StatusOK || v["status"] != "canceled" || v["cancel_at_period_end"] != true ||
			v["period_start"] != "2026-01-01T00:00:00Z" || v["workspace_id"] != c.ID {
			t.Fatalf("canceled: %d %s", r.status, r.body)
		}
	})
}

func TestInvoices(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := testCtx(t)
	a, b := e.tenantOn("mini"), e.tenantOn("mini")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	statuses := []string{"paid", "paid", "open", "void"}
	var ids []string // oldest first
	for i := 0; i < 12; i++ {
		in, err := e.db.PutInvoice(ctx, billing.Invoice{TenantID: a.ID, Number: "A-" + string(rune('a'+i)),
			Status: statuses[i%len(statuses)], AmountDueMinor: 1900, AmountPaidMinor: 1900, Currency: "USD",
			PeriodStart: base.AddDate(0, i, 0), PeriodEnd: base.AddDate(0, i+1, 0),
			HostedURL: "https://billing.example/i/" + string(rune('a'+i)), CreatedAt: base.AddDate(0, i+1, 0)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in.ID)
	}
	if _, err := e.db.PutInvoice(ctx, billing.Invoice{TenantID: b.ID, Status: "paid", AmountDueMinor: 1, Currency: "USD",
		PeriodStart: base, PeriodEnd: base}); err != nil {
		t.Fatal(err)
	}
	newest := slices.Clone(ids)
	slices.Reverse(newest)

	list := func(r reply) []map[string]any {
		t.Helper()
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		raw, _ := r.json(t)["invoices"].([]any)
		out := make([]map[string]any, len(raw))
		for i, v := range raw {
			out[i] = v.(map[string]any)
		}
		return out
	}
	idsOf := func(ins []map[string]any) []string {
		var out []string
		for _, in := range ins {
			out = append(out, in["id"].(string))
		}
		return out
	}

	cases := []struct {
		query string
		want  []string
	}{
		{"", newest[:10]},
		{"?limit=2", newest[:2]},
		{"?limit=100", newest},
		{"?status=open", []string{ids[10], ids[6], ids[2]}},
		{"?status=void&limit=1", []string{ids[11]}},
		{"?other=ignored", newest[:10]},
	}
	for _, c := range cases {
		for _, path := range []string{"/invoices", "/subscription/invoices"} {
			t.Run(path+c.query, func(t *testing.T) {
				got := idsOf(list(e.get(e.proxyURL+"/billing", path+c.query, a.key)))
				if !slices.Equal(got, c.want) {
					t.Fatalf("ids = %v, want %v", got, c.want)
				}
			})
		}
	}

	in := list(e.get(e.apiURL, "/invoices?limit=1", a.key))[0]
	wantFields := map[string]any{"id": ids[11], "number": "A-l", "status": "void", "amount_due_minor": 1900.0,
		"amount_paid_minor": 1900.0, "currency": "USD", "period_start": "2026-12-01T00:00:00Z",
		"period_end": "2027-01-01T00:00:00Z", "hosted_url": "https://billing.example/i/l", "created_at": "2027-01-01T00:00:00Z"}
	for k, v := range wantFields {
		if in[k] != v {
			t.Errorf("%s = %v, want %v", k, in[k], v)
		}
	}
	if len(in) != len(wantFields) {
		t.Errorf("fields = %v", in)
	}

	for _, bad := range []struct{ query, names string }{
		{"?limit=0", "limit"}, {"?limit=101", "limit"}, {"?limit=abc", "limit"}, {"?limit=-1", "limit"},
		{"?limit=", "limit"}, {"?limit=1&limit=2", "limit"}, {"?limit=%2B5", "limit"},
		{"?status=draft", "status"}, {"?status=PAID", "status"}, {"?status=", "status"},
		{"?limit=%zz", "query"},
	} {
		t.Run("bad"+bad.query, func(t *testing.T) {
			r := e.get(e.apiURL, "/invoices"+bad.query, a.key)
			wantError(t, r, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(string(r.body), bad.names) {
				t.Fatalf("message does not name %q: %s", bad.names, r.body)
			}
		})
	}

	// B sees its one invoice, never A's.
	if got := list(e.get(e.apiURL, "/invoices?limit=100", b.key)); len(got) != 1 {
		t.Fatalf("tenant B sees %d invoices", len(got))
	}
}
