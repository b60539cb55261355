package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
)

func TestGaugeLimitMatchesSeed(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	mini := h.createTenant("mini")

	for i := 0; i < 2; i++ {
		if r := h.call(mini.APIKey, "POST", "/api/v1/agents", `{"name":"a"}`); r.status != http.StatusCreated {
			t.Fatalf("agent %d: %d %s", i+1, r.status, r.body)
		}
	}
	r := h.call(mini.APIKey, "POST", "/api/v1/agents", `{"name":"c"}`)
	if r.status != http.StatusPaymentRequired {
		t.Fatalf("third agent: status %d %s, want 402", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	golden(t, "limit_exceeded_agents_mini.json", r.body)
	if got := h.up.count("POST", "/api/v1/agents"); got != 2 {
		t.Fatalf("upstream saw %d agent creations, want 2", got)
	}
	if got := h.usage(mini.ID, "agents"); got != 2 {
		t.Fatalf("agents gauge %d, want 2", got)
	}
}

func TestFlagErrorsMatchSeed(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	free := h.createTenant("free")

	tests := []struct {
		name, path, body string
		status           int
		golden           string
	}{
		{"non-widget channel needs integrations", "/api/v1/channels", `{"type":"whatsapp","name":"wa"}`, 402, "feature_locked_integrations_free.json"},
		{"ai auto-reply not on free", "/api/v1/ai/auto-reply", `{"message":"hi"}`, 402, "feature_not_available_ai_auto_reply_free.json"},
		{"widget channel allowed", "/api/v1/channels", `{"type":"widget","name":"w"}`, 201, ""},
		{"second channel over the gauge", "/api/v1/channels", `{"type":"widget","name":"w2"}`, 402, "limit_exceeded_channels_free.json"},
		{"malformed body is rejected, not counted", "/api/v1/channels", `{"type":`, 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.call(free.APIKey, "POST", tc.path, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.golden != "" {
				golden(t, tc.golden, r.body)
			}
		})
	}
	if got := h.up.count("POST", "/api/v1/channels"); got != 1 {
		t.Fatalf("upstream saw %d channel creations, want 1 (the widget)", got)
	}
	if got := h.up.count("POST", "/api/v1/ai/auto-reply"); got != 0 {
		t.Fatalf("upstream saw %d auto-replies, want 0", got)
	}
	if got := h.usage(free.ID, "channels"); got != 1 {
		t.Fatalf("channels gauge %d, want 1", got)
	}

	// On Mini the same requests pass: the flag is on.
	h.setPlan(free.ID, "mini")
	if r := h.call(free.APIKey, "POST", "/api/v1/channels", `{"type":"whatsapp"}`); r.status != 201 {
		t.Fatalf("whatsapp channel on mini: %d %s", r.status, r.body)
	}
	if r := h.call(free.APIKey, "POST", "/api/v1/ai/auto-reply", `{"message":"hi"}`); r.status != 201 {
		t.Fatalf("auto-reply on mini: %d %s", r.status, r.body)
	}
}

// TestCaseVariantFieldIsAmbiguous: a body whose only copy of a condition's
// field differs in case ({"Type":...} for type) is refused, not read as
// "field missing": a Go upstream (encoding/json into a struct, as the
// demo's) reads it as the field, so skipping the flag would let a free
// tenant create a WhatsApp channel.
func TestCaseVariantFieldIsAmbiguous(t *testing.T) {
	h := newHarness(t, harnessOpts{edit: func(s string) string {
		const from = "when: {field: type, not_in: [widget]}"
		if !strings.Contains(s, from) {
			t.Fatalf("example config has no %q", from)
		}
		return strings.Replace(s, from, "when: {field: type, in: [whatsapp, telegram]}", 1)
	}})
	free := h.createTenant("free")

	body := `{"Type":"whatsapp","name":"wa"}`
	var upstreamView struct{ Type, Name string }
	if err := json.Unmarshal([]byte(body), &upstreamView); err != nil || upstreamView.Type != "whatsapp" {
		t.Fatalf("a Go upstream reads %+v, %v", upstreamView, err)
	}
	for _, tc := range []struct {
		body   string
		status int
	}{
		{body, http.StatusBadRequest},
		{`{"type":"whatsapp","TYPE":"widget"}`, http.StatusBadRequest},
		{`{"type":"whatsapp"}`, http.StatusPaymentRequired}, // the flag is required
	} {
		r := h.call(free.APIKey, "POST", "/api/v1/channels", tc.body)
		if r.status != tc.status {
			t.Fatalf("%s: %d %s, want %d", tc.body, r.status, r.body, tc.status)
		}
		if tc.status != http.StatusBadRequest {
			continue
		}
		var e struct{ Error, Message string }
		if err := json.Unmarshal(r.body, &e); err != nil || e.Error != "invalid_body" || !strings.Contains(e.Message, "ambiguous") {
			t.Errorf("%s: body %s, want invalid_body saying the body is ambiguous", tc.body, r.body)
		}
	}
	if got := h.usage(free.ID, "channels"); got != 0 {
		t.Errorf("channels %d, want 0", got)
	}
	if got := h.up.count("POST", "/api/v1/channels"); got != 0 {
		t.Errorf("upstream saw %d channel creations, want 0", got)
	}
}

func TestMonthlyLimitWarningAndRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	h := newHarness(t, harnessOpts{clock: func() time.Time { return now }})
	free := h.createTenant("free")

	for i := 1; i <= 250; i++ {
		r := h.call(free.APIKey, "POST", "/api/v1/messages", `{"text":"hi"}`)
		if r.status != http.StatusCreated {
			t.Fatalf("message %d: %d %s", i, r.status, r.body)
		}
		wantWarn := i >= 200 // 80% of 250
		if got := r.header.Get("X-Quota-Warning") == "true"; got != wantWarn {
			t.Fatalf("message %d: X-Quota-Warning %q, want warning=%v", i, r.header.Get("X-Quota-Warning"), wantWarn)
		}
		if got := r.header.Get("X-Quota-Limit"); got != "250" {
			t.Fatalf("message %d: X-Quota-Limit %q", i, got)
		}
		if got := r.header.Get("X-Quota-Remaining"); got != strconv.Itoa(250-i) {
			t.Fatalf("message %d: X-Quota-Remaining %q, want %d", i, got, 250-i)
		}
	}
	r := h.call(free.APIKey, "POST", "/api/v1/messages", `{"text":"one too many"}`)
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("message 251: %d %s", r.status, r.body)
	}
	golden(t, "limit_exceeded_messages_free.json", r.body)
	reset := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if got, want := r.header.Get("Retry-After"), strconv.Itoa(int(reset.Sub(now).Seconds())); got != want {
		t.Fatalf("Retry-After %q, want %s", got, want)
	}
	if got, want := r.header.Get("X-Quota-Reset"), strconv.FormatInt(reset.Unix(), 10); got != want {
		t.Fatalf("X-Quota-Reset %q, want %s", got, want)
	}
	if got := h.up.count("POST", "/api/v1/messages"); got != 250 {
		t.Fatalf("upstream saw %d messages, want 250", got)
	}
}

func TestGraceWindow(t *testing.T) {
	h := newHarness(t, harnessOpts{configPath: "testdata/tollgate.yaml"})
	ten := h.createTenant("small") // api_calls: limit 10, grace 1.1 → ceiling 11

	for i := 1; i <= 11; i++ {
		r := h.call(ten.APIKey, "GET", "/v1/things", "")
		if r.status != http.StatusOK {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
		if i > 10 && r.header.Get("X-Quota-Warning") != "true" {
			t.Fatalf("call %d in the grace window has no warning", i)
		}
		if i > 10 && r.header.Get("X-Quota-Remaining") != "0" {
			t.Fatalf("call %d: remaining %q, want 0", i, r.header.Get("X-Quota-Remaining"))
		}
	}
	r := h.call(ten.APIKey, "GET", "/v1/things", "")
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("call past the grace ceiling: %d %s", r.status, r.body)
	}
	var body struct {
		Current, Limit int64
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Current != 11 || body.Limit != 10 {
		t.Fatalf("body %s: current/limit %d/%d, want 11/10 (%v)", r.body, body.Current, body.Limit, err)
	}
}

func TestCommitOnSuccessReleaseOnFailure(t *testing.T) {
	h := newHarness(t, harnessOpts{configPath: "testdata/tollgate.yaml"})
	ten := h.createTenant("small")

	steps := []struct {
		name   string
		hdr    []string
		status int
		want   int64 // api_calls used afterwards
	}{
		{"2xx commits", nil, 200, 1},
		{"4xx releases", []string{"X-Test-Status", "422"}, 422, 1},
		{"5xx releases", []string{"X-Test-Status", "503"}, 503, 1},
		{"timeout releases", []string{"X-Test-Sleep", "2s"}, 504, 1},
		{"another 2xx commits", []string{"X-Test-Status", "204"}, 204, 2},
	}
	for _, s := range steps {
		r := h.call(ten.APIKey, "GET", "/v1/things", "", s.hdr...)
		if r.status != s.status {
			t.Fatalf("%s: status %d %s, want %d", s.name, r.status, r.body, s.status)
		}
		if got := h.usage(ten.ID, "api_calls"); got != s.want {
			t.Fatalf("%s: api_calls %d, want %d", s.name, got, s.want)
		}
	}
}

func TestUpstreamDownReleases(t *testing.T) {
	h := newHarness(t, harnessOpts{upstreamURL: "http://127.0.0.1:1"})
	free := h.createTenant("free")
	r := h.call(free.APIKey, "POST", "/api/v1/agents", `{"name":"a"}`)
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d %s, want 502", r.status, r.body)
	}
	if got := h.usage(free.ID, "agents"); got != 0 {
		t.Fatalf("agents gauge %d after a 502, want 0", got)
	}
}

func TestResponseHeaderAmountIsCharged(t *testing.T) {
	h := newHarness(t, harnessOpts{configPath: "testdata/tollgate.yaml"})
	ten := h.createTenant("small") // ai_tokens: 1000

	for _, s := range []struct {
		tokens string
		status string
		want   int64
	}{
		{"300", "", 300},
		{"200", "500", 300}, // failed: not charged
		{"abc", "", 300},    // malformed header: not charged
		{"800", "", 1100},   // admitted below the limit, charged in full
	} {
		hdr := []string{"X-Test-Tokens", s.tokens}
		if s.status != "" {
			hdr = append(hdr, "X-Test-Status", s.status)
		}
		h.call(ten.APIKey, "POST", "/v1/complete", `{}`, hdr...)
		if got := h.usage(ten.ID, "ai_tokens"); got != s.want {
			t.Fatalf("after %s tokens (status %q): used %d, want %d", s.tokens, s.status, got, s.want)
		}
	}
	if r := h.call(ten.APIKey, "POST", "/v1/complete", `{}`, "X-Test-Tokens", "1"); r.status != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %d %s", r.status, r.body)
	}
}

func TestBodyAmountIsReserved(t *testing.T) {
	h := newHarness(t, harnessOpts{configPath: "testdata/tollgate.yaml"})
	ten := h.createTenant("small") // emails: 100

	for _, s := range []struct {
		body   string
		status int
		want   int64
	}{
		{`{"count":60}`, 201, 60},
		{`{"count":50}`, 429, 60},  // 110 > 100
		{`{"count":-1}`, 400, 60},  // negative
		{`{"count":"x"}`, 400, 60}, // not a number
		{`not json`, 400, 60},
		{`{"count":40}`, 201, 100},
	} {
		r := h.call(ten.APIKey, "POST", "/v1/emails", s.body)
		if r.status != s.status {
			t.Fatalf("%s: status %d %s, want %d", s.body, r.status, r.body, s.status)
		}
		if got := h.usage(ten.ID, "emails"); got != s.want {
			t.Fatalf("%s: used %d, want %d", s.body, got, s.want)
		}
	}
}

func TestGaugeDeleteDecrementsNeverBelowZero(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	free := h.createTenant("free")

	steps := []struct {
		method, path string
		hdr          []string
		status       int
		want         int64
	}{
		{"DELETE", "/api/v1/agents/nope", nil, 204, 0}, // never below zero
		{"POST", "/api/v1/agents", nil, 201, 1},
		{"POST", "/api/v1/agents", nil, 402, 1},
		{"DELETE", "/api/v1/agents/a1", []string{"X-Test-Status", "404"}, 404, 1}, // failed delete keeps the count
		{"DELETE", "/api/v1/agents/a1", nil, 204, 0},
		{"POST", "/api/v1/agents", nil, 201, 1},
	}
	limit := h.cfg.PlanBySlug["free"].Limits[h.cfg.FeatureByName["agents"].Index]
	for i, s := range steps {
		r := h.call(free.APIKey, s.method, s.path, `{"name":"x"}`, s.hdr...)
		if r.status != s.status {
			t.Fatalf("step %d %s %s: %d %s, want %d", i, s.method, s.path, r.status, r.body, s.status)
		}
		if got := h.usage(free.ID, "agents"); got != s.want {
			t.Fatalf("step %d: agents %d, want %d", i, got, s.want)
		}
		if s.method != "DELETE" {
			continue
		}
		// A delete is settled before its headers are written: they report
		// the usage after it. A failed one reports nothing (it was not
		// checked, so there is no limit to show).
		wantLimit, wantRemaining := strconv.FormatInt(limit, 10), strconv.FormatInt(limit-s.want, 10)
		if s.status >= 300 {
			wantLimit, wantRemaining = "", ""
		}
		if got := r.header.Get("X-Quota-Limit"); got != wantLimit {
			t.Errorf("step %d: X-Quota-Limit %q, want %q", i, got, wantLimit)
		}
		if got := r.header.Get("X-Quota-Remaining"); got != wantRemaining {
			t.Errorf("step %d: X-Quota-Remaining %q, want %q", i, got, wantRemaining)
		}
	}
}

// TestGaugeDeleteIsOneRoundTrip counts the Redis commands of creates and
// deletes: one each, the delete's after the upstream's 2xx.
func TestGaugeDeleteIsOneRoundTrip(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ten := h.createTenant("free")
	cmds := h.redisCommands()
	h.warm(ten.APIKey, cmds)
	for i := range 3 {
		before := cmds.quota()
		if r := h.call(ten.APIKey, "POST", "/api/v1/agents", `{"name":"x"}`); r.status != 201 {
			t.Fatalf("create %d: %d %s", i, r.status, r.body)
		}
		if got := cmds.quota() - before; got != 1 {
			t.Fatalf("create %d sent %d Redis commands, want 1", i, got)
		}
		before = cmds.quota()
		if r := h.call(ten.APIKey, "DELETE", "/api/v1/agents/a1", ""); r.status != 204 {
			t.Fatalf("delete %d: %d %s", i, r.status, r.body)
		}
		if got := cmds.quota() - before; got != 1 {
			t.Fatalf("delete %d sent %d Redis commands, want 1", i, got)
		}
	}
	if got := h.usage(ten.ID, "agents"); got != 0 {
		t.Fatalf("agents %d after 3 creates and 3 deletes, want 0", got)
	}
}

func TestUnknownTenant(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, tc := range []struct {
		name, key, code string
	}{
		{"no credential", "", "unauthorized"},
		{"malformed key", "not-a-key", "unauthorized"},
		{"unknown key", "tg_" + "0123456789abcdef0123456789abcdef01234567", "unknown_tenant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/api/v1/messages", "/api/v1/unmetered"} {
				r := h.call(tc.key, "POST", path, `{"text":"x"}`)
				if r.status != http.StatusUnauthorized {
					t.Fatalf("%s: status %d %s, want 401", path, r.status, r.body)
				}
				var e struct{ Error, Message string }
				if err := json.Unmarshal(r.body, &e); err != nil || e.Error != tc.code || e.Message == "" {
					t.Fatalf("%s: body %s, want error %q with a message", path, r.body, tc.code)
				}
			}
		})
	}
	if n := h.up.all.Load(); n != 0 {
		t.Fatalf("upstream saw %d requests from unknown tenants", n)
	}
}

// A request carrying the header the tenant is read from more than once is
// 400 invalid_request naming it, counted for no tenant and not forwarded: a
// front proxy that adds X-Tenant-Id (or a client that adds Authorization)
// after the client's own line would have Tollgate meter the first tenant
// while an upstream reading the last acts for another. One line of each
// still passes and counts.
func TestRepeatedTenantHeader(t *testing.T) {
	for _, tc := range []struct {
		source, header string
		value          func(testTenant) string
	}{
		{"api_key", "Authorization", func(tt testTenant) string { return "Bearer " + tt.APIKey }},
		{"header", "X-Tenant-Id", func(tt testTenant) string { return tt.ID }},
	} {
		t.Run(tc.source, func(t *testing.T) {
			h := newHarness(t, harnessOpts{edit: func(s string) string {
				const from = "tenant:\n  source: api_key\n"
				if !strings.Contains(s, from) {
					t.Fatalf("example config has no %q", from)
				}
				return strings.Replace(s, from, "tenant:\n  source: "+tc.source+"\n", 1)
			}})
			client, real := h.createTenant("pro"), h.createTenant("pro")
			send := func(path string, values ...string) (*http.Response, []byte) {
				t.Helper()
				var lines strings.Builder
				for _, v := range values {
					lines.WriteString(tc.header + ": " + v + "\r\n")
				}
				const body = `{"text":"x"}`
				raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"+
					"Content-Length: %d\r\nConnection: close\r\n\r\n%s", path, lines.String(), len(body), body)
				return fwdRawDo(t, strings.TrimPrefix(h.proxies[0].url, "http://"), raw)
			}

			if resp, b := send("/api/v1/messages", tc.value(real)); resp.StatusCode != http.StatusCreated {
				t.Fatalf("one line: %d %s, want 201", resp.StatusCode, b)
			}
			for _, path := range []string{"/api/v1/messages", "/api/v1/agents", "/api/v1/unmetered"} {
				for _, vals := range [][]string{
					{tc.value(client), tc.value(real)},
					{tc.value(real), tc.value(real)},
					{"", tc.value(real)},
				} {
					resp, b := send(path, vals...)
					if resp.StatusCode != http.StatusBadRequest {
						t.Fatalf("%s %q: %d %s, want 400", path, vals, resp.StatusCode, b)
					}
					if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
						t.Errorf("%s: Content-Type %q", path, ct)
					}
					var e struct{ Error, Message string }
					if err := json.Unmarshal(b, &e); err != nil || e.Error != "invalid_request" || !strings.Contains(e.Message, tc.header) {
						t.Fatalf("%s: body %s, want invalid_request naming %s", path, b, tc.header)
					}
				}
			}
			for _, tt := range []testTenant{client, real} {
				for _, f := range []string{"messages", "agents"} {
					want := int64(0)
					if tt.ID == real.ID && f == "messages" {
						want = 1
					}
					if got := h.usage(tt.ID, f); got != want {
						t.Errorf("%s of %s: %d, want %d", f, tt.ID, got, want)
					}
				}
			}
			if n := h.up.all.Load(); n != 1 {
				t.Errorf("upstream saw %d requests, want the one with a single line", n)
			}
		})
	}
}

func TestPlanChangeAppliesToNextRequest(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ten := h.createTenant("free")
	if r := h.call(ten.APIKey, "POST", "/api/v1/agents", `{}`); r.status != 201 {
		t.Fatalf("first agent: %d", r.status)
	}
	if r := h.call(ten.APIKey, "POST", "/api/v1/agents", `{}`); r.status != 402 {
		t.Fatalf("second agent on free: %d", r.status)
	}
	h.setPlan(ten.ID, "mini")
	if r := h.call(ten.APIKey, "POST", "/api/v1/agents", `{}`); r.status != 201 {
		t.Fatalf("second agent right after the upgrade: %d %s", r.status, r.body)
	}
	h.setPlan(ten.ID, "free")
	r := h.call(ten.APIKey, "POST", "/api/v1/agents", `{}`)
	if r.status != 402 {
		t.Fatalf("agent after the downgrade: %d %s", r.status, r.body)
	}
	var e struct {
		Plan           string
		Current, Limit int64
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Plan != "Free" || e.Current != 2 || e.Limit != 1 {
		t.Fatalf("body %s after the downgrade", r.body)
	}
}

func TestPeriodResetsAtBoundary(t *testing.T) {
	var now atomic.Pointer[time.Time]
	set := func(tm time.Time) { now.Store(&tm) }
	set(time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC))
	clock := func() time.Time { return *now.Load() }
	h := newHarness(t, harnessOpts{configPath: "testdata/tollgate.yaml", clock: clock})
	ten := h.createTenant("small")

	for i := 0; i < 11; i++ {
		h.call(ten.APIKey, "GET", "/v1/things", "")
	}
	if r := h.call(ten.APIKey, "GET", "/v1/things", ""); r.status != 429 {
		t.Fatalf("before the boundary: %d", r.status)
	}
	set(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	r := h.call(ten.APIKey, "GET", "/v1/things", "")
	if r.status != 200 || r.header.Get("X-Quota-Remaining") != "9" {
		t.Fatalf("after the boundary: %d remaining %q", r.status, r.header.Get("X-Quota-Remaining"))
	}
	// The old period's counter expires on its own.
	ttl := h.rdb.TTL(context.Background(), "tg:{"+ten.ID+"}:m:api_calls:"+strconv.FormatInt(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Unix(), 10)).Val()
	if ttl <= 0 {
		t.Fatalf("previous period's counter has no expiry (ttl %v)", ttl)
	}
}

// TestUnmeteredRoutesMakeNoRedisCall counts the commands the quota store's
// client sends while a warmed-up tenant uses unmetered routes.
func TestUnmeteredRoutesMakeNoRedisCall(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	free := h.createTenant("free")
	cmds := h.redisCommands()
	h.warm(free.APIKey, cmds)
	sent := cmds.sent
	before := sent()
	for i := 0; i < 50; i++ {
		if r := h.call(free.APIKey, "GET", "/api/v1/agents", ""); r.status != 200 {
			t.Fatalf("unmetered: %d", r.status)
		}
	}
	if got := sent() - before; got != 0 {
		t.Fatalf("50 unmetered requests sent %d Redis commands, want 0", got)
	}
	for i := 0; i < 10; i++ {
		h.call(free.APIKey, "POST", "/api/v1/messages", `{"text":"x"}`)
	}
	if got := sent() - before; got != 10 {
		t.Fatalf("10 metered requests sent %d Redis commands, want 10 (one round trip each)", got)
	}
}

// redisCommands counts, from now on, the commands proxy 0 sends to Redis:
// its client's through a hook, and the script calls that go through the
// store's pipeline (which the hook does not see) by the pipeline's count.
func (h *harness) redisCommands() *commandCount {
	c := &commandCount{store: h.proxies[0].store}
	h.proxies[0].rdb.AddHook(countHook{c})
	return c
}

type commandCount struct {
	all, lookups atomic.Int64
	store        *quota.Store
}

// sent is every command sent so far.
func (c *commandCount) sent() int64 {
	return c.all.Load() + int64(c.store.PipelinedCommands())
}

// quota is what sent counts but tenant lookups: the admin API's
// invalidation of a new tenant reaches the proxy asynchronously and may
// evict the key it cached after the warm-up request, so how often a key is
// looked up is not the quota path's to answer for.
func (c *commandCount) quota() int64 { return c.sent() - c.lookups.Load() }

type countHook struct{ c *commandCount }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.c.all.Add(1)
		if args := cmd.Args(); cmd.Name() == "get" && len(args) == 2 {
			if k, ok := args[1].(string); ok && strings.HasPrefix(k, "tg:apikey:") {
				h.c.lookups.Add(1)
			}
		}
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.c.all.Add(1)
		return next(ctx, cmds)
	}
}

// warm sends unmetered requests for key until one is answered from the
// resolver's cache (no Redis command), pausing between them so that an
// invalidation the admin API published on creating the tenant has arrived.
func (h *harness) warm(key string, c *commandCount) {
	h.t.Helper()
	for range 50 {
		before := c.sent()
		if r := h.call(key, "GET", "/api/v1/agents", ""); r.status != 200 {
			h.t.Fatalf("warm-up: %d %s", r.status, r.body)
		}
		if c.sent() == before {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatal("warm-up: every request looked the tenant up again")
}

func TestFailModes(t *testing.T) {
	// The quota store talks to a closed port: metered messages fail open,
	// gauges fail closed.
	h := newHarness(t, harnessOpts{quotaRedisURL: "redis://127.0.0.1:1/0", redisTimeout: 100 * time.Millisecond})
	free := h.createTenant("free")

	if r := h.call(free.APIKey, "POST", "/api/v1/messages", `{"text":"x"}`); r.status != http.StatusCreated {
		t.Fatalf("metered with Redis down: %d %s, want the upstream's 201", r.status, r.body)
	}
	r := h.call(free.APIKey, "POST", "/api/v1/agents", `{}`)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("gauge with Redis down: %d %s, want 503", r.status, r.body)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error != "quota_unavailable" {
		t.Fatalf("503 body %s", r.body)
	}
	if got := h.up.count("POST", "/api/v1/agents"); got != 0 {
		t.Fatalf("upstream saw %d agent creations while the gauge failed closed", got)
	}
	// A delete can only free units: it needs no check, so no fail mode
	// stops it; its decrement waits for reconcile.
	if r := h.call(free.APIKey, "DELETE", "/api/v1/agents/a1", ""); r.status != http.StatusNoContent {
		t.Fatalf("gauge delete with Redis down: %d %s, want the upstream's 204", r.status, r.body)
	}
	if got := h.up.count("DELETE", "/api/v1/agents/a1"); got != 1 {
		t.Fatalf("upstream saw %d deletes, want 1", got)
	}
}

// concurrent fires n requests at once (spread over the proxy instances)
// and returns how many got each status.
func (h *harness) concurrent(n int, key, method, path, body string) map[int]int {
	h.t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		start = make(chan struct{})
		codes = map[int]int{}
		errs  atomic.Int64
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			r, err := h.do(i%len(h.proxies), key, method, path, body)
			if err != nil {
				errs.Add(1)
				return
			}
			mu.Lock()
			codes[r.status]++
			mu.Unlock()
		}(i)
	}
	close(start)
	wg.Wait()
	if e := errs.Load(); e != 0 {
		h.t.Fatalf("%d of %d requests failed at the transport", e, n)
	}
	return codes
}

func TestConcurrentLimits(t *testing.T) {
	for _, instances := range []int{1, 4} {
		t.Run(strconv.Itoa(instances)+"-instances", func(t *testing.T) {
			// This test is about atomicity, not about a slow machine: with
			// 2,000 requests queued on two loaded cores under -race, a Redis
			// or upstream connect timeout turned into fail-open admissions
			// and 502s (TestFailModes covers those), which read like
			// over-admission. So the timeouts are generous, and messages
			// fail closed here: a timeout can only show as a 503, never as a
			// 201 past the limit.
			h := newHarness(t, harnessOpts{instances: instances, redisTimeout: 10 * time.Second,
				edit: func(s string) string {
					s = strings.Replace(s, "dial_timeout: 2s", "dial_timeout: 10s", 1)
					return strings.Replace(s, "    kind: metered\n    warning: 0.8", "    kind: metered\n    fail: closed\n    warning: 0.8", 1)
				}})
			if f := h.cfg.FeatureByName["messages"]; f.FailMode != config.FailClosed {
				t.Fatalf("messages fail mode %v, want closed", f.FailMode)
			}
			if h.cfg.Upstream.DialTimeout != 10*time.Second {
				t.Fatalf("upstream dial timeout %v, want 10s", h.cfg.Upstream.DialTimeout)
			}

			pro := h.createTenant("pro") // 5 agents
			codes := h.concurrent(500, pro.APIKey, "POST", "/api/v1/agents", `{"name":"x"}`)
			if codes[201] != 5 || codes[402] != 495 {
				t.Fatalf("500 concurrent agent creations: %v, want 5×201 and 495×402", codes)
			}
			if got := h.up.count("POST", "/api/v1/agents"); got != 5 {
				t.Fatalf("upstream received %d agent creations, want 5", got)
			}

			free := h.createTenant("free") // 250 messages
			codes = h.concurrent(2000, free.APIKey, "POST", "/api/v1/messages", `{"text":"x"}`)
			if codes[201] != 250 || codes[429] != 1750 {
				t.Fatalf("2000 concurrent messages: %v, want 250×201 and 1750×429", codes)
			}
			if got := h.up.count("POST", "/api/v1/messages"); got != 250 {
				t.Fatalf("upstream received %d messages, want 250", got)
			}
			if got := h.usage(free.ID, "messages"); got != 250 {
				t.Fatalf("messages counter %d, want 250", got)
			}
		})
	}
}

// TestConcurrentGaugeCreateDelete races deletes, which are settled after
// the upstream's 2xx without a check before forwarding, against creates on
// a full gauge, over 4 instances: a create only gets a slot a finished
// delete freed, so the gauge never passes the limit, and it ends at exactly
// the creates admitted (5 deletes cannot take it below zero).
func TestConcurrentGaugeCreateDelete(t *testing.T) {
	h := newHarness(t, harnessOpts{instances: 4, redisTimeout: 2 * time.Second})
	pro := h.createTenant("pro") // 5 agents
	for i := range 5 {
		if r := h.call(pro.APIKey, "POST", "/api/v1/agents", `{"name":"x"}`); r.status != 201 {
			t.Fatalf("create %d: %d %s", i, r.status, r.body)
		}
	}

	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		created atomic.Int64
		deleted atomic.Int64
		other   atomic.Int64
	)
	for i := range 205 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			method, path, body := "POST", "/api/v1/agents", `{"name":"x"}`
			if i%41 == 0 {
				method, path, body = "DELETE", "/api/v1/agents/a"+strconv.Itoa(i), ""
			}
			r, err := h.do(i%len(h.proxies), pro.APIKey, method, path, body)
			switch {
			case err != nil:
				other.Add(1)
			case method == "DELETE" && r.status == 204:
				deleted.Add(1)
			case method == "POST" && r.status == 201:
				created.Add(1)
			case method == "POST" && r.status == 402:
			default:
				other.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := other.Load(); n != 0 {
		t.Fatalf("%d requests failed or got an unexpected status", n)
	}
	if d := deleted.Load(); d != 5 {
		t.Fatalf("%d deletes succeeded, want 5", d)
	}
	c := created.Load()
	if c > 5 {
		t.Fatalf("%d creates admitted after 5 deletes on a full gauge of 5", c)
	}
	if got := h.usage(pro.ID, "agents"); got != c {
		t.Fatalf("agents gauge %d, want the %d creates admitted", got, c)
	}
	if got := h.up.count("POST", "/api/v1/agents"); got != 5+c {
		t.Fatalf("upstream received %d creates, want %d", got, 5+c)
	}
}

// TestTrailersStayOutOfTheHeader: on a route that reads the body, a chunked
// body's trailer fields, which fasthttp keeps with the request's header,
// are not sent upstream as header fields (RFC 9110 section 6.5.1), nor is
// the Trailer field announcing them, as the body goes up with a
// Content-Length. Header fields sent up front stay.
func TestTrailersStayOutOfTheHeader(t *testing.T) {
	type seen struct {
		header http.Header
		body   string
	}
	got := make(chan seen, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hd := r.Header.Clone()
		for k, v := range r.Trailer {
			hd["Trailer-Seen-"+k] = v
		}
		got <- seen{hd, string(b)}
		w.WriteHeader(http.StatusCreated)
	}))
	defer up.Close()
	h := newHarness(t, harnessOpts{upstreamURL: up.URL})
	mini := h.createTenant("mini")

	body := `{"type":"widget"}`
	for _, tc := range []struct {
		name, announce, trailer string
		status                  int
	}{
		{"announced", "Trailer: X-Injected, X-Other\r\n", "X-Injected: yes\r\nX-Other: 1\r\n", http.StatusCreated},
		{"not announced", "", "X-Injected: yes\r\n", http.StatusCreated},
		// fasthttp refuses a trailer that must not be one.
		{"forbidden", "", "X-Forwarded-For: 192.0.2.1\r\n", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := fmt.Sprintf("POST /api/v1/channels HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s"+
				"X-Upfront: kept\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n%x\r\n%s\r\n0\r\n%s\r\n",
				mini.APIKey, tc.announce, len(body), body, tc.trailer)
			status, b := h.rawCall(raw)
			if status != tc.status {
				t.Fatalf("%d %s, want %d", status, b, tc.status)
			}
			if status != http.StatusCreated {
				return
			}
			s := <-got
			if s.body != body {
				t.Errorf("upstream body %q, want %q", s.body, body)
			}
			for _, k := range []string{"X-Injected", "X-Other", "Trailer"} {
				if v := s.header.Values(k); len(v) > 0 {
					t.Errorf("upstream got %s: %q", k, v)
				}
			}
			if v := s.header.Get("X-Upfront"); v != "kept" {
				t.Errorf("upstream X-Upfront %q, want kept", v)
			}
		})
	}
	if got := h.usage(mini.ID, "channels"); got != 2 {
		t.Errorf("channels %d, want 2", got)
	}
}
