package proxy_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestMeteredPathSpellings: a request-target the upstream serves as a
// metered path is counted however it is spelled. The targets go out raw,
// since Go's client would tidy some of them.
func TestMeteredPathSpellings(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	free := h.createTenant("free")

	cases := []struct {
		name, target string
		noHost       bool
	}{
		{"plain", "/api/v1/messages", false},
		{"duplicate slash", "/api//v1/messages", false},
		{"dot segment", "/api/v1/./messages", false},
		{"leading double slash", "//api/v1/messages", false},
		// fasthttp reads a target starting with // as scheme-relative
		// (//host/path) when it holds :// anywhere or comes without a
		// Host header; the upstream still gets it verbatim.
		{"leading double slash, :// in the query", "//api/v1/messages?next=x://", false},
		{"leading double slash, :// in the path", "//api/v1/x:///../messages", false},
		// HTTP/1.1 requires a Host header, HTTP/1.0 does not.
		{"leading double slash, HTTP/1.0 without Host", "//api/v1/messages", true},
		{"leading double slash, HTTP/1.0 without Host, dot segments", "//api/v1/../v1/./messages?q=1", true},
		{"escaped letter", "/api/v1/%6Dessages", false},
		// Upstream routers commonly serve /x/ as /x.
		{"trailing slash", "/api/v1/messages/", false},
		{"trailing slash and query", "/api/v1/messages/?x=1", false},
		{"trailing dot segment", "/api/v1/messages/.", false},
		{"leading double slash and trailing slash", "//api/v1/messages/?next=x://", false},
	}
	var want int64
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proto, host := "HTTP/1.1", "Host: example.com\r\n"
			if tc.noHost {
				proto, host = "HTTP/1.0", ""
			}
			body := `{"text":"x"}`
			raw := fmt.Sprintf("POST %s %s\r\n%sAuthorization: Bearer %s\r\n"+
				"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
				tc.target, proto, host, free.APIKey, len(body), body)
			status, b := h.rawCall(raw)
			if status != http.StatusCreated {
				t.Fatalf("POST %s: %d %s", tc.target, status, b)
			}
			want++
			if got := h.usage(free.ID, "messages"); got != want {
				t.Errorf("POST %s: messages used %d, want %d", tc.target, got, want)
				want = got
			}
		})
	}
}

// TestHealthzSpellings: Tollgate answers its health check itself, without
// a credential, on the normalised path.
func TestHealthzSpellings(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, target := range []string{"/healthz", "/./healthz", "//healthz", "//healthz?next=x://"} {
		status, b := h.rawCall("GET " + target + " HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
		if status != http.StatusOK || string(b) != `{"status":"ok"}` {
			t.Errorf("GET %s: %d %s", target, status, b)
		}
	}
	if n := h.up.all.Load(); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
}

// TestTrailingSlashIsInsignificant: a route matches its path with and
// without one trailing slash, whichever way the route is written.
func TestTrailingSlashIsInsignificant(t *testing.T) {
	h := newHarness(t, harnessOpts{edit: func(s string) string {
		return strings.Replace(s, "routes:\n", "routes:\n  - {method: POST, path: /api/v1/exports/, meter: {feature: messages}}\n", 1)
	}})
	mini := h.createTenant("mini")

	for i, path := range []string{"/api/v1/exports/", "/api/v1/exports", "/api/v1/exports/?x=1"} {
		if r := h.call(mini.APIKey, "POST", path, `{}`); r.status != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", path, r.status, r.body)
		}
		if got := h.usage(mini.ID, "messages"); got != int64(i+1) {
			t.Errorf("after POST %s: messages used %d, want %d", path, got, i+1)
		}
	}

	// A route with a parameter: DELETE /api/v1/agents/{id} frees a unit
	// when asked as /api/v1/agents/7/ too.
	for range 2 {
		if r := h.call(mini.APIKey, "POST", "/api/v1/agents/", `{"name":"a"}`); r.status != http.StatusCreated {
			t.Fatalf("create agent: %d %s", r.status, r.body)
		}
	}
	if got := h.usage(mini.ID, "agents"); got != 2 {
		t.Fatalf("agents %d after two creates, want 2", got)
	}
	if r := h.call(mini.APIKey, "DELETE", "/api/v1/agents/7/", ""); r.status != http.StatusNoContent {
		t.Fatalf("delete agent: %d %s", r.status, r.body)
	}
	if got := h.usage(mini.ID, "agents"); got != 1 {
		t.Errorf("agents %d after DELETE /api/v1/agents/7/, want 1", got)
	}
}

// TestPercentEncodedRoute: a route written with an escape matches the
// request that spells it so, and any other spelling of the same bytes.
func TestPercentEncodedRoute(t *testing.T) {
	h := newHarness(t, harnessOpts{edit: func(s string) string {
		return strings.Replace(s, "routes:\n", "routes:\n  - {method: POST, path: /api/v1/files/a%20b, meter: {feature: messages}}\n", 1)
	}})
	free := h.createTenant("free")
	for i, path := range []string{"/api/v1/files/a%20b", "/api/v1/files/%61%20%62"} {
		if r := h.call(free.APIKey, "POST", path, `{"x":1}`); r.status != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", path, r.status, r.body)
		}
		if got := h.usage(free.ID, "messages"); got != int64(i+1) {
			t.Errorf("after POST %s (route /api/v1/files/a%%20b): messages used %d, want %d", path, got, i+1)
		}
	}
	if got := h.up.count("POST", "/api/v1/files/a b"); got != 2 {
		t.Errorf("upstream saw %d", got)
	}
}
