package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/config"
)

// noTenant counts tenant lookups and refuses them: a mounted request must
// never get that far.
type noTenant struct{ calls int }

func (n *noTenant) Resolve(context.Context, *fasthttp.RequestHeader) (string, error) {
	n.calls++
	return "", errNoTenantForTest
}

var errNoTenantForTest = errors.New("no tenant in this test")

type echoMount struct{}

func (echoMount) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
}

type getOnlyMount struct{ echoMount }

func (getOnlyMount) MatchMount(method, path string) bool {
	return method == http.MethodGet && path == "/plans"
}

func TestMount(t *testing.T) {
	cases := []struct {
		name         string
		h            http.Handler
		method, uri  string
		mounted      bool
		wantEchoBody string
	}{
		{"under prefix", echoMount{}, "GET", "/api/v1/billing/plans?limit=2", true, "GET /plans?limit=2"},
		{"trailing slash prefix", echoMount{}, "POST", "/billing/x", true, "POST /x?"},
		{"unnormalised path", echoMount{}, "GET", "/api//v1/billing/./plans", true, "GET /plans?"},
		// Without a Host header fasthttp would read "api" as a host.
		{"leading double slash", echoMount{}, "GET", "//api/v1/billing/plans?next=x://", true, "GET /plans?next=x://"},
		{"leading double slash, first segment the prefix", echoMount{}, "GET", "//billing/plans", true, "GET /plans?"},
		{"prefix alone", echoMount{}, "GET", "/billing", false, ""},
		{"not a whole segment", echoMount{}, "GET", "/billingx/plans", false, ""},
		{"elsewhere", echoMount{}, "GET", "/api/v1/agents", false, ""},
		{"matcher claims", getOnlyMount{}, "GET", "/billing/plans", true, "GET /plans?"},
		{"matcher declines method", getOnlyMount{}, "POST", "/billing/plans", false, ""},
		{"matcher declines path", getOnlyMount{}, "GET", "/billing/checkout", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := &config.Config{Router: &config.Router{}}
			res := &noTenant{}
			h := NewHandler(cfg, res, nil, nil, WithMount([]string{"/api/v1/billing", "/billing/", "", "/"}, c.h))
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.SetMethod(c.method)
			ctx.Request.SetRequestURI(c.uri)
			h.Serve(&ctx)
			if mounted := res.calls == 0; mounted != c.mounted {
				t.Fatalf("mounted = %v, want %v", mounted, c.mounted)
			}
			if c.mounted && string(ctx.Response.Body()) != c.wantEchoBody {
				t.Fatalf("body = %q, want %q", ctx.Response.Body(), c.wantEchoBody)
			}
		})
	}
}

// A request under no prefix costs the mount check no allocation.
func TestMountMissAllocatesNothing(t *testing.T) {
	m := &mounts{prefixes: [][]byte{[]byte("/api/v1/billing"), []byte("/billing")}}
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/api/v1/messages")
	if n := testing.AllocsPerRun(100, func() { m.dispatch(&ctx, ctx.Path()) }); n != 0 {
		t.Fatalf("%v allocations per miss", n)
	}
}
