package loadgen

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// server answers like the bench upstream and remembers what it saw.
type server struct {
	mu    sync.Mutex
	keys  map[string]int
	paths map[string]int
}

func startServer(t *testing.T) (string, *server) {
	t.Helper()
	s := &server{keys: map[string]int{}, paths: map[string]int{}}
	return serve(t, func(ctx *fasthttp.RequestCtx) {
		s.mu.Lock()
		s.keys[string(ctx.Request.Header.Peek("Authorization"))]++
		s.paths[string(ctx.Method())+" "+string(ctx.Path())]++
		s.mu.Unlock()
		if ctx.IsPost() {
			ctx.SetStatusCode(201)
		}
		ctx.SetBodyString(`{}`)
	}), s
}

// serve runs h on a loopback port until the test ends.
func serve(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	srv := &fasthttp.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

func TestRunCountsSequenceAndZipfKeys(t *testing.T) {
	addr, srv := startServer(t)
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"}
	res, err := Run(context.Background(), Config{
		Targets: []string{addr}, Connections: 4, Requests: 2000, Duration: 20 * time.Second,
		Sequence: []Request{{Method: "POST", Path: "/a", Body: `{}`}, {Method: "DELETE", Path: "/a/{n}"}},
		Keys:     keys, Zipf: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 2000 || res.Errors != 0 {
		t.Fatalf("requests %d errors %d (%s)", res.Requests, res.Errors, res.FirstError)
	}
	// Each connection alternates POST and DELETE, so where the count cut
	// each one off moves the split by at most one per connection.
	if res.Status["201"]+res.Status["200"] != 2000 || abs(res.Status["201"]-1000) > 4 || res.Non2xx != 0 {
		t.Fatalf("status %v non2xx %d", res.Status, res.Non2xx)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.paths["POST /a"] != res.Status["201"] || len(srv.paths) != 1+res.Status["200"] {
		t.Fatalf("POSTs %d, distinct paths %d: DELETE ids must differ", srv.paths["POST /a"], len(srv.paths))
	}
	// Zipf: the first key is the hottest and every request carried a key.
	if srv.keys["Bearer k0"] <= srv.keys["Bearer k7"] || srv.keys[""] != 0 {
		t.Fatalf("key counts %v", srv.keys)
	}
	if res.LatencyUS.P50 <= 0 || res.LatencyUS.P999 < res.LatencyUS.P50 {
		t.Fatalf("latency %+v", res.LatencyUS)
	}
}

func abs(v int) int { return max(v, -v) }

func TestRunPacedAndSpreadOverTargets(t *testing.T) {
	a, sa := startServer(t)
	b, sb := startServer(t)
	res, err := Run(context.Background(), Config{
		Targets: []string{a, b}, Connections: 2, Duration: 300 * time.Millisecond, Rate: 200,
		Sequence: []Request{{Method: "GET", Path: "/x"}}, Keys: []string{"only"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Rate != 200 {
		t.Fatalf("paced run: %+v", res)
	}
	sa.mu.Lock()
	sb.mu.Lock()
	defer sa.mu.Unlock()
	defer sb.mu.Unlock()
	if sa.paths["GET /x"] == 0 || sb.paths["GET /x"] == 0 {
		t.Fatalf("not spread: %v %v", sa.paths, sb.paths)
	}
}

// A paced connection whose answer comes late falls behind its schedule:
// the requests that were due meanwhile count from when they were due, so
// the stall shows in their latencies too, not only in the one that
// stalled (no coordinated omission).
func TestRunPacedCountsQueueingBehindASlowAnswer(t *testing.T) {
	const stall = 200 * time.Millisecond
	var n atomic.Int64
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		if n.Add(1) == 3 {
			time.Sleep(stall)
		}
		ctx.SetBodyString(`{}`)
	})

	// One connection, one request due every 20 ms: about ten fall due
	// during the stall and are sent, late, right after it.
	res, err := Run(context.Background(), Config{
		Targets: []string{addr}, Connections: 1, Duration: 600 * time.Millisecond, Rate: 50,
		Sequence: []Request{{Method: "GET", Path: "/x"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) }
	// Counted from their send times, only the stalled request would be
	// slow and the 90th percentile would be a fast answer's.
	if res.Requests < 15 || res.LatencyUS.Max < us(stall) || res.LatencyUS.P90 < us(stall/4) {
		t.Fatalf("%d requests, latency %+v: the queueing behind the stall is not counted", res.Requests, res.LatencyUS)
	}
}

func TestRunRejectsUnboundedOrBadConfig(t *testing.T) {
	seq := []Request{{Method: "GET", Path: "/"}}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"unbounded", Config{Targets: []string{"x:1"}, Connections: 1, Sequence: seq}, "bounded"},
		{"no target", Config{Connections: 1, Duration: time.Second, Sequence: seq}, "target"},
		{"no connections", Config{Targets: []string{"x:1"}, Duration: time.Second, Sequence: seq}, "connections"},
		{"zipf one key", Config{Targets: []string{"x:1"}, Connections: 1, Duration: time.Second, Sequence: seq, Zipf: true, Keys: []string{"a"}}, "zipf"},
		{"bad path", Config{Targets: []string{"x:1"}, Connections: 1, Duration: time.Second, Sequence: []Request{{Method: "GET", Path: "x"}}}, "bad request"},
		{"negative rate", Config{Targets: []string{"x:1"}, Connections: 1, Duration: time.Second, Sequence: seq, Rate: -1}, "rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestRunCountsConnectionErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	res, err := Run(context.Background(), Config{Targets: []string{addr}, Connections: 1, Requests: 5,
		Duration: 5 * time.Second, Sequence: []Request{{Method: "GET", Path: "/"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 5 || res.Requests != 0 || res.FirstError == "" {
		t.Fatalf("%+v", res)
	}
}
