package config

import (
	"net/url"
	"os"
	"strings"
	"testing"
)

// routerConfig exercises precedence: literal vs param, exact vs "*", and
// declaration order.
const routerConfig = `upstream: {url: http://127.0.0.1:9000}
features:
  m: {kind: metered}
plans:
  - {slug: free, name: Free, price: {amount: 0, currency: USD}, limits: {m: 1}}
routes:
  - {method: GET, path: '/a/{id}', meter: {feature: m}}          # 0
  - {method: GET, path: '/a/b', meter: {feature: m}}             # 1
  - {method: "*", path: '/a/c', meter: {feature: m}}             # 2
  - {method: POST, path: '/a/c', meter: {feature: m}}            # 3
  - {method: "*", path: '/w/{x}/z', meter: {feature: m}}         # 4
  - {method: GET, path: '/w/{x}/{y}', meter: {feature: m}}       # 5
  - {method: GET, path: '/w/lit/{y}', meter: {feature: m}}       # 6
  - {method: GET, path: '/t/', meter: {feature: m}}              # 7
  - {method: GET, path: '/', meter: {feature: m}}                # 8
  - {method: DELETE, path: '/p/%41', meter: {feature: m}}        # 9
  - {method: GET, path: '/u/{id}/v', meter: {feature: m}}        # 10
  - {method: POST, path: '/u/{id}/v', meter: {feature: m}}       # 11
  - {method: GET, path: '/f/a%20b', meter: {feature: m}}         # 12
  - {method: GET, path: '/f/%7Bx%7D', meter: {feature: m}}       # 13
  - {method: GET, path: '/f/{x}', meter: {feature: m}}           # 14
  - {method: GET, path: '/f/%2541', meter: {feature: m}}         # 15
`

func mustParse(t testing.TB, text string) *Config {
	t.Helper()
	c, err := Parse("router.yaml", []byte(text), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestRouterMatch(t *testing.T) {
	c := mustParse(t, routerConfig)
	cases := []struct {
		method, path string
		want         int // route index, -1 for no match
	}{
		{"GET", "/a/b", 1},       // literal beats param, though declared later
		{"GET", "/a/x", 0},       // param
		{"GET", "/a/c", 2},       // "*" route
		{"POST", "/a/c", 3},      // exact method beats "*", though declared later
		{"PUT", "/a/b", -1},      // /a/b and /a/{id} are GET only
		{"POST", "/a/b", -1},     // no fallback for another method
		{"GET", "/a/", -1},       // a param never matches an empty segment
		{"GET", "/a/x/", 0},      // one trailing slash is ignored
		{"GET", "/a/x//", -1},    // ... only one
		{"GET", "/A/b", -1},      // paths are case-sensitive
		{"GET", "/a", -1},        // too short
		{"GET", "/a/b/c", -1},    // too long
		{"GET", "/a/b?x=1", 1},   // query ignored
		{"GET", "/a/b/?x=1", 1},  // trailing slash and query ignored
		{"GET", "/w/q/z", 4},     // literal z beats {y} before methods are compared
		{"GET", "/w/q/q", 5},     // exact method, all params
		{"GET", "/w/lit/z", 6},   // leftmost literal wins
		{"PUT", "/w/lit/z", 4},   // backtracks from /w/lit to /w/{x}
		{"GET", "/t/", 7},        // trailing slash route
		{"GET", "/t", 7},         // matches without it too
		{"GET", "/u/7/v/", 10},   // trailing slash after a param
		{"GET", "/", 8},          // root
		{"GET", "/?q", 8},        // root with query
		{"DELETE", "/p/A", 9},    // route literals are decoded, as paths are
		{"DELETE", "/p/%41", -1}, // ... so this is the path of /p/%2541
		{"GET", "/f/a b", 12},    // an escaped space
		{"GET", "/f/{x}", 13},    // escaped braces are a literal, not a parameter
		{"GET", "/f/y", 14},      // ... which the parameter still stands beside
		{"GET", "/f/%41", 15},    // an escaped %
		{"get", "/a/b", -1},      // methods are case-sensitive
		{"POST", "/u/7/v", 11},   // same shape, method picks
		{"GET", "", -1},          // empty path
		{"GET", "a/b", -1},       // no leading slash
		{"GET", "//a/b", -1},     // empty first segment
	}
	for _, tc := range cases {
		got := c.Router.Match([]byte(tc.method), []byte(tc.path))
		var want *Route
		if tc.want >= 0 {
			want = c.Routes[tc.want]
		}
		if got != want {
			t.Errorf("Match(%s %q) = %s, want %s", tc.method, tc.path, describeRoute(got), describeRoute(want))
		}
	}
}

func describeRoute(r *Route) string {
	if r == nil {
		return "nil"
	}
	return r.Method + " " + r.Pattern
}

func TestRouterNil(t *testing.T) {
	var r *Router
	if r.Match([]byte("GET"), []byte("/")) != nil {
		t.Error("nil router matched")
	}
}

func TestNewRouterRejects(t *testing.T) {
	f := &Feature{Name: "m", Kind: Metered}
	for _, routes := range [][]*Route{
		{{Method: "GET", Pattern: "x", Meter: &Meter{Feature: f}}},
		{{Method: "FETCH", Pattern: "/x"}},
		{{Method: "GET", Pattern: "/x"}, {Method: "GET", Pattern: "/x"}},
		{{Method: "*", Pattern: "/{a}"}, {Method: "*", Pattern: "/{b}"}},
		{{Method: "GET", Pattern: "/x"}, {Method: "GET", Pattern: "/x/"}},
		{nil},
	} {
		if _, err := NewRouter(routes); err == nil {
			t.Errorf("NewRouter(%v) accepted", routes)
		}
	}
}

func pingback(t testing.TB) *Config {
	t.Helper()
	const path = "../examples/pingback/tollgate.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read example: %v", err)
	}
	// No environment: the file's own values are what is checked.
	c, err := Parse(path, data, nil)
	if err != nil {
		t.Fatalf("load example: %v", err)
	}
	return c
}

func TestRouterMatchAllocs(t *testing.T) {
	c := pingback(t)
	reqs := [][2][]byte{
		{[]byte("POST"), []byte("/api/v1/messages")},
		{[]byte("DELETE"), []byte("/api/v1/kb/articles/123?x=1")},
		{[]byte("GET"), []byte("/api/v1/unmetered/path/that/is/long")},
	}
	allocs := testing.AllocsPerRun(200, func() {
		for _, r := range reqs {
			c.Router.Match(r[0], r[1])
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkRouterMatch(b *testing.B) {
	c := pingback(b)
	reqs := [][2][]byte{
		{[]byte("POST"), []byte("/api/v1/messages")},
		{[]byte("DELETE"), []byte("/api/v1/agents/42")},
		{[]byte("POST"), []byte("/api/v1/channels")},
		{[]byte("GET"), []byte("/api/v1/conversations/9/messages?page=2")},
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := reqs[i%len(reqs)]
		c.Router.Match(r[0], r[1])
	}
}

// referenceMatch is the obviously-correct (and slow) matcher FuzzRouterMatch
// compares the tree with: among matching routes, the most literal segments
// from the left, then an exact method, then the first declared.
func referenceMatch(routes []*Route, method, path string) *Route {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if !strings.HasPrefix(path, "/") {
		return nil
	}
	// One trailing slash is insignificant, on either side.
	trim := func(p string) string {
		if len(p) > 1 {
			return strings.TrimSuffix(p, "/")
		}
		return p
	}
	segs := strings.Split(trim(path)[1:], "/")
	var best *Route
	var bestKey string
	for _, r := range routes {
		if r.Method != "*" && r.Method != method {
			continue
		}
		pat := strings.Split(trim(r.Pattern)[1:], "/")
		if len(pat) != len(segs) {
			continue
		}
		key, ok := "", true
		for i, p := range pat {
			switch {
			case strings.HasPrefix(p, "{"):
				ok = ok && segs[i] != ""
				key += "1"
			default:
				// Literals are compared decoded, as paths are.
				lit, err := url.PathUnescape(p)
				ok = ok && err == nil && lit == segs[i]
				key += "0"
			}
		}
		if !ok {
			continue
		}
		if r.Method == "*" {
			key += "1"
		} else {
			key += "0"
		}
		if best == nil || key < bestKey {
			best, bestKey = r, key
		}
	}
	return best
}
