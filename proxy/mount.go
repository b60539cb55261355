package proxy

import (
	"bytes"
	"net/http"
	"strings"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// MountMatcher is implemented by a mounted handler that serves only some
// of the requests under its prefixes (e.g. the billing API's GET routes):
// the others go through the proxy as usual, so the upstream keeps its own
// routes under the same prefix (POST /billing/checkout, PATCH
// /v1/workspace/subscription). path is the request path with the mount
// prefix removed, always starting with "/".
type MountMatcher interface {
	MatchMount(method, path string) bool
}

// mounts is a set of path prefixes served by one net/http handler.
type mounts struct {
	prefixes [][]byte
	matcher  MountMatcher // nil: every request under a prefix
	serve    fasthttp.RequestHandler
}

// WithMount makes the handler answer requests under any of prefixes with h,
// before tenant resolution (h authenticates by itself) and without counting
// or forwarding them. h sees the path with the prefix removed: with the
// prefix /api/v1/billing, GET /api/v1/billing/plans reaches h as GET /plans.
// When h implements MountMatcher only the requests it claims are taken.
// Prefixes are matched on whole segments of the normalised path; empty or
// "/" prefixes and a trailing slash are ignored.
func WithMount(prefixes []string, h http.Handler) Option {
	return func(hd *Handler) {
		if h == nil {
			return
		}
		m := &mounts{serve: fasthttpadaptor.NewFastHTTPHandler(h)}
		m.matcher, _ = h.(MountMatcher)
		for _, p := range prefixes {
			p = strings.TrimRight(p, "/")
			if p == "" || p[0] != '/' {
				continue
			}
			m.prefixes = append(m.prefixes, []byte(p))
		}
		if len(m.prefixes) > 0 {
			hd.mount = m
		}
	}
}

// dispatch serves ctx, whose normalised path is path, when it falls under
// a mount and reports whether it did. A request under no prefix costs a few
// byte comparisons and no allocation.
func (m *mounts) dispatch(ctx *fasthttp.RequestCtx, path []byte) bool {
	for _, p := range m.prefixes {
		if !bytes.HasPrefix(path, p) {
			continue
		}
		rest := path[len(p):]
		if len(rest) == 0 || rest[0] != '/' {
			continue // /api/v1/billingx is not under /api/v1/billing
		}
		if m.matcher != nil && !m.matcher.MatchMount(string(ctx.Method()), string(rest)) {
			continue
		}
		// The adaptor builds the net/http request from the raw request URI;
		// rewriting it to the normalised, unprefixed path keeps what h
		// routes on identical to what was matched here.
		uri := make([]byte, 0, len(rest)+1+len(ctx.URI().QueryString()))
		uri = append(uri, rest...)
		if q := ctx.URI().QueryString(); len(q) > 0 {
			uri = append(uri, '?')
			uri = append(uri, q...)
		}
		ctx.Request.SetRequestURIBytes(uri)
		m.serve(ctx)
		return true
	}
	return false
}
