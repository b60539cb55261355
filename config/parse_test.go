package config

import (
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func parseFile(t *testing.T, path string, env map[string]string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return Parse(path, data, func(k string) string { return env[k] })
}

func TestParseMinimalDefaults(t *testing.T) {
	c, err := parseFile(t, "testdata/minimal.yaml", nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"api_listen", c.APIListen, "127.0.0.1:8081"},
		{"procs", c.Procs, ProcsAll},
		{"scheme", c.Upstream.Scheme, "http"},
		{"host", c.Upstream.Host, "127.0.0.1:9000"},
		{"timeout", c.Upstream.Timeout, 30 * time.Second},
		{"dial_timeout", c.Upstream.DialTimeout, 2 * time.Second},
		{"max_conns", c.Upstream.MaxConns, 1024},
		{"max_buffered_body", c.Upstream.MaxBufferedBody, 1 << 20},
		{"redis.url", c.Redis.URL, "redis://127.0.0.1:6379/0"},
		{"redis.timeout", c.Redis.Timeout, 50 * time.Millisecond},
		{"redis.pool_size", c.Redis.PoolSize, 0},
		{"redis.pipeline", c.Redis.Pipeline, true},
		{"redis.reconcile_interval", c.Redis.ReconcileInterval, time.Second},
		{"tenant.source", c.Tenant.Source, TenantAPIKey},
		{"tenant.header", c.Tenant.Header, "Authorization"},
		{"default_plan", c.DefaultPlan, "free"},
		{"admin token", c.Admin.Token, ""},
		{"routes", len(c.Routes), 0},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if c.Router == nil || c.Router.Match([]byte("GET"), []byte("/")) != nil {
		t.Errorf("empty router should exist and match nothing")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseFull(t *testing.T) {
	c, err := parseFile(t, "testdata/full.yaml", map[string]string{"MY_ADMIN_TOKEN": "s3cret"})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.Upstream.Host != "api.example.test:443" || c.Upstream.Scheme != "https" || c.Upstream.MaxBufferedBody != 64<<10 {
		t.Errorf("upstream = %+v", c.Upstream)
	}
	if c.Redis.PoolSize != 8 || c.Redis.Pipeline || c.Redis.Timeout != 20*time.Millisecond || c.Redis.ReconcileInterval != 2*time.Second {
		t.Errorf("redis = %+v", c.Redis)
	}
	if c.Admin.Token != "s3cret" {
		t.Errorf("admin token = %q, want it from MY_ADMIN_TOKEN", c.Admin.Token)
	}
	if c.Procs != 3 {
		t.Errorf("procs = %v, want 3", c.Procs)
	}
	j := c.Tenant.JWT
	if c.Tenant.Header != "Authorization" || j.Algorithm != "RS256" || j.Claim != "org" || len(j.PublicKeyPEM) == 0 ||
		j.Issuer != "https://issuer.test" || j.Audience != "tollgate" {
		t.Errorf("tenant = %+v", c.Tenant)
	}

	var names []string
	for _, f := range c.Features {
		names = append(names, f.Name)
	}
	if want := []string{"messages", "ai_tokens", "seats", "export"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("features in order = %v, want %v", names, want)
	}
	msg, tok, seats, export := c.Features[0], c.Features[1], c.Features[2], c.Features[3]
	if msg.Warning != 0.9 || msg.Grace != 1.1 || msg.FailMode != FailOpen || msg.ErrorCode != "limit_exceeded" ||
		msg.Mode != ModeLease {
		t.Errorf("messages = %+v", msg)
	}
	if tok.FailMode != FailClosed || tok.Warning != 0.8 || tok.Grace != 1 || tok.Mode != ModeExact ||
		tok.Message != "Monthly {feature} limit of {limit} reached. Upgrade your plan." {
		t.Errorf("ai_tokens = %+v", tok)
	}
	if seats.FailMode != FailOpen || seats.Mode != ModeExact || seats.Message != "Upgrade to add more {feature}. Current plan allows {limit} {feature}." {
		t.Errorf("seats = %+v", seats)
	}
	if export.ErrorCode != "feature_not_available" || export.FailMode != FailClosed ||
		export.Message != "{feature} is not available on the {plan} plan." {
		t.Errorf("export = %+v", export)
	}

	solo, team := c.PlanBySlug["solo"], c.PlanBySlug["team"]
	if c.DefaultPlan != "team" || solo == nil || team == nil {
		t.Fatalf("plans = %v default %q", c.PlanBySlug, c.DefaultPlan)
	}
	if solo.Limit(seats) != 1 || team.Limit(seats) != 10 || team.Limit(tok) != Unlimited || team.Limit(msg) != 100 ||
		team.PriceMinor != 900 || team.Currency != "EUR" || team.Name != "Team" {
		t.Errorf("merged plan = %+v", team)
	}
	if solo.Enabled(export) || !team.Enabled(export) {
		t.Errorf("export flag: solo %v team %v", solo.Enabled(export), team.Enabled(export))
	}

	r := c.Routes
	if len(r) != 5 {
		t.Fatalf("routes = %d, want 5", len(r))
	}
	if r[0].Method != "POST" || r[0].Meter.Amount != 1 || r[0].Meter.Source != AmountFixed || r[0].NeedsBody {
		t.Errorf("route 0 = %+v %+v", r[0], r[0].Meter)
	}
	if m := r[1].Meter; m.Source != AmountBodyField || m.Field != "batch.count" || !r[1].NeedsBody {
		t.Errorf("route 1 meter = %+v", m)
	}
	if m := r[2].Meter; m.Source != AmountResponseHeader || m.Header != "X-Tokens-Used" || r[2].NeedsBody {
		t.Errorf("route 2 meter = %+v", m)
	}
	if m := r[3].Meter; m.Amount != -1 || m.Feature != seats {
		t.Errorf("route 3 meter = %+v", m)
	}
	if r[4].Meter != nil || len(r[4].Require) != 2 || !r[4].NeedsBody || r[4].Method != "*" {
		t.Errorf("route 4 = %+v", r[4])
	}
	if w := r[4].Require[0].When; w.Op != CondIn || !reflect.DeepEqual(w.Values, []string{"full", "2", "true", "null"}) {
		t.Errorf("route 4 condition = %+v", w)
	}
	if w := r[4].Require[1].When; w.Op != CondExists || w.Field != "meta.raw" {
		t.Errorf("route 4 condition 2 = %+v", w)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseHS256(t *testing.T) {
	c, err := parseFile(t, "testdata/hs256.yaml", map[string]string{"TEST_JWT_SECRET": "k"})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if string(c.Tenant.JWT.Secret) != "k" || c.Tenant.JWT.Claim != "tenant_id" || c.Tenant.Header != "X-Token" {
		t.Errorf("jwt = %+v header %q", c.Tenant.JWT, c.Tenant.Header)
	}
	_, err = parseFile(t, "testdata/hs256.yaml", nil)
	if err == nil || !strings.Contains(err.Error(), "hs256.yaml: tenant.jwt.secret_env: environment variable TEST_JWT_SECRET is empty") {
		t.Errorf("without the secret: %v", err)
	}
}

func TestEnvOverrides(t *testing.T) {
	env := map[string]string{
		EnvListen:        "127.0.0.1:0",
		EnvAPIListen:     "[::1]:7000",
		EnvUpstreamURL:   "http://10.0.0.1:8000/",
		EnvRedisURL:      "redis://127.0.0.1:6379/5",
		EnvDatabaseURL:   "postgresql://db/billing",
		EnvAdminToken:    "from-env",
		"MY_ADMIN_TOKEN": "from-token-env",
	}
	c, err := parseFile(t, "testdata/full.yaml", env)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got := []string{c.Listen, c.APIListen, c.Upstream.URL, c.Upstream.Host, c.Redis.URL, c.Database.URL, c.Admin.Token}
	want := []string{"127.0.0.1:0", "[::1]:7000", "http://10.0.0.1:8000", "10.0.0.1:8000", "redis://127.0.0.1:6379/5",
		"postgresql://db/billing", "from-env"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestLoadUsesProcessEnv(t *testing.T) {
	t.Setenv(EnvListen, "127.0.0.1:18080")
	t.Setenv(EnvUpstreamURL, "")
	c, err := Load("testdata/minimal.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Listen != "127.0.0.1:18080" || c.Source != "testdata/minimal.yaml" {
		t.Errorf("listen %q source %q", c.Listen, c.Source)
	}
	if _, err := Load("testdata/does-not-exist.yaml"); err == nil || !strings.Contains(err.Error(), "does-not-exist.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestEnvErrorNamesVariable(t *testing.T) {
	_, err := parseFile(t, "testdata/minimal.yaml", map[string]string{EnvUpstreamURL: "ftp://x", EnvRedisURL: "http://r"})
	for _, want := range []string{
		`testdata/minimal.yaml: env TOLLGATE_UPSTREAM_URL: expected an http:// or https:// URL, got "ftp://x"`,
		`testdata/minimal.yaml: env TOLLGATE_REDIS_URL: expected a redis:// or rediss:// URL, got "http://r"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nshould contain %s", err, want)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	text := strings.Replace(validBase, "limits: {messages: 10, agents: 1}", `limits: {messages: 10, agents: lots}`, 1)
	text = strings.Replace(text, "plans:\n", "plans:\n  - {slug: zero, name: Zero, price: {amount: 0, currency: USD}, limits: {messages: 0, agents: 0}}\n", 1)
	_, err := Parse("tollgate.yaml", []byte(text), nil)
	var list interface{ Unwrap() []error }
	if !errors.As(err, &list) || len(list.Unwrap()) != 1 {
		t.Fatalf("want exactly one error, got %v", err)
	}
	var e *Error
	if !errors.As(list.Unwrap()[0], &e) {
		t.Fatalf("error is %T, want *Error", list.Unwrap()[0])
	}
	want := `tollgate.yaml: plans[1].limits.agents: expected a whole number from 0 to 9007199254740991 (2^53-1) or "unlimited", got "lots"`
	if e.Error() != want || e.File != "tollgate.yaml" || e.Key != "plans[1].limits.agents" {
		t.Errorf("got  %s\nwant %s", e.Error(), want)
	}
}

func TestYAMLSyntaxErrorNamesLine(t *testing.T) {
	_, err := Parse("tollgate.yaml", []byte("upstream:\n  url: http://x\n plans: [\n"), nil)
	if err == nil || !strings.HasPrefix(err.Error(), "tollgate.yaml: line ") {
		t.Errorf("got %v, want an error naming file and line", err)
	}
	_, err = Parse("tollgate.yaml", []byte(validBase+"---\nlisten: x\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "only one YAML document") {
		t.Errorf("two documents: %v", err)
	}
}

func TestMultipleErrorsAllReported(t *testing.T) {
	text := `
listen: nowhere
upstream: {url: "ftp://x", timeout: soon}
features:
  messages: {kind: counter}
  agents: {kind: gauge, grace: 0.5}
plans:
  - {slug: Free, name: "", price: {amount: -1, currency: usd}}
routes:
  - {method: FETCH, path: api}
`
	_, err := Parse("t.yaml", []byte(text), nil)
	var list interface{ Unwrap() []error }
	if !errors.As(err, &list) {
		t.Fatalf("want joined errors, got %v", err)
	}
	wants := []string{
		"t.yaml: listen: expected host:port",
		"t.yaml: upstream.url: expected an http:// or https:// URL",
		"t.yaml: upstream.timeout: expected a Go duration",
		"t.yaml: features.messages.kind: expected one of metered, gauge, flag, got \"counter\"",
		"t.yaml: features.agents.grace: expected a number >= 1.0",
		"t.yaml: plans[0].slug: expected a name matching",
		"t.yaml: plans[0].name: missing",
		"t.yaml: plans[0].price.amount: expected a whole number of minor units >= 0",
		"t.yaml: plans[0].price.currency: expected a 3-letter upper-case ISO 4217 code",
		"t.yaml: plans[0].limits.agents: missing",
		"t.yaml: routes[0].method: expected GET, POST",
		"t.yaml: routes[0].path: expected a path starting with /",
		"t.yaml: routes[0]: a route needs a meter or at least one require entry",
	}
	msg := err.Error()
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q", w)
		}
	}
	if n := len(list.Unwrap()); n != len(wants) {
		t.Errorf("got %d errors, want %d:\n%s", n, len(wants), msg)
	}
}

// TestLimitBounds pins the largest limits Parse accepts to what the quota
// scripts can hold exactly: the limit and its ceiling (limit × grace) are at
// most 2^53-1.
func TestLimitBounds(t *testing.T) {
	for _, grace := range []float64{1, 1.1, 1.5, 2, 3.7} {
		max := maxLimit(grace)
		if c := ceiling(max, grace); c > maxAmount || ceiling(max+1, grace) <= maxAmount && max < maxAmount {
			t.Errorf("grace %v: maxLimit %d has ceiling %v; the next limit's is %v", grace, max, c, ceiling(max+1, grace))
		}
		for _, tc := range []struct {
			limit int64
			ok    bool
		}{{max, true}, {max + 1, false}} {
			text := strings.Replace(validBase, "{kind: metered}", "{kind: metered, grace: "+strconv.FormatFloat(grace, 'g', -1, 64)+"}", 1)
			text = strings.Replace(text, "messages: 10,", "messages: "+strconv.FormatInt(tc.limit, 10)+",", 1)
			c, err := Parse("t.yaml", []byte(text), nil)
			if (err == nil) != tc.ok {
				t.Errorf("grace %v, limit %d: err %v, want ok %v", grace, tc.limit, err, tc.ok)
				continue
			}
			if err == nil {
				if err := c.Validate(); err != nil {
					t.Errorf("grace %v, limit %d: Validate: %v", grace, tc.limit, err)
				}
			}
		}
	}
	c, err := Parse("t.yaml", []byte(validBase), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Plans[0].Limits[c.FeatureByName["messages"].Index] = maxAmount + 1
	c.Routes[0].Meter.Amount = maxAmount + 1
	err = c.Validate()
	for _, want := range []string{"plans[0].limits.messages: expected a limit from 0 to 9007199254740991 (2^53-1) or Unlimited", "routes[0].meter: amount 9007199254740992"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want it to contain %q", err, want)
		}
	}
}

func TestListenersApart(t *testing.T) {
	for _, tc := range []struct {
		listen, api string
		env         map[string]string
	}{
		{"127.0.0.1:8080", "127.0.0.1:8081", nil},
		{"127.0.0.1:8080", "127.0.0.2:8080", nil},
		{"127.0.0.1:8080", "[::1]:8080", nil},
		{"0.0.0.0:8080", "0.0.0.0:8081", nil},
		{"127.0.0.1:0", "127.0.0.1:0", nil}, // each gets a free port of its own
		{"0.0.0.0:0", "127.0.0.1:0", nil},
		// The file's addresses overlap; the environment's, which are bound, do not.
		{"127.0.0.1:8080", "127.0.0.1:8080", map[string]string{EnvAPIListen: "127.0.0.1:9091"}},
	} {
		text := "listen: '" + tc.listen + "'\napi_listen: '" + tc.api + "'\n" + validBase
		c, err := Parse("t.yaml", []byte(text), func(k string) string { return tc.env[k] })
		if err != nil {
			t.Errorf("listen %s, api_listen %s: %v", tc.listen, tc.api, err)
			continue
		}
		if err := c.Validate(); err != nil {
			t.Errorf("listen %s, api_listen %s: Validate: %v", tc.listen, tc.api, err)
		}
	}
	c, err := Parse("t.yaml", []byte(validBase), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.APIListen = "[::]:8080"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "api_listen: expected an address apart from listen's") {
		t.Errorf("Validate with api_listen [::]:8080 beside listen 127.0.0.1:8080: %v", err)
	}
}

func TestServiceURLPorts(t *testing.T) {
	for _, u := range []string{"redis://127.0.0.1:65535/0", "rediss://h/1", "redis://[::1]:6379", "redis://h:/0"} {
		if _, msg := checkRedisURL(u); msg != "" {
			t.Errorf("redis %s: %s", u, msg)
		}
	}
	for _, u := range []string{"postgres://h:1/db", "postgres://a:5432,b:5433/db", "postgres://[::1]:5433/db", "postgres:///db?host=/run/postgresql", "postgresql://h/db"} {
		if _, msg := checkDatabaseURL(u); msg != "" {
			t.Errorf("database %s: %s", u, msg)
		}
	}
}

func TestDurationMinimums(t *testing.T) {
	text := strings.Replace(validBase, "  url: http://127.0.0.1:9000\n", "  url: http://127.0.0.1:9000\n  timeout: 1ms\n  dial_timeout: 1ms\n", 1) +
		"redis: {timeout: 1ms, reconcile_interval: 10ms}\n"
	c, err := Parse("t.yaml", []byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.Timeout != time.Millisecond || c.Upstream.DialTimeout != time.Millisecond ||
		c.Redis.Timeout != time.Millisecond || c.Redis.ReconcileInterval != 10*time.Millisecond {
		t.Errorf("durations %v %v %v %v", c.Upstream.Timeout, c.Upstream.DialTimeout, c.Redis.Timeout, c.Redis.ReconcileInterval)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	c.Redis.ReconcileInterval = time.Millisecond
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "redis.reconcile_interval: expected a duration of at least 10ms, got 1ms") {
		t.Errorf("Validate with a 1ms reconcile interval: %v", err)
	}
}

func TestAdminToken(t *testing.T) {
	withEnv := strings.Replace(validBase, "upstream:", "admin: {token_env: MY_ADMIN_TOKEN}\nupstream:", 1)
	for _, tc := range []struct {
		name, text string
		env        map[string]string
		want       string
	}{
		{"no token at all", validBase, nil, ""}, // the admin API answers 401
		{"well-known variable", validBase, map[string]string{EnvAdminToken: "a"}, "a"},
		{"token_env", withEnv, map[string]string{"MY_ADMIN_TOKEN": "b"}, "b"},
		{"well-known variable wins", withEnv, map[string]string{"MY_ADMIN_TOKEN": "b", EnvAdminToken: "a"}, "a"},
		{"token_env unset, well-known variable set", withEnv, map[string]string{EnvAdminToken: "a"}, "a"},
	} {
		c, err := Parse("t.yaml", []byte(tc.text), func(k string) string { return tc.env[k] })
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else if c.Admin.Token != tc.want {
			t.Errorf("%s: token %q, want %q", tc.name, c.Admin.Token, tc.want)
		}
	}
}
