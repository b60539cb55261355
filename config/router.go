package config

import (
	"bytes"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Router finds the Route for a request. Patterns are compiled into a tree of
// path segments so a lookup walks the request path once, without
// allocating, whatever the number of routes.
type Router struct {
	root *routeNode
}

type routeNode struct {
	literal map[string]*routeNode
	param   *routeNode
	// exact holds the routes ending here with a concrete method, in
	// declaration order; any is the "*" route ending here.
	exact []*Route
	any   *Route
}

// NewRouter compiles routes. Parse has already checked them; the errors
// here guard Routes built in code.
func NewRouter(routes []*Route) (*Router, error) {
	r := &Router{root: &routeNode{}}
	for i, rt := range routes {
		if rt == nil {
			return nil, fmt.Errorf("route %d: nil route", i)
		}
		segs, msg := splitPattern(rt.Pattern)
		if msg != "" {
			return nil, fmt.Errorf("route %d: %s", i, msg)
		}
		if !validMethod(rt.Method) {
			return nil, fmt.Errorf("route %d: method %q: expected one of %s", i, rt.Method, methodExpect)
		}
		n := r.root
		for _, s := range segs {
			if s.param {
				if n.param == nil {
					n.param = &routeNode{}
				}
				n = n.param
				continue
			}
			if n.literal == nil {
				n.literal = map[string]*routeNode{}
			}
			next := n.literal[s.lit]
			if next == nil {
				next = &routeNode{}
				n.literal[s.lit] = next
			}
			n = next
		}
		if n.taken(rt.Method) {
			return nil, fmt.Errorf("route %d: duplicate route %s %s", i, rt.Method, rt.Pattern)
		}
		if rt.Method == "*" {
			n.any = rt
		} else {
			n.exact = append(n.exact, rt)
		}
	}
	return r, nil
}

func (n *routeNode) taken(method string) bool {
	if method == "*" {
		return n.any != nil
	}
	for _, rt := range n.exact {
		if rt.Method == method {
			return true
		}
	}
	return false
}

// Match returns the route for method and path, or nil. path is the
// request's normalised path, percent-decoded (as fasthttp's Path is):
// route literals are decoded when compiled, so /p/%41 and /p/A are one
// route, and a client cannot dodge a meter by escaping a byte. The query
// string, if any, is ignored; one trailing slash is too, as upstream
// routers commonly serve /x/ as /x (Express by default, chi's CleanPath),
// so a route /x matches /x/ and a route /x/ matches /x. Precedence: a
// literal segment beats a {param} segment (leftmost difference first),
// then an exact method beats "*". A {param} never matches an empty
// segment.
func (r *Router) Match(method, path []byte) *Route {
	if r == nil || r.root == nil || len(path) == 0 || path[0] != '/' {
		return nil
	}
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if len(path) > 1 && path[len(path)-1] == '/' {
		path = path[:len(path)-1]
	}
	return r.root.match(method, path[1:])
}

func (n *routeNode) match(method, rest []byte) *Route {
	seg, tail, last := rest, []byte(nil), true
	if i := bytes.IndexByte(rest, '/'); i >= 0 {
		seg, tail, last = rest[:i], rest[i+1:], false
	}
	// Each branch is tried in precedence order and abandoned when nothing
	// below it fits, so GET /a/b can still fall back to GET /a/{x} when
	// /a/b only exists for POST.
	if next := n.literal[string(seg)]; next != nil {
		if rt := next.step(method, tail, last); rt != nil {
			return rt
		}
	}
	if n.param != nil && len(seg) > 0 {
		return n.param.step(method, tail, last)
	}
	return nil
}

func (n *routeNode) step(method, tail []byte, last bool) *Route {
	if last {
		return n.pick(method)
	}
	return n.match(method, tail)
}

func (n *routeNode) pick(method []byte) *Route {
	for _, rt := range n.exact {
		if rt.Method == string(method) {
			return rt
		}
	}
	return n.any
}

var methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*"}

const methodExpect = `GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or "*"`

func validMethod(m string) bool { return contains(methods, m) }

var paramRE = regexp.MustCompile(`^\{[A-Za-z_][A-Za-z0-9_]*\}$`)

// patternSeg is one segment of a route pattern: a {name} parameter, or a
// literal with its percent-escapes decoded, as request paths are.
type patternSeg struct {
	lit   string
	param bool
}

// splitPattern checks a route pattern and returns its segments (without
// the leading slash, and without the empty one a trailing slash leaves,
// which Match ignores); msg explains a bad pattern.
func splitPattern(pattern string) (segs []patternSeg, msg string) {
	const expect = "expected a path starting with / made of literal segments and {name} parameters"
	if !strings.HasPrefix(pattern, "/") {
		return nil, expect + ", got " + quote(pattern)
	}
	for _, c := range []byte(pattern) {
		if c <= ' ' || c == 0x7f || c == '?' || c == '#' {
			return nil, expect + " (no spaces, control characters, ? or #), got " + quote(pattern)
		}
	}
	raw := strings.Split(pattern[1:], "/")
	segs = make([]patternSeg, 0, len(raw))
	seen := map[string]bool{}
	for i, s := range raw {
		lit := s
		if strings.IndexByte(s, '%') >= 0 {
			// Matching sees the request path decoded, so the literal is
			// decoded too.
			d, err := url.PathUnescape(s)
			switch {
			case err != nil:
				return nil, expect + "; a % starts an escape of two hex digits such as %20, got " + quote(pattern)
			case strings.IndexByte(d, '/') >= 0:
				// A request's %2F is decoded into a separator before
				// matching, so such a literal could never match.
				return nil, expect + "; an escaped / (%2F) never matches, as request paths are decoded before matching: write / between segments, got " + quote(pattern)
			case strings.IndexByte(d, '?') >= 0:
				// Match ends the path at a '?'.
				return nil, expect + "; an escaped ? (%3F) never matches, got " + quote(pattern)
			}
			lit = d
		}
		switch {
		case s == "" && i < len(raw)-1:
			return nil, expect + " (no empty segments), got " + quote(pattern)
		case lit == "." || lit == "..":
			// Request paths are normalised before matching, so such a
			// route could never match.
			return nil, expect + " (no . or .. segments, escaped or not), got " + quote(pattern)
		case strings.ContainsAny(s, "{}"):
			if !paramRE.MatchString(s) {
				return nil, expect + "; a parameter is a whole segment like {id}, got " + quote(pattern)
			}
			if seen[s] {
				return nil, expect + "; parameter " + s + " appears twice in " + quote(pattern)
			}
			seen[s] = true
			segs = append(segs, patternSeg{lit: s, param: true})
			continue
		}
		segs = append(segs, patternSeg{lit: lit})
	}
	if n := len(segs); n > 1 && segs[n-1] == (patternSeg{}) {
		segs = segs[:n-1]
	}
	return segs, ""
}

// patternShape is the pattern with parameter names erased and literals
// decoded: /a/{id} and /a/{x} match the same requests, and so do /p/%41
// and /p/A, so they are duplicates.
func patternShape(segs []patternSeg) string {
	var b strings.Builder
	for _, s := range segs {
		// A literal has no '/', so "/p" and "/l..." cannot run together.
		if s.param {
			b.WriteString("/p")
		} else {
			b.WriteString("/l")
			b.WriteString(s.lit)
		}
	}
	return b.String()
}
