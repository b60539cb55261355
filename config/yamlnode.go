package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxExpandedNodes bounds the document size after alias expansion, so a
// "billion laughs" file cannot make the validator walk forever.
const maxExpandedNodes = 200_000

// decodeYAML parses exactly one YAML document. A nil node means the file
// is empty.
func decodeYAML(data []byte) (root *yaml.Node, err error) {
	// The YAML library is third-party code fed user input: a panic in it
	// must become an error, never take the process down.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml: cannot parse document: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("yaml: line %d: only one YAML document is allowed", extra.Line)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

var yamlLineRE = regexp.MustCompile(`^line (\d+): `)

// syntaxError turns the YAML library's error into an *Error that names the
// file and, when known, the line.
func syntaxError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var errs []error
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line == "unmarshal errors:" {
			continue
		}
		e := &Error{File: file, Msg: line}
		if m := yamlLineRE.FindStringSubmatch(line); m != nil {
			e.Key = "line " + m[1]
			e.Msg = line[len(m[0]):]
		}
		errs = append(errs, e)
	}
	if len(errs) == 0 {
		errs = append(errs, &Error{File: file, Msg: msg})
	}
	return errors.Join(errs...)
}

// expandedSize counts the nodes a walk over n visits, following aliases;
// it stops counting once limit is passed.
func expandedSize(n *yaml.Node, memo map[*yaml.Node]int, limit int) int {
	if n == nil {
		return 0
	}
	if v, ok := memo[n]; ok {
		return v
	}
	memo[n] = limit + 1 // a node that reaches itself is treated as too large
	total := 1
	if n.Kind == yaml.AliasNode {
		total += expandedSize(n.Alias, memo, limit)
	}
	for _, c := range n.Content {
		if total > limit {
			break
		}
		total += expandedSize(c, memo, limit)
	}
	if total > limit {
		total = limit + 1
	}
	memo[n] = total
	return total
}

// resolve follows alias nodes to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 64; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// describe says what a node is, for "got ..." in error messages.
func describe(n *yaml.Node) string {
	n = resolve(n)
	switch {
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	}
	return quote(n.Value)
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func index(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// field is one key of a YAML mapping, in file order.
type field struct {
	name string
	val  *yaml.Node
}

// object is a YAML mapping with its keys checked.
type object struct {
	key    string
	fields []field
	byName map[string]*yaml.Node
}

func (o *object) get(name string) *yaml.Node {
	if o == nil {
		return nil
	}
	return o.byName[name]
}

// object reads a mapping. known lists the accepted keys; nil accepts any
// key (maps such as features and limits). A null node is an empty mapping.
func (p *parser) object(n *yaml.Node, key string, known ...string) *object {
	o := &object{key: key, byName: map[string]*yaml.Node{}}
	if isNull(n) {
		return o
	}
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.add(key, "expected a mapping, got %s", describe(n))
		return o
	}
	explicit, merged := p.pairs(n, key, 0)
	for _, fs := range [][]field{explicit, merged} {
		for _, f := range fs {
			if _, dup := o.byName[f.name]; dup {
				continue
			}
			if known != nil && !contains(known, f.name) {
				p.add(join(key, f.name), "unknown key; expected one of %s", strings.Join(known, ", "))
				continue
			}
			o.byName[f.name] = f.val
			o.fields = append(o.fields, f)
		}
	}
	return o
}

// pairs lists a mapping's own keys and, separately, those it merges in
// with "<<", which the mapping's own keys override.
func (p *parser) pairs(n *yaml.Node, key string, depth int) (own, merged []field) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			p.add(key, "expected plain keys, got %s as a key", describe(k))
			continue
		}
		if k.Tag == "!!merge" {
			if depth > 8 {
				p.add(join(key, "<<"), "merges nested too deeply")
				continue
			}
			sources, bad := mergeSources(v)
			if bad != "" {
				p.add(join(key, "<<"), "expected a mapping or a list of mappings, got %s", bad)
			}
			for _, m := range sources {
				o, mm := p.pairs(m, key, depth+1)
				merged = append(merged, o...)
				merged = append(merged, mm...)
			}
			continue
		}
		if seen[k.Value] {
			p.add(join(key, k.Value), "duplicate key")
			continue
		}
		seen[k.Value] = true
		own = append(own, field{name: k.Value, val: v})
	}
	return own, merged
}

// mergeSources lists the mappings a "<<" value merges in. bad describes
// what else it found, for the error: the YAML merge key takes only a
// mapping or a list of mappings, and anything else would silently merge
// nothing.
func mergeSources(v *yaml.Node) (out []*yaml.Node, bad string) {
	r := resolve(v)
	switch {
	case r != nil && r.Kind == yaml.MappingNode:
		return []*yaml.Node{r}, ""
	case r == nil || r.Kind != yaml.SequenceNode:
		return nil, describe(v)
	}
	for _, c := range r.Content {
		if m := resolve(c); m != nil && m.Kind == yaml.MappingNode {
			out = append(out, m)
		} else if bad == "" {
			bad = "a list holding " + describe(c)
		}
	}
	return out, bad
}

// isMapping reports whether n is a mapping, reporting it otherwise, so a
// wrong-shaped list item gives one error instead of one per missing key.
func (p *parser) isMapping(n *yaml.Node, key, expect string) bool {
	if v := resolve(n); v != nil && v.Kind == yaml.MappingNode {
		return true
	}
	p.add(key, "expected %s, got %s", expect, describe(n))
	return false
}

// list reads a sequence; a null node is an empty list.
func (p *parser) list(n *yaml.Node, key string) []*yaml.Node {
	if isNull(n) {
		return nil
	}
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		p.add(key, "expected a list, got %s", describe(n))
		return nil
	}
	return n.Content
}

// str reads a scalar as text. ok is false for a null or non-scalar node;
// only the latter is reported.
func (p *parser) str(n *yaml.Node, key, expect string) (string, bool) {
	if isNull(n) {
		return "", false
	}
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		p.add(key, "expected %s, got %s", expect, describe(n))
		return "", false
	}
	return n.Value, true
}

// integer reads a YAML integer. ok is false for null (not reported) and
// for anything else that is not an integer (reported).
func (p *parser) integer(n *yaml.Node, key, expect string) (int64, bool) {
	if isNull(n) {
		return 0, false
	}
	n = resolve(n)
	var v int64
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		p.add(key, "expected %s, got %s", expect, describe(n))
		return 0, false
	}
	return v, true
}

func (p *parser) number(n *yaml.Node, key, expect string) (float64, bool) {
	if isNull(n) {
		return 0, false
	}
	n = resolve(n)
	var v float64
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&v) != nil ||
		math.IsNaN(v) || math.IsInf(v, 0) {
		p.add(key, "expected %s, got %s", expect, describe(n))
		return 0, false
	}
	return v, true
}

func (p *parser) boolean(n *yaml.Node, key, expect string) (bool, bool) {
	if isNull(n) {
		return false, false
	}
	n = resolve(n)
	var v bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&v) != nil {
		p.add(key, "expected %s, got %s", expect, describe(n))
		return false, false
	}
	return v, true
}

// Shortest durations accepted: below them a timeout expires before any
// network answer can arrive, and an interval spins a loop. Timeouts are
// upstream.timeout, upstream.dial_timeout and redis.timeout; intervals are
// redis.reconcile_interval.
const (
	minTimeout  = time.Millisecond
	minInterval = 10 * time.Millisecond
)

// duration reads a Go duration string of at least min; def applies when
// absent.
func (p *parser) duration(n *yaml.Node, key string, def, min time.Duration) time.Duration {
	expect := "a Go duration of at least " + min.String() + " such as 30s or 500ms"
	s, ok := p.str(n, key, expect)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < min {
		p.add(key, "expected %s, got %s", expect, quote(s))
		return def
	}
	return d
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
