package config

import (
	"fmt"
	"regexp"
	"strconv"

	"gopkg.in/yaml.v3"
)

// nameRE is the shape of plan slugs and feature names: they end up in Redis
// keys, URLs and JSON, so they stay plain.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

const nameExpect = "a name matching ^[a-z0-9][a-z0-9_-]{0,62}$"

var (
	placeholderRE      = regexp.MustCompile(`\{[A-Za-z_]+\}`)
	knownPlaceholders  = []string{"{limit}", "{current}", "{plan}", "{feature}"}
	defaultMessageKind = map[FeatureKind]string{
		Metered: "Monthly {feature} limit of {limit} reached. Upgrade your plan.",
		Gauge:   "Upgrade to add more {feature}. Current plan allows {limit} {feature}.",
		Flag:    "{feature} is not available on the {plan} plan.",
	}
)

func (p *parser) features(n *yaml.Node) {
	c := p.cfg
	c.FeatureByName = map[string]*Feature{}
	o := p.object(n, "features")
	for _, fl := range o.fields {
		key := join("features", fl.name)
		f := &Feature{Name: fl.name, Index: len(c.Features)}
		c.Features = append(c.Features, f)
		c.FeatureByName[f.Name] = f
		if !nameRE.MatchString(fl.name) {
			p.add(key, "expected %s as the feature name", nameExpect)
		}
		if !p.feature(f, fl.val, key) {
			p.bad[f.Name] = true
		}
	}
}

// feature fills f from its mapping and reports whether its kind is usable
// for cross-reference checks.
func (p *parser) feature(f *Feature, n *yaml.Node, key string) bool {
	if !p.isMapping(n, key, "a mapping with at least a kind") {
		return false
	}
	o := p.object(n, key, "kind", "warning", "grace", "fail", "mode", "error", "message")
	const kindExpect = "one of metered, gauge, flag"
	kind, ok := p.str(o.get("kind"), join(key, "kind"), kindExpect)
	switch {
	case !ok && isNull(o.get("kind")):
		p.add(join(key, "kind"), "missing; expected %s", kindExpect)
	case ok:
		f.Kind = map[string]FeatureKind{"metered": Metered, "gauge": Gauge, "flag": Flag}[kind]
		if f.Kind == 0 {
			p.add(join(key, "kind"), "expected %s, got %s", kindExpect, quote(kind))
		}
	}

	f.Warning, f.Grace = 0.8, 1.0
	if f.Kind == Flag {
		for _, k := range []string{"warning", "grace"} {
			if o.get(k) != nil {
				p.add(join(key, k), "not allowed for flag features (flags are on or off)")
			}
		}
	} else {
		const graceExpect = "a number >= 1.0 (1.0: a hard limit)"
		if g, ok := p.number(o.get("grace"), join(key, "grace"), graceExpect); ok {
			if g < 1 {
				p.add(join(key, "grace"), "expected %s, got %s", graceExpect, formatFloat(g))
			} else {
				f.Grace = g
			}
		}
		warnExpect := fmt.Sprintf("a fraction > 0 and <= grace (%s)", formatFloat(f.Grace))
		if w, ok := p.number(o.get("warning"), join(key, "warning"), warnExpect); ok {
			if w <= 0 || w > f.Grace {
				p.add(join(key, "warning"), "expected %s, got %s", warnExpect, formatFloat(w))
			} else {
				f.Warning = w
			}
		}
	}

	f.FailMode = FailClosed
	if f.Kind == Metered {
		f.FailMode = FailOpen
	}
	const failExpect = "open or closed"
	if s, ok := p.str(o.get("fail"), join(key, "fail"), failExpect); ok {
		switch s {
		case "open":
			f.FailMode = FailOpen
		case "closed":
			f.FailMode = FailClosed
		default:
			p.add(join(key, "fail"), "expected %s, got %s", failExpect, quote(s))
		}
	}

	f.Mode = ModeExact
	const modeExpect = "exact or lease"
	if s, ok := p.str(o.get("mode"), join(key, "mode"), modeExpect); ok {
		switch {
		case s != "exact" && s != "lease":
			p.add(join(key, "mode"), "expected %s, got %s", modeExpect, quote(s))
		case s == "lease" && f.Kind != Metered && f.Kind != 0:
			p.add(join(key, "mode"), "lease is only allowed for metered features, not %s", f.Kind)
		case s == "lease":
			f.Mode = ModeLease
		}
	}

	f.ErrorCode = "limit_exceeded"
	if f.Kind == Flag {
		f.ErrorCode = "feature_locked"
	}
	const errorExpect = "feature_locked or feature_not_available"
	if s, ok := p.str(o.get("error"), join(key, "error"), errorExpect); ok {
		switch {
		case f.Kind != Flag && f.Kind != 0:
			p.add(join(key, "error"), "only allowed for flag features (%s features always answer limit_exceeded)", f.Kind)
		case s == "feature_locked" || s == "feature_not_available":
			f.ErrorCode = s
		default:
			p.add(join(key, "error"), "expected %s, got %s", errorExpect, quote(s))
		}
	}

	f.Message = defaultMessageKind[f.Kind]
	if s, ok := p.str(o.get("message"), join(key, "message"), "a message template"); ok {
		switch {
		case s == "":
			p.add(join(key, "message"), "expected a non-empty message template, got \"\"")
		default:
			for _, ph := range placeholderRE.FindAllString(s, -1) {
				if !contains(knownPlaceholders, ph) {
					p.add(join(key, "message"), "unknown placeholder %s; expected {limit}, {current}, {plan} or {feature}", ph)
				}
			}
			f.Message = s
		}
	}
	return f.Kind != 0
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

var currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)

const limitExpect = `a whole number from 0 to ` + maxAmountText + ` or "unlimited"`

func (p *parser) plans(n, defaultPlan *yaml.Node) {
	c := p.cfg
	c.PlanBySlug = map[string]*Plan{}
	items := p.list(n, "plans")
	if len(items) == 0 && (isNull(n) || resolve(n).Kind == yaml.SequenceNode) {
		p.add("plans", "missing; expected a list of at least one plan")
	}
	first := map[string]int{}
	for i, item := range items {
		key := index("plans", i)
		pl := p.plan(item, key)
		if pl.Slug == "" {
			continue
		}
		if j, dup := first[pl.Slug]; dup {
			p.add(join(key, "slug"), "duplicate plan %s (already declared as plans[%d])", quote(pl.Slug), j)
			continue
		}
		first[pl.Slug] = i
		c.Plans = append(c.Plans, pl)
		c.PlanBySlug[pl.Slug] = pl
	}
	if s, ok := p.str(defaultPlan, "default_plan", "a plan slug"); ok {
		// A plan with other errors is missing from PlanBySlug; it is still
		// declared, so only a slug no plan spells is reported here.
		if c.PlanBySlug[s] == nil && !p.slugDeclared(items, s) {
			p.add("default_plan", "expected the slug of a declared plan, got %s", quote(s))
		}
		c.DefaultPlan = s
	} else if len(c.Plans) > 0 {
		c.DefaultPlan = c.Plans[0].Slug
	}
}

func (p *parser) slugDeclared(items []*yaml.Node, slug string) bool {
	for _, item := range items {
		if item = resolve(item); item == nil || item.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(item.Content); i += 2 {
			if k, v := resolve(item.Content[i]), resolve(item.Content[i+1]); k != nil && v != nil && k.Value == "slug" && v.Value == slug {
				return true
			}
		}
	}
	return false
}

func (p *parser) plan(n *yaml.Node, key string) *Plan {
	c := p.cfg
	pl := &Plan{Limits: make([]int64, len(c.Features)), Flags: make([]bool, len(c.Features))}
	if !p.isMapping(n, key, "a plan mapping with slug, name, price, limits and flags") {
		return pl
	}
	o := p.object(n, key, "slug", "name", "price", "limits", "flags")
	if s, ok := p.str(o.get("slug"), join(key, "slug"), nameExpect); ok {
		if nameRE.MatchString(s) {
			pl.Slug = s
		} else {
			p.add(join(key, "slug"), "expected %s, got %s", nameExpect, quote(s))
		}
	} else if isNull(o.get("slug")) {
		p.add(join(key, "slug"), "missing; expected %s", nameExpect)
	}
	if s, ok := p.str(o.get("name"), join(key, "name"), "a display name"); ok && s != "" {
		pl.Name = s
	} else if ok || isNull(o.get("name")) {
		p.add(join(key, "name"), "missing; expected a non-empty display name such as \"Free\"")
	}

	pk := join(key, "price")
	if isNull(o.get("price")) {
		p.add(pk, "missing; expected {amount: <minor units>, currency: <ISO 4217 code>}")
	} else {
		po := p.object(o.get("price"), pk, "amount", "currency")
		const amountExpect = "a whole number of minor units >= 0 (1900 = 19.00)"
		if v, ok := p.integer(po.get("amount"), join(pk, "amount"), amountExpect); ok {
			if v < 0 {
				p.add(join(pk, "amount"), "expected %s, got %d", amountExpect, v)
			}
			pl.PriceMinor = v
		} else if isNull(po.get("amount")) {
			p.add(join(pk, "amount"), "missing; expected %s", amountExpect)
		}
		const curExpect = "a 3-letter upper-case ISO 4217 code such as USD"
		if s, ok := p.str(po.get("currency"), join(pk, "currency"), curExpect); ok {
			if !currencyRE.MatchString(s) {
				p.add(join(pk, "currency"), "expected %s, got %s", curExpect, quote(s))
			}
			pl.Currency = s
		} else if isNull(po.get("currency")) {
			p.add(join(pk, "currency"), "missing; expected %s", curExpect)
		}
	}

	p.limits(pl, o.get("limits"), join(key, "limits"))
	p.flags(pl, o.get("flags"), join(key, "flags"))
	return pl
}

func (p *parser) limits(pl *Plan, n *yaml.Node, key string) {
	c := p.cfg
	o := p.object(n, key)
	for _, fl := range o.fields {
		k := join(key, fl.name)
		f := c.FeatureByName[fl.name]
		switch {
		case f == nil:
			p.add(k, "unknown feature; declare it under features")
			continue
		case f.Kind == Flag:
			p.add(k, "%s is a flag feature; list it under flags instead", f.Name)
			continue
		}
		v := resolve(fl.val)
		switch {
		case isNull(v):
			p.add(k, "expected %s, got nothing", limitExpect)
		case v.Kind == yaml.ScalarNode && v.Tag == "!!str" && v.Value == "unlimited":
			pl.Limits[f.Index] = Unlimited
		default:
			limit, ok := p.integer(v, k, limitExpect)
			switch {
			case !ok:
			case limit < 0 || limit > maxAmount:
				p.add(k, "expected %s, got %s", limitExpect, quote(v.Value))
			case ceiling(limit, f.Grace) > maxAmount:
				// The quota scripts admit up to the ceiling, which must
				// stay an exact integer in Lua too.
				p.add(k, "expected at most %d, so that the ceiling (limit × %s's grace %s) stays within %s, got %d",
					maxLimit(f.Grace), f.Name, formatFloat(f.Grace), maxAmountText, limit)
			default:
				pl.Limits[f.Index] = limit
			}
		}
	}
	for _, f := range c.Features {
		if (f.Kind == Metered || f.Kind == Gauge) && o.get(f.Name) == nil {
			p.add(join(key, f.Name), "missing; every metered and gauge feature needs a limit (%s)", limitExpect)
		}
	}
}

func (p *parser) flags(pl *Plan, n *yaml.Node, key string) {
	c := p.cfg
	for i, item := range p.list(n, key) {
		k := index(key, i)
		name, ok := p.str(item, k, "a flag feature name")
		if !ok {
			if isNull(item) {
				p.add(k, "expected a flag feature name, got nothing")
			}
			continue
		}
		f := c.FeatureByName[name]
		switch {
		case f == nil:
			p.add(k, "unknown feature %s; declare it under features", quote(name))
		case p.bad[name]:
		case f.Kind != Flag:
			p.add(k, "%s is a %s feature, not a flag; give it a limit under limits instead", name, f.Kind)
		case pl.Flags[f.Index]:
			p.add(k, "duplicate flag %s", quote(name))
		default:
			pl.Flags[f.Index] = true
		}
	}
}
