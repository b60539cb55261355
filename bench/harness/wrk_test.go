package harness

import (
	"context"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/bench/loadgen"
)

// TestWrkScripts runs wrk for real with both kinds of generated script, so
// the Lua (static request, and request() with Zipf keys, a create/delete
// sequence and several targets) is known to work. Without wrk installed the
// harness must fall back to the Go generator and refuse an explicit wrk,
// which is what is checked then.
func TestWrkScripts(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		auto := Options{Root: ".", Generator: "auto"}
		if err := auto.fill(); err != nil || auto.Generator != "go" {
			t.Fatalf("without wrk, auto picked %q (err %v), want the Go generator", auto.Generator, err)
		}
		explicit := Options{Root: ".", Generator: "wrk"}
		if err := explicit.fill(); err == nil {
			t.Fatal("BENCH_LOADGEN=wrk accepted without wrk installed")
		}
		return
	}
	var mu sync.Mutex
	seen := map[string]int{}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		seen[string(ctx.Method())+" "+string(ctx.Request.Header.Peek("Authorization"))]++
		mu.Unlock()
		if ctx.IsPost() {
			ctx.SetStatusCode(201)
		}
	}}
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(ln) }()
		addrs = append(addrs, ln.Addr().String())
	}
	t.Cleanup(func() { _ = srv.Shutdown() })

	for _, tc := range []struct {
		name string
		cfg  loadgen.Config
	}{
		{"static", loadgen.Config{Targets: addrs[:1], Connections: 2,
			Sequence: []loadgen.Request{{Method: "GET", Path: "/x"}}, Keys: []string{"one"}}},
		{"dynamic", loadgen.Config{Targets: addrs, Connections: 4, Zipf: true, Keys: []string{"k0", "k1", "k2"},
			Sequence: []loadgen.Request{{Method: "POST", Path: "/a", Body: `{"name":"a"}`}, {Method: "DELETE", Path: "/a/{n}"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Duration = time.Second
			res, err := runWrk(context.Background(), t.TempDir(), 2, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests == 0 || res.Errors != 0 || res.Non2xx != 0 || res.LatencyUS.P999 == 0 {
				t.Fatalf("%+v", res)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["GET Bearer one"] == 0 || seen["POST Bearer k0"] == 0 || seen["DELETE Bearer k0"] == 0 || seen["POST Bearer k0"] < seen["POST Bearer k2"] {
		t.Fatalf("requests seen %v", seen)
	}
}
