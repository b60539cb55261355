// Package loadgen is the benchmark's closed-loop HTTP load generator: N
// keep-alive connections, each sending its next request as soon as the last
// answer arrived, for a fixed duration or request count. It exists so the
// harness works without wrk; cmd/loadgen wraps it as a command.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Request is one kind of request a connection sends.
type Request struct {
	Method string `json:"method"`
	// Path may contain "{n}", replaced by a per-connection sequence number
	// (the id of a DELETE).
	Path string `json:"path"`
	Body string `json:"body,omitempty"`
}

// Config describes one bounded run.
type Config struct {
	// Targets are host:port addresses; connections are spread over them
	// round-robin (several proxy instances behind one client).
	Targets     []string
	Connections int
	// Duration bounds the run; Requests, when > 0, stops it earlier after
	// that many answers. At least one of them must be set.
	Duration time.Duration
	Requests int64
	// Sequence is sent in turn by every connection: one entry for a single
	// route, [create, delete] for gauges.
	Sequence []Request
	// Keys are API keys sent as "Authorization: Bearer <key>"; none: no
	// header. With Zipf, each request picks a key with a Zipf distribution
	// (key 0 the hottest); otherwise connection i uses Keys[i%len(Keys)].
	Keys []string
	Zipf bool
	// ZipfS is the Zipf exponent (> 1); default 1.1.
	ZipfS   float64
	Timeout time.Duration // per request; default 5s
	// Rate, when > 0, paces the run open-loop at this many requests per
	// second in total: each connection sends on a fixed schedule. A
	// request sent behind schedule (its connection's previous answer came
	// late) counts its latency from when it was due, so a slow answer that
	// delays the next ones shows in the percentiles (no coordinated
	// omission). A request the generator waited for counts from when the
	// generator woke to send it: Go's timers fire up to a millisecond late
	// when the process is idle (the poller sleeps in whole milliseconds),
	// and that lateness is the generator's, not the target's. Zero: closed
	// loop, as fast as answers come.
	Rate float64
}

// Result is what a run measured. Latencies are in microseconds.
type Result struct {
	Generator   string         `json:"generator"`
	Targets     []string       `json:"targets"`
	Connections int            `json:"connections"`
	Rate        float64        `json:"rate,omitempty"`
	DurationSec float64        `json:"duration_s"`
	Requests    int64          `json:"requests"`
	Errors      int64          `json:"errors"`
	Non2xx      int64          `json:"non_2xx"`
	Status      map[string]int `json:"status,omitempty"`
	RPS         float64        `json:"rps"`
	LatencyUS   Latency        `json:"latency_us"`
	FirstError  string         `json:"first_error,omitempty"`
}

// Latency summarises a histogram in microseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// LatencyOf summarises h.
func LatencyOf(h *Histogram) Latency {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return Latency{
		P50: us(h.Quantile(0.50)), P90: us(h.Quantile(0.90)), P99: us(h.Quantile(0.99)),
		P999: us(h.Quantile(0.999)), Max: us(h.Max()), Mean: us(h.Mean()),
	}
}

func (c *Config) validate() error {
	switch {
	case len(c.Targets) == 0:
		return errors.New("no target")
	case c.Connections < 1:
		return errors.New("connections must be >= 1")
	case c.Duration <= 0 && c.Requests <= 0:
		return errors.New("a duration or a request count is required (runs are bounded)")
	case len(c.Sequence) == 0:
		return errors.New("no request in the sequence")
	case c.Zipf && len(c.Keys) < 2:
		return errors.New("zipf needs at least 2 keys")
	case c.Rate < 0:
		return errors.New("rate must be >= 0")
	case c.Zipf && c.ZipfS != 0 && c.ZipfS <= 1:
		return errors.New("zipf exponent must be > 1")
	}
	for _, r := range c.Sequence {
		if r.Method == "" || !strings.HasPrefix(r.Path, "/") {
			return fmt.Errorf("bad request %q %q", r.Method, r.Path)
		}
	}
	return nil
}

// worker is one connection's state; only its goroutine touches it.
type worker struct {
	hist     *Histogram
	status   map[int]int
	errs     int64
	firstErr error
}

// Run sends load until the duration passes, the request count is reached or
// ctx ends, and reports what it measured.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, fmt.Errorf("loadgen: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ZipfS == 0 {
		cfg.ZipfS = 1.1
	}
	perTarget := (cfg.Connections + len(cfg.Targets) - 1) / len(cfg.Targets)
	clients := make([]*fasthttp.HostClient, len(cfg.Targets))
	for i, addr := range cfg.Targets {
		clients[i] = &fasthttp.HostClient{
			Addr:                          addr,
			MaxConns:                      perTarget,
			ReadTimeout:                   cfg.Timeout,
			WriteTimeout:                  cfg.Timeout,
			MaxIdleConnDuration:           time.Minute,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
		}
	}
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()

	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var issued atomic.Int64
	workers := make([]*worker, cfg.Connections)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range workers {
		w := &worker{hist: NewHistogram(), status: map[int]int{}}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx, &cfg, clients[i%len(clients)], i, &issued)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	total := NewHistogram()
	res := Result{Generator: "go", Targets: cfg.Targets, Connections: cfg.Connections, Rate: cfg.Rate, Status: map[string]int{}}
	for _, w := range workers {
		total.Merge(w.hist)
		res.Errors += w.errs
		if w.firstErr != nil && res.FirstError == "" {
			res.FirstError = w.firstErr.Error()
		}
		for code, n := range w.status {
			res.Status[strconv.Itoa(code)] += n
			if code < 200 || code > 299 {
				res.Non2xx += int64(n)
			}
		}
	}
	res.Requests = int64(total.Count())
	res.DurationSec = elapsed.Seconds()
	if res.DurationSec > 0 {
		res.RPS = float64(res.Requests) / res.DurationSec
	}
	res.LatencyUS = LatencyOf(total)
	return res, nil
}

func (w *worker) loop(ctx context.Context, cfg *Config, client *fasthttp.HostClient, id int, issued *atomic.Int64) {
	reqs := make([]*fasthttp.Request, len(cfg.Sequence))
	for i, spec := range cfg.Sequence {
		r := &fasthttp.Request{}
		r.Header.SetMethod(spec.Method)
		r.Header.SetHost(client.Addr)
		r.SetRequestURI(spec.Path)
		if spec.Body != "" {
			r.Header.SetContentType("application/json")
			r.SetBodyString(spec.Body)
		}
		reqs[i] = r
	}
	var zipf *rand.Zipf
	var bearer [][]byte
	if len(cfg.Keys) > 0 {
		bearer = make([][]byte, len(cfg.Keys))
		for i, k := range cfg.Keys {
			bearer[i] = []byte("Bearer " + k)
		}
		if cfg.Zipf {
			// Seeded per connection: runs are repeatable, connections differ.
			r := rand.New(rand.NewPCG(uint64(id)+1, 0x7011))
			zipf = rand.NewZipf(r, cfg.ZipfS, 1, uint64(len(cfg.Keys)-1))
		}
	}
	resp := &fasthttp.Response{}
	var interval time.Duration
	var due time.Time
	if cfg.Rate > 0 {
		interval = time.Duration(float64(cfg.Connections) / cfg.Rate * float64(time.Second))
		// Staggered so the connections do not fire together.
		due = time.Now().Add(interval * time.Duration(id) / time.Duration(cfg.Connections))
	}
	for seq := 0; ; seq++ {
		if ctx.Err() != nil {
			return
		}
		// Every loop is bounded: by the context's deadline or by the count.
		if cfg.Requests > 0 && issued.Add(1) > cfg.Requests {
			return
		}
		spec := cfg.Sequence[seq%len(cfg.Sequence)]
		req := reqs[seq%len(reqs)]
		if strings.Contains(spec.Path, "{n}") {
			req.SetRequestURI(strings.ReplaceAll(spec.Path, "{n}", strconv.Itoa(id*1_000_000+seq)))
		}
		switch {
		case zipf != nil:
			req.Header.SetBytesV("Authorization", bearer[zipf.Uint64()])
		case bearer != nil:
			req.Header.SetBytesV("Authorization", bearer[id%len(bearer)])
		}
		t0 := time.Now()
		if interval > 0 {
			t0 = due
			if wait := time.Until(due); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				t0 = time.Now()
			}
			due = due.Add(interval)
		}
		err := client.Do(req, resp)
		lat := time.Since(t0)
		if err != nil {
			// A request cut by the end of the run is not an error.
			if ctx.Err() != nil {
				return
			}
			w.errs++
			if w.firstErr == nil {
				w.firstErr = err
			}
			continue
		}
		w.hist.Record(lat)
		w.status[resp.StatusCode()]++
	}
}
