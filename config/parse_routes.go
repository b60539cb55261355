package config

import (
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

func (p *parser) routes(n *yaml.Node) {
	c := p.cfg
	type firstRoute struct {
		i       int
		pattern string
	}
	first := map[string]firstRoute{}
	for i, item := range p.list(n, "routes") {
		key := index("routes", i)
		rt, shape := p.route(item, key)
		if rt == nil {
			continue
		}
		dupKey := rt.Method + " " + shape
		if f, dup := first[dupKey]; dup {
			if f.pattern == rt.Pattern {
				p.add(key, "duplicate route %s %s (same method and path as routes[%d])", rt.Method, rt.Pattern, f.i)
			} else {
				p.add(key, "duplicate route %s %s (same method and path as routes[%d], %s, as the router compares them: escapes decoded, parameter names and a trailing slash ignored)",
					rt.Method, rt.Pattern, f.i, f.pattern)
			}
			continue
		}
		first[dupKey] = firstRoute{i, rt.Pattern}
		c.Routes = append(c.Routes, rt)
	}
	if len(p.errs) > 0 {
		return
	}
	r, err := NewRouter(c.Routes)
	if err != nil {
		p.add("routes", "%v", err)
		return
	}
	c.Router = r
}

// route parses one route; it returns nil when the method or path is
// unusable, and the path's shape for duplicate detection.
func (p *parser) route(n *yaml.Node, key string) (*Route, string) {
	if !p.isMapping(n, key, "a route mapping with method, path and meter or require") {
		return nil, ""
	}
	o := p.object(n, key, "method", "path", "meter", "require")
	rt := &Route{}
	usable := true

	if m, ok := p.str(o.get("method"), join(key, "method"), methodExpect); ok {
		rt.Method = strings.ToUpper(m)
		if !validMethod(rt.Method) {
			p.add(join(key, "method"), "expected %s, got %s", methodExpect, quote(m))
			usable = false
		}
	} else {
		if isNull(o.get("method")) {
			p.add(join(key, "method"), "missing; expected %s", methodExpect)
		}
		usable = false
	}

	var shape string
	if path, ok := p.str(o.get("path"), join(key, "path"), "a path such as /api/v1/agents/{id}"); ok {
		segs, msg := splitPattern(path)
		if msg != "" {
			p.add(join(key, "path"), "%s", msg)
			usable = false
		}
		rt.Pattern, shape = path, patternShape(segs)
	} else {
		if isNull(o.get("path")) {
			p.add(join(key, "path"), "missing; expected a path such as /api/v1/agents/{id}")
		}
		usable = false
	}

	if !isNull(o.get("meter")) {
		rt.Meter = p.meter(o.get("meter"), join(key, "meter"))
		if rt.Meter != nil && rt.Meter.Source == AmountBodyField {
			rt.NeedsBody = true
		}
	}
	reqs := p.list(o.get("require"), join(key, "require"))
	for i, item := range reqs {
		req, ok := p.requirement(item, index(join(key, "require"), i))
		if !ok {
			continue
		}
		rt.Require = append(rt.Require, req)
		if req.When != nil {
			rt.NeedsBody = true
		}
	}
	if isNull(o.get("meter")) && len(reqs) == 0 {
		p.add(key, "a route needs a meter or at least one require entry")
	}
	if !usable {
		return nil, ""
	}
	return rt, shape
}

func (p *parser) meter(n *yaml.Node, key string) *Meter {
	o := p.object(n, key, "feature", "amount", "amount_from")
	m := &Meter{Source: AmountFixed, Amount: 1}
	const featureExpect = "the name of a metered or gauge feature"
	name, ok := p.str(o.get("feature"), join(key, "feature"), featureExpect)
	if !ok {
		if isNull(o.get("feature")) {
			p.add(join(key, "feature"), "missing; expected %s", featureExpect)
		}
		return nil
	}
	f := p.cfg.FeatureByName[name]
	switch {
	case f == nil:
		p.add(join(key, "feature"), "unknown feature %s; expected %s", quote(name), featureExpect)
		return nil
	case p.bad[name]:
		return nil
	case f.Kind == Flag:
		p.add(join(key, "feature"), "%s is a flag feature; flags are checked with require, not metered", name)
		return nil
	}
	m.Feature = f

	if o.get("amount") != nil && o.get("amount_from") != nil {
		p.add(key, "amount and amount_from are exclusive; give one")
		return m
	}
	amountExpect := "a whole number other than 0 within ±" + maxAmountText
	if f.Kind == Metered {
		amountExpect = "a whole number from 1 to " + maxAmountText + " (negative amounts are only for gauges)"
	}
	if v, ok := p.integer(o.get("amount"), join(key, "amount"), amountExpect); ok {
		if v == 0 || (v < 0 && f.Kind != Gauge) || v < -maxAmount || v > maxAmount {
			p.add(join(key, "amount"), "expected %s, got %d", amountExpect, v)
		} else {
			m.Amount = v
		}
	}
	if !isNull(o.get("amount_from")) {
		p.amountFrom(m, o.get("amount_from"), join(key, "amount_from"))
	}
	return m
}

func (p *parser) amountFrom(m *Meter, n *yaml.Node, key string) {
	o := p.object(n, key, "body_field", "response_header")
	field, hasField := p.str(o.get("body_field"), join(key, "body_field"), fieldExpect)
	header, hasHeader := p.str(o.get("response_header"), join(key, "response_header"), headerExpect)
	switch {
	case hasField && hasHeader:
		p.add(key, "body_field and response_header are exclusive; give one")
	case hasField:
		if !validFieldPath(field) {
			p.add(join(key, "body_field"), "expected %s, got %s", fieldExpect, quote(field))
			return
		}
		m.Source, m.Amount, m.Field = AmountBodyField, 0, field
	case hasHeader:
		if !headerNameRE.MatchString(header) {
			p.add(join(key, "response_header"), "expected %s, got %s", headerExpect, quote(header))
			return
		}
		if m.Feature.Kind != Metered {
			p.add(join(key, "response_header"), "only allowed for metered features; %s is a %s", m.Feature.Name, m.Feature.Kind)
			return
		}
		m.Source, m.Amount, m.Header = AmountResponseHeader, 0, header
	default:
		if o.get("body_field") == nil && o.get("response_header") == nil {
			p.add(key, "expected body_field or response_header")
		}
	}
}

const fieldExpect = "a dot-separated JSON field path such as count or channel.type"

func validFieldPath(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" {
			return false
		}
	}
	return true
}

func (p *parser) requirement(n *yaml.Node, key string) (Requirement, bool) {
	if !p.isMapping(n, key, "a mapping such as {flag: integrations}") {
		return Requirement{}, false
	}
	o := p.object(n, key, "flag", "when")
	const flagExpect = "the name of a flag feature"
	name, ok := p.str(o.get("flag"), join(key, "flag"), flagExpect)
	var req Requirement
	if !ok {
		if isNull(o.get("flag")) {
			p.add(join(key, "flag"), "missing; expected %s", flagExpect)
		}
	} else {
		f := p.cfg.FeatureByName[name]
		switch {
		case f == nil:
			p.add(join(key, "flag"), "unknown feature %s; expected %s", quote(name), flagExpect)
		case p.bad[name]:
		case f.Kind != Flag:
			p.add(join(key, "flag"), "%s is a %s feature, not a flag; meter it with meter instead", name, f.Kind)
		default:
			req.Flag = f
		}
	}
	if !isNull(o.get("when")) {
		req.When = p.condition(o.get("when"), join(key, "when"))
		if req.When == nil {
			return req, false
		}
	}
	return req, req.Flag != nil
}

var condOps = []string{"equals", "not_equals", "in", "not_in", "exists"}

func (p *parser) condition(n *yaml.Node, key string) *BodyCondition {
	o := p.object(n, key, append([]string{"field"}, condOps...)...)
	c := &BodyCondition{}
	ok := true
	if f, has := p.str(o.get("field"), join(key, "field"), fieldExpect); has && validFieldPath(f) {
		c.Field = f
	} else {
		if has || isNull(o.get("field")) {
			p.add(join(key, "field"), "expected %s, got %s", fieldExpect, describe(o.get("field")))
		}
		ok = false
	}
	var given []string
	for _, op := range condOps {
		if o.get(op) != nil {
			given = append(given, op)
		}
	}
	if len(given) != 1 {
		p.add(key, "expected exactly one of equals, not_equals, in, not_in, exists; got %d", len(given))
		return nil
	}
	op := given[0]
	k, v := join(key, op), o.get(op)
	switch op {
	case "equals", "not_equals":
		c.Op = CondEquals
		if op == "not_equals" {
			c.Op = CondNotEquals
		}
		s, good := p.condValue(v, k)
		ok = ok && good
		c.Values = []string{s}
	case "in", "not_in":
		c.Op = CondIn
		if op == "not_in" {
			c.Op = CondNotIn
		}
		items := p.list(v, k)
		if len(items) == 0 {
			p.add(k, "expected a non-empty list of values")
			ok = false
		}
		for i, item := range items {
			s, good := p.condValue(item, index(k, i))
			ok = ok && good
			c.Values = append(c.Values, s)
		}
	case "exists":
		b, good := p.boolean(v, k, "true or false")
		if !good {
			if isNull(v) {
				p.add(k, "expected true or false, got nothing")
			}
			ok = false
		}
		c.Op = CondExists
		if !b {
			c.Op = CondNotExists
		}
	}
	if !ok {
		return nil
	}
	return c
}

// condValue turns a YAML scalar into the text BodyCondition compares: the
// string itself, or the canonical JSON text of a number, boolean or null.
func (p *parser) condValue(n *yaml.Node, key string) (string, bool) {
	const expect = "a string, number, boolean or null"
	v := resolve(n)
	if v == nil {
		return "null", true
	}
	if v.Kind != yaml.ScalarNode {
		p.add(key, "expected %s, got %s", expect, describe(v))
		return "", false
	}
	switch v.Tag {
	case "!!null":
		return "null", true
	case "!!bool":
		var b bool
		if v.Decode(&b) == nil {
			return strconv.FormatBool(b), true
		}
	case "!!int", "!!float":
		var f float64
		var i int64
		if v.Tag == "!!int" && v.Decode(&i) == nil {
			return strconv.FormatInt(i, 10), true
		}
		if v.Decode(&f) == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return canonicalFloat(f), true
		}
	default:
		return v.Value, true
	}
	p.add(key, "expected %s, got %s", expect, describe(v))
	return "", false
}
