package config

import (
	"fmt"
	"math"
	"time"
)

// Validate checks the invariants the rest of Tollgate relies on. Parse only
// returns configurations that pass it; it is for configurations built or
// changed in code (tests, tools), and it returns *Error values like Parse.
func (c *Config) Validate() error {
	p := &problems{file: c.Source}
	if msg := listenOverlap(c.Listen, c.APIListen, "listen"); msg != "" {
		p.add("api_listen", "%s", msg)
	}
	if _, msg := checkUpstreamURL(c.Upstream.URL); msg != "" {
		p.add("upstream.url", "%s", msg)
	}
	if c.Upstream.Scheme == "" || c.Upstream.Host == "" {
		p.add("upstream", "Scheme and Host must be derived from the URL")
	}
	for _, v := range []struct {
		key string
		n   int64
	}{
		{"upstream.max_conns", int64(c.Upstream.MaxConns)},
		{"upstream.max_buffered_body", int64(c.Upstream.MaxBufferedBody)},
	} {
		if v.n <= 0 {
			p.add(v.key, "expected a value > 0, got %d", v.n)
		}
	}
	for _, v := range []struct {
		key    string
		d, min time.Duration
	}{
		{"upstream.timeout", c.Upstream.Timeout, minTimeout},
		{"upstream.dial_timeout", c.Upstream.DialTimeout, minTimeout},
		{"redis.timeout", c.Redis.Timeout, minTimeout},
		{"redis.reconcile_interval", c.Redis.ReconcileInterval, minInterval},
	} {
		if v.d < v.min {
			p.add(v.key, "expected a duration of at least %s, got %s", v.min, v.d)
		}
	}
	if c.Upstream.MaxConns > 1<<20 {
		p.add("upstream.max_conns", "expected a whole number from 1 to 1048576 (2^20), got %d", c.Upstream.MaxConns)
	}
	if c.Redis.PoolSize < 0 || c.Redis.PoolSize > 1<<16 {
		p.add("redis.pool_size", "expected a whole number from 0 to 65536 (2^16), got %d", c.Redis.PoolSize)
	}
	if _, msg := checkRedisURL(c.Redis.URL); msg != "" {
		p.add("redis.url", "%s", msg)
	}
	c.validateFeatures(p)
	c.validatePlans(p)
	c.validateRoutes(p)
	return p.err()
}

func (c *Config) validateFeatures(p *problems) {
	if len(c.FeatureByName) != len(c.Features) {
		p.add("features", "FeatureByName has %d entries for %d features", len(c.FeatureByName), len(c.Features))
	}
	for i, f := range c.Features {
		key := join("features", fmt.Sprint(i))
		if f == nil {
			p.add(key, "nil feature")
			continue
		}
		key = join("features", f.Name)
		switch {
		case f.Index != i:
			p.add(key, "Index is %d, expected %d", f.Index, i)
		case c.FeatureByName[f.Name] != f:
			p.add(key, "FeatureByName does not hold this feature")
		case f.Kind < Metered || f.Kind > Flag:
			p.add(join(key, "kind"), "unknown kind %d", f.Kind)
		case f.FailMode != FailOpen && f.FailMode != FailClosed:
			p.add(join(key, "fail"), "unknown fail mode %d", f.FailMode)
		case f.Message == "":
			p.add(join(key, "message"), "empty message")
		case f.Mode > ModeLease: // 0 (set in code, not parsed) means exact
			p.add(join(key, "mode"), "unknown quota mode %d", f.Mode)
		case f.Mode == ModeLease && f.Kind != Metered:
			p.add(join(key, "mode"), "lease is only allowed for metered features, not %s", f.Kind)
		}
		if f.Kind != Flag && (math.IsNaN(f.Grace) || f.Grace < 1 || !(f.Warning > 0 && f.Warning <= f.Grace)) {
			p.add(key, "expected 0 < warning <= grace and grace >= 1, got warning %v, grace %v", f.Warning, f.Grace)
		}
		want := f.ErrorCode == "limit_exceeded"
		if f.Kind == Flag {
			want = f.ErrorCode == "feature_locked" || f.ErrorCode == "feature_not_available"
		}
		if !want {
			p.add(join(key, "error"), "error code %q does not fit a %s feature", f.ErrorCode, f.Kind)
		}
	}
}

func (c *Config) validatePlans(p *problems) {
	if len(c.Plans) == 0 {
		p.add("plans", "expected at least one plan")
	}
	if len(c.PlanBySlug) != len(c.Plans) {
		p.add("plans", "PlanBySlug has %d entries for %d plans", len(c.PlanBySlug), len(c.Plans))
	}
	for i, pl := range c.Plans {
		key := index("plans", i)
		if pl == nil {
			p.add(key, "nil plan")
			continue
		}
		if !nameRE.MatchString(pl.Slug) || c.PlanBySlug[pl.Slug] != pl {
			p.add(join(key, "slug"), "slug %q is invalid or not indexed in PlanBySlug", pl.Slug)
		}
		if pl.Name == "" || pl.PriceMinor < 0 || !currencyRE.MatchString(pl.Currency) {
			p.add(key, "expected a name, a price >= 0 and a currency code")
		}
		if len(pl.Limits) != len(c.Features) || len(pl.Flags) != len(c.Features) {
			p.add(key, "Limits and Flags must have one entry per feature")
			continue
		}
		for _, f := range c.Features {
			if f == nil || f.Kind == Flag {
				continue
			}
			switch l := pl.Limits[f.Index]; {
			case l < Unlimited || l > maxAmount:
				p.add(join(join(key, "limits"), f.Name), "expected a limit from 0 to %s or Unlimited, got %d", maxAmountText, l)
			case l >= 0 && ceiling(l, f.Grace) > maxAmount:
				p.add(join(join(key, "limits"), f.Name), "expected a limit whose ceiling (limit × grace %s) is at most %s, got %d",
					formatFloat(f.Grace), maxAmountText, l)
			}
		}
	}
	if c.PlanBySlug[c.DefaultPlan] == nil {
		p.add("default_plan", "expected the slug of a declared plan, got %s", quote(c.DefaultPlan))
	}
}

func (c *Config) validateRoutes(p *problems) {
	known := map[*Feature]bool{}
	for _, f := range c.Features {
		known[f] = true
	}
	for i, rt := range c.Routes {
		key := index("routes", i)
		if rt == nil {
			p.add(key, "nil route")
			continue
		}
		if rt.Meter == nil && len(rt.Require) == 0 {
			p.add(key, "a route needs a meter or at least one requirement")
		}
		needsBody := false
		if m := rt.Meter; m != nil {
			mk := join(key, "meter")
			switch {
			case !known[m.Feature] || m.Feature.Kind == Flag:
				p.add(mk, "expected a metered or gauge feature of this configuration")
			case m.Source == AmountFixed && (m.Amount == 0 || (m.Amount < 0 && m.Feature.Kind != Gauge) ||
				m.Amount < -maxAmount || m.Amount > maxAmount):
				p.add(mk, "amount %d does not fit a %s feature", m.Amount, m.Feature.Kind)
			case m.Source == AmountBodyField && !validFieldPath(m.Field):
				p.add(mk, "expected a body field path, got %q", m.Field)
			case m.Source == AmountResponseHeader && (m.Feature.Kind != Metered || !headerNameRE.MatchString(m.Header)):
				p.add(mk, "response header amounts need a metered feature and a header name")
			case m.Source < AmountFixed || m.Source > AmountResponseHeader:
				p.add(mk, "unknown amount source %d", m.Source)
			}
			needsBody = m.Source == AmountBodyField
		}
		for j, req := range rt.Require {
			rk := index(join(key, "require"), j)
			if !known[req.Flag] || req.Flag.Kind != Flag {
				p.add(rk, "expected a flag feature of this configuration")
			}
			if w := req.When; w != nil {
				needsBody = true
				if !validFieldPath(w.Field) || w.Op < CondEquals || w.Op > CondNotExists {
					p.add(rk, "malformed body condition")
				}
			}
		}
		if rt.NeedsBody != needsBody {
			p.add(key, "NeedsBody is %v, expected %v", rt.NeedsBody, needsBody)
		}
	}
	if c.Router == nil {
		p.add("routes", "Router is not compiled")
	} else if _, err := NewRouter(c.Routes); err != nil {
		p.add("routes", "%v", err)
	}
}
