package config

import (
	"reflect"
	"testing"
)

// TestPingbackExample pins the demo configuration to the product spec:
// plan names, prices, limits, flags, messages and routes.
func TestPingbackExample(t *testing.T) {
	c := pingback(t)
	if c.Upstream.URL != "http://127.0.0.1:9000" || c.Listen != "127.0.0.1:8080" || c.Upstream.MaxBufferedBody != 1<<20 {
		t.Errorf("upstream %q, listen %q, max body %d", c.Upstream.URL, c.Listen, c.Upstream.MaxBufferedBody)
	}
	if c.Tenant.Source != TenantAPIKey || c.DefaultPlan != "free" {
		t.Errorf("tenant source %q, default plan %q", c.Tenant.Source, c.DefaultPlan)
	}

	features := []struct {
		name, code, message string
		kind                FeatureKind
	}{
		{"messages", "limit_exceeded", "Monthly message limit of {limit} reached. Upgrade your plan.", Metered},
		{"agents", "limit_exceeded", "Upgrade to add more agents. Current plan allows {limit} agents.", Gauge},
		{"channels", "limit_exceeded", "Upgrade to add more channels. Current plan allows {limit} channels.", Gauge},
		{"kb_articles", "limit_exceeded", "Upgrade to add more KB articles. Current plan allows {limit} KB articles.", Gauge},
		{"integrations", "feature_locked", "Omnichannel integrations (WhatsApp, Telegram, etc) are only available on Mini and Pro plans. Free plan supports Web Widget only.", Flag},
		{"ai_auto_reply", "feature_not_available", "AI auto-reply is only available on Mini and Pro plans. Upgrade to enable it.", Flag},
	}
	if len(c.Features) != len(features) {
		t.Fatalf("%d features, want %d", len(c.Features), len(features))
	}
	for i, want := range features {
		f := c.Features[i]
		if f.Name != want.name || f.Kind != want.kind || f.ErrorCode != want.code || f.Message != want.message {
			t.Errorf("feature %d = %+v, want %+v", i, f, want)
		}
	}
	if m := c.FeatureByName["messages"]; m.Warning != 0.8 || m.Grace != 1.0 || m.FailMode != FailOpen {
		t.Errorf("messages = %+v", m)
	}

	plans := []struct {
		slug, name string
		price      int64
		limits     map[string]int64
		flags      bool
	}{
		{"free", "Free", 0, map[string]int64{"messages": 250, "agents": 1, "channels": 1, "kb_articles": 10}, false},
		{"mini", "Mini", 1900, map[string]int64{"messages": 2500, "agents": 2, "channels": 3, "kb_articles": 25}, true},
		{"pro", "Pro", 4900, map[string]int64{"messages": 25000, "agents": 5, "channels": 100, "kb_articles": 1000}, true},
	}
	if len(c.Plans) != len(plans) {
		t.Fatalf("%d plans, want %d", len(c.Plans), len(plans))
	}
	for i, want := range plans {
		p := c.Plans[i]
		if p.Slug != want.slug || p.Name != want.name || p.PriceMinor != want.price || p.Currency != "USD" {
			t.Errorf("plan %d = %s %s %d %s", i, p.Slug, p.Name, p.PriceMinor, p.Currency)
		}
		got := map[string]int64{}
		for _, f := range c.Features {
			if f.Kind != Flag {
				got[f.Name] = p.Limit(f)
			} else if p.Enabled(f) != want.flags {
				t.Errorf("plan %s: %s enabled = %v, want %v", p.Slug, f.Name, p.Enabled(f), want.flags)
			}
		}
		if !reflect.DeepEqual(got, want.limits) {
			t.Errorf("plan %s limits = %v, want %v", p.Slug, got, want.limits)
		}
	}

	routes := []struct {
		method, path string
		feature      string
		amount       int64
		flag         string
	}{
		{"POST", "/api/v1/messages", "messages", 1, ""},
		{"POST", "/api/v1/agents", "agents", 1, ""},
		{"DELETE", "/api/v1/agents/a1", "agents", -1, ""},
		{"POST", "/api/v1/channels", "channels", 1, "integrations"},
		{"DELETE", "/api/v1/channels/c1", "channels", -1, ""},
		{"POST", "/api/v1/kb/articles", "kb_articles", 1, ""},
		{"DELETE", "/api/v1/kb/articles/k1", "kb_articles", -1, ""},
		{"POST", "/api/v1/ai/auto-reply", "", 0, "ai_auto_reply"},
	}
	if len(c.Routes) != len(routes) {
		t.Errorf("%d routes, want %d", len(c.Routes), len(routes))
	}
	for _, want := range routes {
		r := c.Router.Match([]byte(want.method), []byte(want.path))
		if r == nil {
			t.Errorf("%s %s: no route", want.method, want.path)
			continue
		}
		if want.feature != "" && (r.Meter == nil || r.Meter.Feature.Name != want.feature || r.Meter.Amount != want.amount) {
			t.Errorf("%s %s: meter %+v", want.method, want.path, r.Meter)
		}
		if want.feature == "" && r.Meter != nil {
			t.Errorf("%s %s: unexpected meter", want.method, want.path)
		}
		if want.flag == "" && len(r.Require) != 0 || want.flag != "" && (len(r.Require) != 1 || r.Require[0].Flag.Name != want.flag) {
			t.Errorf("%s %s: require %+v", want.method, want.path, r.Require)
		}
	}
	for _, unmetered := range [][2]string{{"GET", "/api/v1/messages"}, {"GET", "/api/v1/agents/a1"}, {"POST", "/api/v1/conversations"}} {
		if r := c.Router.Match([]byte(unmetered[0]), []byte(unmetered[1])); r != nil {
			t.Errorf("%s %s should be unmetered, got %s", unmetered[0], unmetered[1], describeRoute(r))
		}
	}

	// A widget channel needs no flag; any other type needs integrations.
	ch := c.Router.Match([]byte("POST"), []byte("/api/v1/channels"))
	for body, want := range map[string]bool{`{"type":"widget"}`: false, `{"type":"whatsapp"}`: true, `{}`: true} {
		got, err := ch.Require[0].When.Match([]byte(body))
		if err != nil || got != want {
			t.Errorf("channel condition on %s = %v, %v; want %v", body, got, err, want)
		}
	}
}
