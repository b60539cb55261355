package account

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/usage"
)

type usageAnswer struct {
	Plan        *string `json:"plan"`
	PeriodStart string  `json:"period_start"`
	PeriodEnd   string  `json:"period_end"`
	Source      string  `json:"source"`
	Features    []struct {
		Feature   string `json:"feature"`
		Kind      string `json:"kind"`
		Used      *int64 `json:"used"`
		Limit     *int64 `json:"limit"`
		Remaining *int64 `json:"remaining"`
		Warning   *bool  `json:"warning"`
		Enabled   *bool  `json:"enabled"`
	} `json:"features"`
}

func decodeUsage(t *testing.T, r reply) usageAnswer {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("usage: %d %s", r.status, r.body)
	}
	var u usageAnswer
	if err := json.Unmarshal(r.body, &u); err != nil {
		t.Fatalf("usage: %v: %s", err, r.body)
	}
	return u
}

// line renders one feature compactly for comparisons:
// name:kind:used/limit:remaining:warning or name:flag:enabled.
func (u usageAnswer) lines() []string {
	var out []string
	for _, f := range u.Features {
		if f.Kind == "flag" {
			out = append(out, f.Feature+":flag:"+fmtBool(f.Enabled))
			continue
		}
		out = append(out, f.Feature+":"+f.Kind+":"+fmtInt(f.Used)+"/"+fmtInt(f.Limit)+":"+fmtInt(f.Remaining)+":"+fmtBool(f.Warning))
	}
	return out
}

func fmtInt(p *int64) string {
	if p == nil {
		return "null"
	}
	b, _ := json.Marshal(*p)
	return string(b)
}

func fmtBool(p *bool) string {
	if p == nil {
		return "missing"
	}
	if *p {
		return "true"
	}
	return "false"
}

func TestUsageFromRedis(t *testing.T) {
	e := newEnv(t, envOpts{})
	free, pro := e.tenantOn("free"), e.tenantOn("pro")
	// Real traffic through the proxy fills the live counters.
	for i := 0; i < 8; i++ {
		if r := e.do(http.MethodPost, e.proxyURL+"/api/v1/messages", free.key); r.status != http.StatusCreated {
			t.Fatalf("message %d: %d %s", i, r.status, r.body)
		}
	}
	if r := e.do(http.MethodPost, e.proxyURL+"/api/v1/agents", free.key); r.status != http.StatusCreated {
		t.Fatalf("agent: %d %s", r.status, r.body)
	}
	for i := 0; i < 3; i++ {
		e.do(http.MethodPost, e.proxyURL+"/api/v1/messages", pro.key)
	}

	start, end := billing.MonthPeriod(time.Now())
	cases := []struct {
		name string
		fx   fixture
		want []string
	}{
		{"free", free, []string{"messages:metered:8/10:2:true", "agents:gauge:1/1:0:true", "channels:gauge:0/1:1:false",
			"integrations:flag:false", "ai_auto_reply:flag:false"}},
		{"pro, unlimited messages", pro, []string{"messages:metered:3/null:null:false", "agents:gauge:0/5:5:false",
			"channels:gauge:0/100:100:false", "integrations:flag:true", "ai_auto_reply:flag:true"}},
	}
	for _, c := range cases {
		for _, path := range []string{"/usage", "/subscription/usage"} {
			t.Run(c.name+path, func(t *testing.T) {
				u := decodeUsage(t, e.get(e.proxyURL+"/api/v1/billing", path, c.fx.key))
				if u.Source != "redis" || u.Plan == nil || *u.Plan != c.fx.Plan {
					t.Fatalf("source %q plan %v", u.Source, u.Plan)
				}
				if u.PeriodStart != rfc3339(start) || u.PeriodEnd != rfc3339(end) {
					t.Fatalf("period %s – %s, want %s – %s", u.PeriodStart, u.PeriodEnd, rfc3339(start), rfc3339(end))
				}
				if got := strings.Join(u.lines(), " "); got != strings.Join(c.want, " ") {
					t.Fatalf("features\n got: %s\nwant: %s", got, strings.Join(c.want, " "))
				}
			})
		}
	}
}

// With Redis down the API answers from the usage flushed to PostgreSQL
// and says so.
func TestUsageFromPostgresWhenRedisIsDown(t *testing.T) {
	e := newEnv(t, envOpts{redisDown: true})
	ctx := testCtx(t)
	mini, payg := e.tenantOn("mini"), e.tenantOn("")
	sub, err := e.db.GetSubscription(ctx, mini.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Seeded as the proxies' flusher stores usage: metered counters per
	// period, gauges without one.
	start, end := billing.MonthPeriod(time.Now())
	e.flush(
		metered(mini.ID, "messages", start, end, 2100),
		gauge(mini.ID, "agents", 1),
		gauge(mini.ID, "channels", 3),
		metered(payg.ID, "messages", start, end, 7),
		gauge(payg.ID, "agents", 4),
		// Another period is not this one's usage.
		metered(mini.ID, "messages", start.AddDate(0, -1, 0), start, 99),
	)

	u := decodeUsage(t, e.get(e.apiURL, "/usage", mini.key))
	if u.Source != "postgres" || u.Plan == nil || *u.Plan != "mini" ||
		u.PeriodStart != rfc3339(sub.PeriodStart) || u.PeriodEnd != rfc3339(sub.PeriodEnd) {
		t.Fatalf("answer: %+v", u)
	}
	want := "messages:metered:2100/2500:400:true agents:gauge:1/2:1:false channels:gauge:3/3:0:true integrations:flag:true ai_auto_reply:flag:true"
	if got := strings.Join(u.lines(), " "); got != want {
		t.Fatalf("features\n got: %s\nwant: %s", got, want)
	}

	// Pay-as-you-go: the proxy enforces the default plan (the admin API
	// writes it through), so that is what the answer shows, as from Redis.
	u = decodeUsage(t, e.get(e.apiURL, "/subscription/usage", payg.key))
	want = "messages:metered:7/10:3:false agents:gauge:4/1:0:true channels:gauge:0/1:1:false integrations:flag:false ai_auto_reply:flag:false"
	if u.Plan == nil || *u.Plan != e.cfg.DefaultPlan || u.Source != "postgres" || strings.Join(u.lines(), " ") != want {
		t.Fatalf("payg: plan %v source %s features %s", u.Plan, u.Source, strings.Join(u.lines(), " "))
	}
}

// With Redis down the period is the one the proxy counts in and the flush
// stores rows under: monthly from the entitlement's anchor (see
// quota.Anchor), whatever the subscription's own period, and calendar
// months without a live subscription.
func TestUsageFromPostgresUsesTheProxysPeriod(t *testing.T) {
	e := newEnv(t, envOpts{redisDown: true})
	day := func(m time.Month, d int) time.Time { return time.Date(2026, m, d, 0, 0, 0, 0, time.UTC) }
	now := day(3, 10)
	cases := []struct {
		name             string
		status           string // "" for active
		subStart, subEnd time.Time
		wantStart        time.Time
		wantEnd          time.Time
	}{
		// Not the one-year period, nor January's row all year.
		{"yearly", "", day(1, 1), day(1, 1).AddDate(1, 0, 0), day(3, 1), day(4, 1)},
		// Past its period_end the anchor still counts, not the calendar.
		{"monthly from mid-month, past its end", "", day(1, 15), day(2, 15), day(2, 15), day(3, 15)},
		{"a calendar month", "", day(3, 1), day(4, 1), day(3, 1), day(4, 1)},
		// No live subscription: calendar months, whatever the canceled one's.
		{"canceled", billing.StatusCanceled, day(1, 15), day(2, 15), day(3, 1), day(4, 1)},
	}
	url := e.apiAt(now)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := e.tenantOn("mini")
			if _, _, err := e.db.ReplaceSubscription(testCtx(t), billing.NewSubscription{TenantID: fx.ID, Plan: "mini",
				Status: c.status, PeriodStart: c.subStart, PeriodEnd: c.subEnd}, "test"); err != nil {
				t.Fatal(err)
			}
			// The period's row, and rows of the periods the other readings
			// would pick: the subscription's own and the calendar month's.
			items := []usage.Item{metered(fx.ID, "messages", c.wantStart, c.wantEnd, 2400)}
			for _, s := range []time.Time{c.subStart, day(3, 1)} {
				if !s.Equal(c.wantStart) {
					items = append(items, metered(fx.ID, "messages", s, s.AddDate(0, 1, 0), 99))
				}
			}
			e.flush(items...)

			u := decodeUsage(t, e.get(url, "/usage", fx.key))
			if u.Source != "postgres" || u.PeriodStart != rfc3339(c.wantStart) || u.PeriodEnd != rfc3339(c.wantEnd) {
				t.Fatalf("source %s period %s – %s, want postgres %s – %s", u.Source, u.PeriodStart, u.PeriodEnd,
					rfc3339(c.wantStart), rfc3339(c.wantEnd))
			}
			if got := u.lines()[0]; !strings.HasPrefix(got, "messages:metered:2400/") {
				t.Fatalf("messages %s, want 2400 used", got)
			}
		})
	}
}
