package account

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tollgate/tollgate/admin"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/docs"
)

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// documentedRoutes returns "METHOD /path" for every operation of the
// OpenAPI document.
func documentedRoutes(t *testing.T) []string {
	t.Helper()
	var doc struct {
		OpenAPI string                          `yaml:"openapi"`
		Paths   map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(docs.OpenAPI, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0.") {
		t.Fatalf("docs/openapi.yaml: openapi = %q, want 3.0.x", doc.OpenAPI)
	}
	var out []string
	for path, item := range doc.Paths {
		for key := range item {
			if slices.Contains(httpMethods, key) {
				out = append(out, strings.ToUpper(key)+" "+path)
			}
		}
	}
	sort.Strings(out)
	return out
}

// modulePath prefixes this module's import paths; constants of those
// packages (usage.IngestPath) are folded too.
const modulePath = "github.com/tollgate/tollgate/"

// sourceRoutes reads the route patterns of every Handle and HandleFunc
// call in dir's non-test files, folding string constants, concatenations
// ("POST "+t) and constants of this module's packages. A pattern it cannot
// work out fails the test: a route must not escape the check by being
// computed.
func sourceRoutes(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	parsed := parseDir(t, fset, dir)
	consts := collectConsts(parsed, "")
	for _, af := range parsed {
		for _, imp := range af.Imports {
			ipath, _ := strconv.Unquote(imp.Path.Value)
			rel, ok := strings.CutPrefix(ipath, modulePath)
			if !ok {
				continue
			}
			name := filepath.Base(rel)
			if imp.Name != nil {
				name = imp.Name.Name
			}
			for k, v := range collectConsts(parseDir(t, fset, filepath.Join("..", rel)), name+".") {
				consts[k] = v
			}
		}
	}
	var out []string
	for _, af := range parsed {
		ast.Inspect(af, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			s, ok := foldString(call.Args[0], consts)
			if !ok {
				t.Errorf("%s: cannot work out the pattern of this %s call; write it as constants so the OpenAPI check can read it",
					fset.Position(call.Pos()), sel.Sel.Name)
				return true
			}
			out = append(out, s)
			return true
		})
	}
	return out
}

func parseDir(t *testing.T, fset *token.FileSet, dir string) []*ast.File {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var parsed []*ast.File
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		parsed = append(parsed, af)
	}
	return parsed
}

// collectConsts returns the string constants and string-valued := of
// files, keyed prefix+name. Scopes are ignored: route patterns are plain
// enough for that.
func collectConsts(files []*ast.File, prefix string) map[string]string {
	local := map[string]string{}
	// Constants may refer to constants declared later: a few passes reach
	// a fixed point for any realistic file.
	for pass := 0; pass < 4; pass++ {
		for _, af := range files {
			ast.Inspect(af, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.ValueSpec:
					for i, name := range n.Names {
						if i < len(n.Values) {
							if s, ok := foldString(n.Values[i], local); ok {
								local[name.Name] = s
							}
						}
					}
				case *ast.AssignStmt:
					if n.Tok == token.DEFINE && len(n.Lhs) == len(n.Rhs) {
						for i, l := range n.Lhs {
							if id, ok := l.(*ast.Ident); ok {
								if s, ok := foldString(n.Rhs[i], local); ok {
									local[id.Name] = s
								}
							}
						}
					}
				}
				return true
			})
		}
	}
	out := make(map[string]string, len(local))
	for k, v := range local {
		out[prefix+k] = v
	}
	return out
}

func foldString(e ast.Expr, consts map[string]string) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.Ident:
		s, ok := consts[e.Name]
		return s, ok
	case *ast.SelectorExpr:
		pkg, ok := e.X.(*ast.Ident)
		if !ok {
			return "", false
		}
		s, ok := consts[pkg.Name+"."+e.Sel.Name]
		return s, ok
	case *ast.ParenExpr:
		return foldString(e.X, consts)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		l, ok1 := foldString(e.X, consts)
		r, ok2 := foldString(e.Y, consts)
		return l + r, ok1 && ok2
	}
	return "", false
}

var wildcardRE = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}`)

// canonical turns a ServeMux pattern into the document's form: {name...}
// is {name}; {$} goes.
func canonical(pattern string) string {
	pattern = strings.ReplaceAll(pattern, "{$}", "")
	return wildcardRE.ReplaceAllString(pattern, "{$1}")
}

// sample is a concrete request path for a pattern.
func sample(path string) string {
	return wildcardRE.ReplaceAllString(strings.ReplaceAll(path, "{$}", ""), "x$1")
}

// The OpenAPI document lists exactly the routes registered on the API
// listener: the routes of the real admin and account Register calls and
// cmd/tollgate's own, each checked on a real mux.
func TestOpenAPIMatchesRegisteredRoutes(t *testing.T) {
	cfg := loadConfig(t, "http://127.0.0.1:9")
	api, err := New(cfg, nilStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// Besides this package (API.Routes), admin and cmd/tollgate put
	// routes on the API listener's mux.
	cmdRoutes := sourceRoutes(t, "../cmd/tollgate")
	stub := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, p := range cmdRoutes {
		mux.Handle(p, stub)
	}
	// Register only builds handlers, so a zero API is enough to read the
	// routes it registers, whatever admin.New needs.
	new(admin.API).Register(mux)
	api.Register(mux)

	registered := append(sourceRoutes(t, "../admin"), cmdRoutes...)
	registered = append(registered, api.Routes()...)

	var want []string
	for _, p := range registered {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			path, method = p, ""
		}
		req := httptest.NewRequest(cmpOr(method, http.MethodGet), sample(path), nil)
		if _, got := mux.Handler(req); got != p {
			t.Errorf("route %q is not what the mux serves for %s %s (it serves %q)", p, req.Method, req.URL.Path, got)
		}
		if method == "" {
			continue // a method-less fallback, such as the JSON 405s
		}
		want = append(want, method+" "+canonical(path))
	}
	sort.Strings(want)
	want = slices.Compact(want)
	documented := documentedRoutes(t)

	for _, r := range want {
		if !slices.Contains(documented, r) {
			t.Errorf("registered route %q is missing from docs/openapi.yaml", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(want, r) {
			t.Errorf("docs/openapi.yaml lists %q, which nobody registers", r)
		}
	}
	if len(want) < 8 {
		t.Fatalf("only %d routes found (%v): the route discovery is broken", len(want), want)
	}
}

// nilStore is enough for tests that only build and register routes.
func nilStore() *billing.Store { return billing.New(nil) }

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestOpenAPIServed(t *testing.T) {
	cfg := loadConfig(t, "http://127.0.0.1:9")
	api, err := New(cfg, nilStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/openapi.yaml", nil))
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/yaml" || w.Body.String() != string(docs.OpenAPI) {
		t.Fatalf("GET /openapi.yaml: %d %q, %d bytes", w.Code, w.Header().Get("Content-Type"), w.Body.Len())
	}
}
