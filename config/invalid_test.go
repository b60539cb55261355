package config

import (
	"strings"
	"testing"
)

// validBase is a small valid configuration; invalid cases edit it.
const validBase = `upstream:
  url: http://127.0.0.1:9000
features:
  messages: {kind: metered}
  agents: {kind: gauge}
  integrations: {kind: flag}
plans:
  - slug: free
    name: Free
    price: {amount: 0, currency: USD}
    limits: {messages: 10, agents: 1}
routes:
  - {method: POST, path: /m, meter: {feature: messages}}
`

// edit replaces old with new in validBase, failing loudly when old is not
// there so a case cannot silently test the base.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	s := validBase
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("base has no %q", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func withRoute(route string) []string {
	return []string{"routes:\n", "routes:\n  - " + route + "\n"}
}

func withFeature(f string) []string {
	return []string{"features:\n", "features:\n  " + f + "\n"}
}

func TestValidBaseParses(t *testing.T) {
	if _, err := Parse("t.yaml", []byte(validBase), nil); err != nil {
		t.Fatalf("base: %v", err)
	}
}

func TestInvalidConfigs(t *testing.T) {
	cases := []struct {
		name  string
		edits []string
		env   map[string]string
		want  string
	}{
		{"unknown top-level key", []string{"upstream:", "listn: x\nupstream:"}, nil,
			"t.yaml: listn: unknown key; expected one of listen, api_listen"},
		{"unknown nested key", []string{"url: http", "timout: 1s\n  url: http"}, nil,
			"upstream.timout: unknown key; expected one of url, timeout"},
		{"duplicate key", []string{"url: http://127.0.0.1:9000", "url: http://127.0.0.1:9000\n  url: http://x"}, nil,
			"upstream.url: duplicate key"},
		{"merge of a number", []string{"  url: http://127.0.0.1:9000\n", "  url: http://127.0.0.1:9000\n  <<: 5\n"}, nil,
			`t.yaml: upstream.<<: expected a mapping or a list of mappings, got "5"`},
		{"merge of a string", []string{"{kind: metered}", "{kind: metered, <<: timeout}"}, nil,
			`t.yaml: features.messages.<<: expected a mapping or a list of mappings, got "timeout"`},
		{"merge of a list of numbers", []string{"upstream:", "<<: [1, 2]\nupstream:"}, nil,
			`t.yaml: <<: expected a mapping or a list of mappings, got a list holding "1"`},
		{"merge of nothing", []string{"limits: {messages: 10, agents: 1}", "limits: {<<: ~, messages: 10, agents: 1}"}, nil,
			`t.yaml: plans[0].limits.<<: expected a mapping or a list of mappings, got nothing`},
		{"merge list with a scalar", []string{"upstream:", "x_base: &b {timeout: 5s}\nupstream:\n  <<: [*b, x]"}, nil,
			`t.yaml: upstream.<<: expected a mapping or a list of mappings, got a list holding "x"`},
		{"bad listen", []string{"upstream:", "listen: 8080\nupstream:"}, nil,
			`listen: expected host:port such as 127.0.0.1:8080, got "8080"`},
		{"listen equals api_listen", []string{"upstream:", "listen: 127.0.0.1:8081\nupstream:"}, nil,
			`t.yaml: api_listen: expected an address apart from listen's, got "127.0.0.1:8081": listen is "127.0.0.1:8081", and both would take port 8081 (the same host)`},
		{"listen wildcard over api_listen", []string{"upstream:", "listen: 0.0.0.0:8081\nupstream:"}, nil,
			`t.yaml: api_listen: expected an address apart from listen's, got "127.0.0.1:8081": listen is "0.0.0.0:8081", and both would take port 8081 (a wildcard host takes the port on every address)`},
		{"api_listen IPv6 wildcard", []string{"upstream:", "api_listen: '[::]:8080'\nupstream:"}, nil,
			`t.yaml: api_listen: expected an address apart from listen's, got "[::]:8080": listen is "127.0.0.1:8080", and both would take port 8080 (a wildcard host takes the port on every address)`},
		{"api_listen empty host", []string{"upstream:", "api_listen: ':8080'\nupstream:"}, nil,
			`api_listen: expected an address apart from listen's, got ":8080"`},
		{"listen localhost", []string{"upstream:", "listen: localhost:8081\nupstream:"}, nil,
			`api_listen: expected an address apart from listen's, got "127.0.0.1:8081": listen is "localhost:8081"`},
		{"env api_listen equals listen", nil, map[string]string{EnvAPIListen: "127.0.0.1:8080"},
			`t.yaml: env TOLLGATE_API_LISTEN: expected an address apart from listen's, got "127.0.0.1:8080": listen is "127.0.0.1:8080"`},
		{"env listen equals api_listen", nil, map[string]string{EnvListen: "0.0.0.0:8081"},
			`t.yaml: api_listen: expected an address apart from TOLLGATE_LISTEN's, got "127.0.0.1:8081": TOLLGATE_LISTEN is "0.0.0.0:8081"`},
		{"missing upstream url", []string{"  url: http://127.0.0.1:9000\n", ""}, nil,
			"upstream.url: missing; expected an http:// or https:// URL (or set TOLLGATE_UPSTREAM_URL)"},
		{"upstream bad scheme", []string{"http://127.0.0.1:9000", "ftp://x"}, nil,
			`upstream.url: expected an http:// or https:// URL, got "ftp://x"`},
		{"upstream no host", []string{"http://127.0.0.1:9000", "http://"}, nil,
			"upstream.url: expected an http:// or https:// URL with a host"},
		{"upstream with path", []string{"http://127.0.0.1:9000", "http://h/api"}, nil,
			"upstream.url: expected an http:// or https:// URL of just scheme, host and port"},
		{"bad duration", []string{"url: http://127.0.0.1:9000", "url: http://127.0.0.1:9000\n  timeout: 30"}, nil,
			`upstream.timeout: expected a Go duration of at least 1ms such as 30s or 500ms, got "30"`},
		{"zero duration", []string{"url: http://127.0.0.1:9000", "url: http://127.0.0.1:9000\n  dial_timeout: 0s"}, nil,
			`upstream.dial_timeout: expected a Go duration of at least 1ms such as 30s or 500ms, got "0s"`},
		{"timeout below 1ms", []string{"url: http://127.0.0.1:9000", "url: http://127.0.0.1:9000\n  timeout: 1ns"}, nil,
			`t.yaml: upstream.timeout: expected a Go duration of at least 1ms such as 30s or 500ms, got "1ns"`},
		{"redis timeout below 1ms", []string{"upstream:", "redis: {timeout: 999us}\nupstream:"}, nil,
			`t.yaml: redis.timeout: expected a Go duration of at least 1ms such as 30s or 500ms, got "999us"`},
		{"reconcile interval below 10ms", []string{"upstream:", "redis: {reconcile_interval: 1ns}\nupstream:"}, nil,
			`t.yaml: redis.reconcile_interval: expected a Go duration of at least 10ms such as 30s or 500ms, got "1ns"`},
		{"bad size", []string{"url: http://127.0.0.1:9000", "url: http://127.0.0.1:9000\n  max_buffered_body: 1MB"}, nil,
			`upstream.max_buffered_body: expected a size > 0 and <= 1GiB`},
		{"bad max_conns", []string{"url: http://127.0.0.1:9000", "url: http://127.0.0.1:9000\n  max_conns: 0"}, nil,
			`upstream.max_conns: expected a whole number from 1 to 1048576 (2^20), got 0`},
		{"max_conns above 2^20", []string{"url: http://127.0.0.1:9000", "url: http://127.0.0.1:9000\n  max_conns: 2000000"}, nil,
			`t.yaml: upstream.max_conns: expected a whole number from 1 to 1048576 (2^20), got 2000000`},
		{"bad redis url", []string{"upstream:", "redis: {url: 'http://127.0.0.1:6379'}\nupstream:"}, nil,
			`redis.url: expected a redis:// or rediss:// URL, got "http://127.0.0.1:6379"`},
		{"bad redis db", []string{"upstream:", "redis: {url: 'redis://127.0.0.1:6379/x'}\nupstream:"}, nil,
			`redis.url: expected a redis:// or rediss:// URL, got "redis://127.0.0.1:6379/x" (`},
		{"redis port out of range", []string{"upstream:", "redis: {url: 'redis://127.0.0.1:99999/14'}\nupstream:"}, nil,
			`t.yaml: redis.url: expected a redis:// or rediss:// URL with a port between 1 and 65535, got "redis://127.0.0.1:99999/14"`},
		{"redis port 0", []string{"upstream:", "redis: {url: 'rediss://:pw@[::1]:0'}\nupstream:"}, nil,
			`redis.url: expected a redis:// or rediss:// URL with a port between 1 and 65535, got "rediss://:pw@[::1]:0"`},
		{"env redis port", nil, map[string]string{EnvRedisURL: "redis://r:65536/0"},
			`t.yaml: env TOLLGATE_REDIS_URL: expected a redis:// or rediss:// URL with a port between 1 and 65535, got "redis://r:65536/0"`},
		{"negative pool size", []string{"upstream:", "redis: {pool_size: -1}\nupstream:"}, nil,
			`redis.pool_size: expected a whole number from 0 to 65536 (2^16; 0: the client's default), got -1`},
		{"pool size above 2^16", []string{"upstream:", "redis: {pool_size: 100000}\nupstream:"}, nil,
			`t.yaml: redis.pool_size: expected a whole number from 0 to 65536 (2^16; 0: the client's default), got 100000`},
		{"pipeline not a bool", []string{"upstream:", "redis: {pipeline: sometimes}\nupstream:"}, nil,
			`redis.pipeline: expected true or false, got `},
		{"bad database url", []string{"upstream:", "database: {url: 'mysql://x'}\nupstream:"}, nil,
			`database.url: expected a postgres:// or postgresql:// URL, got "mysql://x"`},
		{"database port out of range", []string{"upstream:", "database: {url: 'postgres://127.0.0.1:99999/test'}\nupstream:"}, nil,
			`t.yaml: database.url: expected a postgres:// or postgresql:// URL with ports between 1 and 65535, got "postgres://127.0.0.1:99999/test"`},
		{"database second host's port", []string{"upstream:", "database: {url: 'postgresql://a:5432,b:0/test'}\nupstream:"}, nil,
			`database.url: expected a postgres:// or postgresql:// URL with ports between 1 and 65535, got "postgresql://a:5432,b:0/test"`},
		{"bad token env name", []string{"upstream:", "admin: {token_env: 'MY-TOKEN'}\nupstream:"}, nil,
			`admin.token_env: expected an environment variable name`},
		{"token env unset", []string{"upstream:", "admin: {token_env: MY_ADMIN_TOKEN}\nupstream:"}, nil,
			`t.yaml: admin.token_env: environment variable MY_ADMIN_TOKEN is empty or unset; it must hold the admin API token (or set TOLLGATE_ADMIN_TOKEN; leave token_env out to run without the admin API, which then answers 401 to every call)`},
		{"token env is the well-known variable, unset", []string{"upstream:", "admin: {token_env: TOLLGATE_ADMIN_TOKEN}\nupstream:"}, nil,
			`t.yaml: admin.token_env: environment variable TOLLGATE_ADMIN_TOKEN is empty or unset; it must hold the admin API token (leave token_env out to run without the admin API, which then answers 401 to every call)`},
		{"bad tenant source", []string{"upstream:", "tenant: {source: cookie}\nupstream:"}, nil,
			`tenant.source: expected one of api_key, header, jwt, got "cookie"`},
		{"bad tenant header", []string{"upstream:", "tenant: {source: header, header: 'X Tenant'}\nupstream:"}, nil,
			`tenant.header: expected an HTTP header name`},
		{"jwt block missing", []string{"upstream:", "tenant: {source: jwt}\nupstream:"}, nil,
			`tenant.jwt: missing; required when tenant.source is jwt`},
		{"jwt without jwt source", []string{"upstream:", "tenant: {jwt: {algorithm: HS256}}\nupstream:"}, nil,
			`tenant.jwt: only allowed when tenant.source is jwt (source is api_key)`},
		{"jwt bad algorithm", []string{"upstream:", "tenant: {source: jwt, jwt: {algorithm: ES256}}\nupstream:"}, nil,
			`tenant.jwt.algorithm: expected HS256 or RS256, got "ES256"`},
		{"jwt without secret", []string{"upstream:", "tenant: {source: jwt, jwt: {algorithm: HS256}}\nupstream:"}, nil,
			`tenant.jwt.secret_env: missing; HS256 needs the name of an environment variable holding the secret`},
		{"jwt secret env empty", []string{"upstream:", "tenant: {source: jwt, jwt: {algorithm: HS256, secret_env: S}}\nupstream:"}, nil,
			`tenant.jwt.secret_env: environment variable S is empty or unset`},
		{"jwt rs256 without key", []string{"upstream:", "tenant: {source: jwt, jwt: {algorithm: RS256}}\nupstream:"}, nil,
			`tenant.jwt.public_key_file: missing; RS256 needs a PEM public key file`},
		{"jwt rs256 missing file", []string{"upstream:", "tenant: {source: jwt, jwt: {algorithm: RS256, public_key_file: nope.pem}}\nupstream:"}, nil,
			`tenant.jwt.public_key_file: cannot read the public key`},
		{"jwt rs256 not rsa", []string{"upstream:", "tenant: {source: jwt, jwt: {algorithm: RS256, public_key_file: keys/ec.pem}}\nupstream:"}, nil,
			`tenant.jwt.public_key_file: expected a PEM-encoded RSA public key`},
		{"jwt secret with rs256", []string{"upstream:", "tenant: {source: jwt, jwt: {algorithm: RS256, public_key_file: keys/jwt.pem, secret_env: S}}\nupstream:"}, nil,
			`tenant.jwt.secret_env: only for HS256`},
		{"bad kind", []string{"{kind: metered}", "{kind: counter}"}, nil,
			`features.messages.kind: expected one of metered, gauge, flag, got "counter"`},
		{"missing kind", []string{"{kind: metered}", "{warning: 0.5}"}, nil,
			`features.messages.kind: missing; expected one of metered, gauge, flag`},
		{"bad feature name", withFeature("Bad.Name: {kind: flag}"), nil,
			`features.Bad.Name: expected a name matching`},
		{"grace below 1", []string{"{kind: metered}", "{kind: metered, grace: 0.9}"}, nil,
			`features.messages.grace: expected a number >= 1.0 (1.0: a hard limit), got 0.9`},
		{"warning above grace", []string{"{kind: metered}", "{kind: metered, warning: 1.2, grace: 1.1}"}, nil,
			`features.messages.warning: expected a fraction > 0 and <= grace (1.1), got 1.2`},
		{"warning zero", []string{"{kind: metered}", "{kind: metered, warning: 0}"}, nil,
			`features.messages.warning: expected a fraction > 0 and <= grace (1), got 0`},
		{"warning not a number", []string{"{kind: metered}", "{kind: metered, warning: high}"}, nil,
			`features.messages.warning: expected a fraction > 0 and <= grace (1), got "high"`},
		{"warning on flag", []string{"integrations: {kind: flag}", "integrations: {kind: flag, warning: 0.5}"}, nil,
			`features.integrations.warning: not allowed for flag features`},
		{"bad fail mode", []string{"{kind: metered}", "{kind: metered, fail: maybe}"}, nil,
			`features.messages.fail: expected open or closed, got "maybe"`},
		{"bad quota mode", []string{"{kind: metered}", "{kind: metered, mode: fuzzy}"}, nil,
			`features.messages.mode: expected exact or lease, got "fuzzy"`},
		{"lease on gauge", []string{"{kind: gauge}", "{kind: gauge, mode: lease}"}, nil,
			`features.agents.mode: lease is only allowed for metered features, not gauge`},
		{"lease on flag", []string{"integrations: {kind: flag}", "integrations: {kind: flag, mode: lease}"}, nil,
			`features.integrations.mode: lease is only allowed for metered features, not flag`},
		{"error on gauge", []string{"{kind: gauge}", "{kind: gauge, error: feature_locked}"}, nil,
			`features.agents.error: only allowed for flag features`},
		{"bad flag error", []string{"integrations: {kind: flag}", "integrations: {kind: flag, error: nope}"}, nil,
			`features.integrations.error: expected feature_locked or feature_not_available, got "nope"`},
		{"unknown placeholder", []string{"{kind: metered}", "{kind: metered, message: 'over {limt}'}"}, nil,
			`features.messages.message: unknown placeholder {limt}`},
		{"feature not a mapping", []string{"{kind: metered}", "metered"}, nil,
			`features.messages: expected a mapping with at least a kind, got "metered"`},
		{"no plans", []string{"plans:", "plans: []\nx_plans:"}, nil, `plans: missing; expected a list of at least one plan`},
		{"plans not a list", []string{"plans:", "plans: {}\nx_plans:"}, nil, `plans: expected a list, got a mapping`},
		{"duplicate plan", []string{"plans:\n", "plans:\n  - {slug: free, name: F, price: {amount: 0, currency: USD}, limits: {messages: 1, agents: 1}}\n"}, nil,
			`plans[1].slug: duplicate plan "free" (already declared as plans[0])`},
		{"bad slug", []string{"slug: free", "slug: Free Plan"}, nil,
			`plans[0].slug: expected a name matching ^[a-z0-9][a-z0-9_-]{0,62}$, got "Free Plan"`},
		{"missing name", []string{"    name: Free\n", ""}, nil, `plans[0].name: missing`},
		{"missing price", []string{"    price: {amount: 0, currency: USD}\n", ""}, nil, `plans[0].price: missing`},
		{"fractional price", []string{"amount: 0,", "amount: 1.5,"}, nil,
			`plans[0].price.amount: expected a whole number of minor units >= 0 (1900 = 19.00), got "1.5"`},
		{"bad currency", []string{"currency: USD", "currency: dollars"}, nil,
			`plans[0].price.currency: expected a 3-letter upper-case ISO 4217 code such as USD, got "dollars"`},
		{"bad limit", []string{"agents: 1}", "agents: lots}"}, nil,
			`plans[0].limits.agents: expected a whole number from 0 to 9007199254740991 (2^53-1) or "unlimited", got "lots"`},
		{"negative limit", []string{"agents: 1}", "agents: -1}"}, nil,
			`plans[0].limits.agents: expected a whole number from 0 to 9007199254740991 (2^53-1) or "unlimited", got "-1"`},
		{"limit above 2^53-1", []string{"agents: 1}", "agents: 9007199254740992}"}, nil,
			`plans[0].limits.agents: expected a whole number from 0 to 9007199254740991 (2^53-1) or "unlimited", got "9007199254740992"`},
		{"limit beyond int64", []string{"agents: 1}", "agents: 99999999999999999999}"}, nil,
			`plans[0].limits.agents: expected a whole number from 0 to 9007199254740991 (2^53-1) or "unlimited", got "99999999999999999999"`},
		{"ceiling above 2^53-1", []string{"{kind: metered}", "{kind: metered, grace: 1.5}", "messages: 10,", "messages: 9007199254740991,"}, nil,
			`plans[0].limits.messages: expected at most 6004799503160660, so that the ceiling (limit × messages's grace 1.5) stays within 9007199254740991 (2^53-1), got 9007199254740991`},
		{"missing limit", []string{", agents: 1}", "}"}, nil,
			`plans[0].limits.agents: missing; every metered and gauge feature needs a limit`},
		{"unknown feature in limits", []string{"agents: 1}", "agents: 1, seats: 3}"}, nil,
			`plans[0].limits.seats: unknown feature; declare it under features`},
		{"flag in limits", []string{"agents: 1}", "agents: 1, integrations: 1}"}, nil,
			`plans[0].limits.integrations: integrations is a flag feature; list it under flags instead`},
		{"unknown flag", []string{"agents: 1}", "agents: 1}\n    flags: [sso]"}, nil,
			`plans[0].flags[0]: unknown feature "sso"`},
		{"gauge in flags", []string{"agents: 1}", "agents: 1}\n    flags: [agents]"}, nil,
			`plans[0].flags[0]: agents is a gauge feature, not a flag`},
		{"bad default plan", []string{"plans:", "default_plan: gold\nplans:"}, nil,
			`default_plan: expected the slug of a declared plan, got "gold"`},
		{"route without meter or require", withRoute("{method: GET, path: /x}"), nil,
			`routes[0]: a route needs a meter or at least one require entry`},
		{"bad method", withRoute("{method: FETCH, path: /x, meter: {feature: messages}}"), nil,
			`routes[0].method: expected GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or "*", got "FETCH"`},
		{"path without slash", withRoute("{method: GET, path: x, meter: {feature: messages}}"), nil,
			`routes[0].path: expected a path starting with /`},
		{"bad param", withRoute("{method: GET, path: '/a/x{id}', meter: {feature: messages}}"), nil,
			`routes[0].path: expected a path starting with / made of literal segments and {name} parameters; a parameter is a whole segment`},
		{"empty segment", withRoute("{method: GET, path: '/a//b', meter: {feature: messages}}"), nil,
			`routes[0].path: expected a path starting with / made of literal segments and {name} parameters (no empty segments)`},
		{"query in path", withRoute("{method: GET, path: '/a?b=1', meter: {feature: messages}}"), nil,
			`(no spaces, control characters, ? or #)`},
		{"bad escape in path", withRoute("{method: GET, path: '/files/a%zz', meter: {feature: messages}}"), nil,
			`t.yaml: routes[0].path: expected a path starting with / made of literal segments and {name} parameters; a % starts an escape of two hex digits such as %20, got "/files/a%zz"`},
		{"cut escape in path", withRoute("{method: GET, path: '/files/a%2', meter: {feature: messages}}"), nil,
			`routes[0].path: expected a path starting with / made of literal segments and {name} parameters; a % starts an escape of two hex digits such as %20, got "/files/a%2"`},
		{"escaped slash in path", withRoute("{method: GET, path: '/files/a%2fb', meter: {feature: messages}}"), nil,
			`t.yaml: routes[0].path: expected a path starting with / made of literal segments and {name} parameters; an escaped / (%2F) never matches, as request paths are decoded before matching: write / between segments, got "/files/a%2fb"`},
		{"escaped question mark in path", withRoute("{method: GET, path: '/files/a%3Fb', meter: {feature: messages}}"), nil,
			`routes[0].path: expected a path starting with / made of literal segments and {name} parameters; an escaped ? (%3F) never matches, got "/files/a%3Fb"`},
		{"escaped dot segment", withRoute("{method: GET, path: '/files/%2E%2E/x', meter: {feature: messages}}"), nil,
			`routes[0].path: expected a path starting with / made of literal segments and {name} parameters (no . or .. segments, escaped or not), got "/files/%2E%2E/x"`},
		{"duplicate route by escape", []string{"routes:\n", "routes:\n  - {method: GET, path: /p/A, meter: {feature: messages}}\n  - {method: GET, path: /p/%41, meter: {feature: messages}}\n"}, nil,
			`routes[1]: duplicate route GET /p/%41 (same method and path as routes[0], /p/A, as the router compares them: escapes decoded, parameter names and a trailing slash ignored)`},
		{"duplicate param", withRoute("{method: GET, path: '/a/{id}/{id}', meter: {feature: messages}}"), nil,
			`parameter {id} appears twice`},
		{"duplicate route", withRoute("{method: post, path: /m, meter: {feature: agents}}"), nil,
			`routes[1]: duplicate route POST /m (same method and path as routes[0])`},
		{"duplicate route by shape", []string{"routes:\n", "routes:\n  - {method: GET, path: '/a/{x}', meter: {feature: messages}}\n  - {method: GET, path: '/a/{y}', meter: {feature: messages}}\n"}, nil,
			`routes[1]: duplicate route GET /a/{y} (same method and path as routes[0], /a/{x}, as the router compares them: escapes decoded, parameter names and a trailing slash ignored)`},
		{"duplicate route by trailing slash", []string{"routes:\n", "routes:\n  - {method: GET, path: '/a/{x}', meter: {feature: messages}}\n  - {method: GET, path: '/a/{x}/', meter: {feature: messages}}\n"}, nil,
			`routes[1]: duplicate route GET /a/{x}/ (same method and path as routes[0], /a/{x}, as the router compares them: escapes decoded, parameter names and a trailing slash ignored)`},
		{"unknown meter feature", withRoute("{method: GET, path: /x, meter: {feature: seats}}"), nil,
			`routes[0].meter.feature: unknown feature "seats"; expected the name of a metered or gauge feature`},
		{"flag in meter", withRoute("{method: GET, path: /x, meter: {feature: integrations}}"), nil,
			`routes[0].meter.feature: integrations is a flag feature; flags are checked with require, not metered`},
		{"zero amount", withRoute("{method: GET, path: /x, meter: {feature: agents, amount: 0}}"), nil,
			`routes[0].meter.amount: expected a whole number other than 0 within ±9007199254740991 (2^53-1), got 0`},
		{"negative amount on metered", withRoute("{method: GET, path: /x, meter: {feature: messages, amount: -1}}"), nil,
			`routes[0].meter.amount: expected a whole number from 1 to 9007199254740991 (2^53-1) (negative amounts are only for gauges), got -1`},
		{"amount above 2^53-1", withRoute("{method: GET, path: /x, meter: {feature: messages, amount: 9007199254740992}}"), nil,
			`routes[0].meter.amount: expected a whole number from 1 to 9007199254740991 (2^53-1) (negative amounts are only for gauges), got 9007199254740992`},
		{"gauge amount below -(2^53-1)", withRoute("{method: DELETE, path: /x, meter: {feature: agents, amount: -9007199254740992}}"), nil,
			`routes[0].meter.amount: expected a whole number other than 0 within ±9007199254740991 (2^53-1), got -9007199254740992`},
		{"amount and amount_from", withRoute("{method: GET, path: /x, meter: {feature: messages, amount: 2, amount_from: {body_field: n}}}"), nil,
			`routes[0].meter: amount and amount_from are exclusive`},
		{"response_header on gauge", withRoute("{method: GET, path: /x, meter: {feature: agents, amount_from: {response_header: X-N}}}"), nil,
			`routes[0].meter.amount_from.response_header: only allowed for metered features; agents is a gauge`},
		{"both amount sources", withRoute("{method: GET, path: /x, meter: {feature: messages, amount_from: {response_header: X-N, body_field: n}}}"), nil,
			`routes[0].meter.amount_from: body_field and response_header are exclusive`},
		{"empty amount_from", withRoute("{method: GET, path: /x, meter: {feature: messages, amount_from: {}}}"), nil,
			`routes[0].meter.amount_from: expected body_field or response_header`},
		{"bad body field", withRoute("{method: GET, path: /x, meter: {feature: messages, amount_from: {body_field: 'a..b'}}}"), nil,
			`routes[0].meter.amount_from.body_field: expected a dot-separated JSON field path`},
		{"meter in require", withRoute("{method: GET, path: /x, require: [{flag: agents}]}"), nil,
			`routes[0].require[0].flag: agents is a gauge feature, not a flag`},
		{"unknown require flag", withRoute("{method: GET, path: /x, require: [{flag: sso}]}"), nil,
			`routes[0].require[0].flag: unknown feature "sso"; expected the name of a flag feature`},
		{"condition with two ops", withRoute("{method: GET, path: /x, require: [{flag: integrations, when: {field: t, equals: a, in: [b]}}]}"), nil,
			`routes[0].require[0].when: expected exactly one of equals, not_equals, in, not_in, exists; got 2`},
		{"condition without op", withRoute("{method: GET, path: /x, require: [{flag: integrations, when: {field: t}}]}"), nil,
			`routes[0].require[0].when: expected exactly one of equals, not_equals, in, not_in, exists; got 0`},
		{"condition without field", withRoute("{method: GET, path: /x, require: [{flag: integrations, when: {equals: a}}]}"), nil,
			`routes[0].require[0].when.field: expected a dot-separated JSON field path such as count or channel.type, got nothing`},
		{"condition empty in", withRoute("{method: GET, path: /x, require: [{flag: integrations, when: {field: t, in: []}}]}"), nil,
			`routes[0].require[0].when.in: expected a non-empty list of values`},
		{"condition object value", withRoute("{method: GET, path: /x, require: [{flag: integrations, when: {field: t, equals: {a: 1}}}]}"), nil,
			`routes[0].require[0].when.equals: expected a string, number, boolean or null, got a mapping`},
		{"condition exists not bool", withRoute("{method: GET, path: /x, require: [{flag: integrations, when: {field: t, exists: maybe}}]}"), nil,
			`routes[0].require[0].when.exists: expected true or false, got "maybe"`},
		{"env listen", nil, map[string]string{EnvListen: "localhost"},
			`t.yaml: env TOLLGATE_LISTEN: expected host:port such as 127.0.0.1:8080, got "localhost"`},
		{"env database", nil, map[string]string{EnvDatabaseURL: "sqlite:x"},
			`t.yaml: env TOLLGATE_DATABASE_URL: expected a postgres:// or postgresql:// URL, got "sqlite:x"`},
		{"not a mapping", []string{validBase, "- a\n- b\n"}, nil, `t.yaml: expected a mapping, got a list`},
		{"plan not a mapping", []string{"plans:\n", "plans:\n  - free\n"}, nil,
			`plans[0]: expected a plan mapping with slug, name, price, limits and flags, got "free"`},
		{"route not a mapping", withRoute("/x"), nil,
			`routes[0]: expected a route mapping with method, path and meter or require, got "/x"`},
		{"alias bomb", []string{validBase, validBase + aliasBomb}, nil, `document is too large once its aliases are expanded`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := edit(t, tc.edits...)
			_, err := Parse("testdata/t.yaml", []byte(text), func(k string) string { return tc.env[k] })
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			want := strings.Replace(tc.want, "t.yaml: ", "testdata/t.yaml: ", 1)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, want)
			}
		})
	}
}

const aliasBomb = `x_a: &a [x, x, x, x, x, x, x, x, x, x]
x_b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
x_c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
x_d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
x_e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
x_f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
x_g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
`
