// Package harness runs Tollgate's load benchmark: it starts on loopback a
// private Redis, a fasthttp stand-in upstream, Tollgate (one or four
// instances) and, when installed, nginx as the reference proxy; drives each
// scenario with wrk or the Go load generator for a bounded time; and writes
// bench/results/<date>-<scenario>.json and latest.md. scripts/bench.sh
// (make bench) and cmd/benchrun are its front ends.
package harness

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Options says what one harness run does. Zero values take the defaults.
type Options struct {
	Root        string        // repository root (builds ./cmd/tollgate and ./bench/cmd/upstream)
	OutDir      string        // results directory; default Root/bench/results
	Duration    time.Duration // timed part of each run; default 8s
	Warmup      time.Duration // untimed load before each run; default 2s
	Connections int           // client connections; default 32
	Scenarios   []string      // default all, in the order of AllScenarios
	// Generator is "wrk", "go" or "auto" (wrk when installed, else go).
	Generator  string
	WrkThreads int  // default 2, one per core of the reference machine
	NoNginx    bool // skip the nginx reference even when installed
	NoGoBench  bool // skip the proxy package's allocation benchmark
	// OwnSessions starts every server in a session, and so a scheduling
	// group, of its own (BENCH_OWN_SESSIONS=1); see startProc.
	OwnSessions bool
	GoBenchIter int // iterations of each Go benchmark; default 20000
	Tenants     int // tenants of the Zipf scenario; default 1000
	Instances   int // proxy instances of the multi scenario; default 4
	// Rate is the open-loop request rate of the latency runs (Go
	// generator), low enough for every target to keep up; default 5000.
	Rate    float64
	NoPaced bool // skip the fixed-rate latency runs
	// Rounds of alternating short runs the throughput ratios are judged
	// on (rounds.go); default 5, negative for none.
	Rounds        int
	RoundDuration time.Duration // timed part of each round's runs; default 3s
	// SharedRedisURL is used only when redis-server is not installed (no
	// private instance can be started); default redis://127.0.0.1:6379/0.
	SharedRedisURL string
	// DatabaseURL is the PostgreSQL Tollgate keeps tenants in; each run
	// uses a schema of its own there, dropped at the end. Default
	// TOLLGATE_TEST_DATABASE_URL or the local test database.
	DatabaseURL string
	Log         io.Writer // progress; default os.Stderr
	Now         time.Time // date of the result files; default time.Now()
}

// OptionsFromEnv reads the BENCH_* variables documented in bench/README.md.
func OptionsFromEnv(root string) (Options, error) {
	o := Options{Root: root, OutDir: os.Getenv("BENCH_RESULTS"), Generator: os.Getenv("BENCH_LOADGEN"),
		SharedRedisURL: os.Getenv("BENCH_REDIS_URL"), DatabaseURL: os.Getenv("BENCH_DATABASE_URL")}
	var err error
	dur := func(name string, dst *time.Duration) {
		if v := os.Getenv(name); v != "" && err == nil {
			if *dst, err = time.ParseDuration(v); err != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	}
	num := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" && err == nil {
			if *dst, err = strconv.Atoi(v); err != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	}
	dur("BENCH_DURATION", &o.Duration)
	dur("BENCH_WARMUP", &o.Warmup)
	num("BENCH_CONNECTIONS", &o.Connections)
	num("BENCH_WRK_THREADS", &o.WrkThreads)
	num("BENCH_GOBENCH_ITER", &o.GoBenchIter)
	num("BENCH_TENANTS", &o.Tenants)
	num("BENCH_INSTANCES", &o.Instances)
	num("BENCH_ROUNDS", &o.Rounds)
	dur("BENCH_ROUND_DURATION", &o.RoundDuration)
	if os.Getenv("BENCH_ROUNDS") == "0" {
		o.Rounds = -1
	}
	if err != nil {
		return o, err
	}
	if v := os.Getenv("BENCH_RATE"); v != "" {
		if o.Rate, err = strconv.ParseFloat(v, 64); err != nil {
			return o, fmt.Errorf("BENCH_RATE=%q: %w", v, err)
		}
	}
	o.NoPaced = os.Getenv("BENCH_PACED") == "0"
	if v := os.Getenv("BENCH_SCENARIOS"); v != "" {
		o.Scenarios = strings.Split(v, ",")
	}
	o.NoNginx = os.Getenv("BENCH_NGINX") == "0"
	o.NoGoBench = os.Getenv("BENCH_GOBENCH") == "0"
	o.OwnSessions = os.Getenv("BENCH_OWN_SESSIONS") == "1"
	return o, nil
}

func (o *Options) fill() error {
	if o.Root == "" {
		o.Root = "."
	}
	if o.OutDir == "" {
		o.OutDir = o.Root + "/bench/results"
	}
	if o.Duration == 0 {
		o.Duration = 8 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 2 * time.Second
	}
	if o.Connections == 0 {
		o.Connections = 32
	}
	if o.WrkThreads == 0 {
		o.WrkThreads = 2
	}
	if o.GoBenchIter == 0 {
		o.GoBenchIter = 20000
	}
	if o.Tenants == 0 {
		o.Tenants = 1000
	}
	if o.Instances == 0 {
		o.Instances = 4
	}
	if o.Rate == 0 {
		o.Rate = 5000
	}
	if o.Rounds == 0 {
		o.Rounds = 5
	}
	if o.RoundDuration == 0 {
		o.RoundDuration = 3 * time.Second
	}
	if o.SharedRedisURL == "" {
		o.SharedRedisURL = "redis://127.0.0.1:6379/0"
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	switch {
	case o.Duration < 0 || o.Duration > 5*time.Minute:
		return fmt.Errorf("duration %s: want 0 < d <= 5m (runs are bounded)", o.Duration)
	case o.Warmup < 0 || o.Warmup > time.Minute:
		return fmt.Errorf("warmup %s: want 0 <= w <= 1m", o.Warmup)
	case o.Connections < 1 || o.Connections > 4096:
		return fmt.Errorf("connections %d: want 1..4096", o.Connections)
	case o.Tenants < 2 || o.Tenants > 100000:
		return fmt.Errorf("tenants %d: want 2..100000", o.Tenants)
	case o.Rate < 1 || o.Rate > 1e6:
		return fmt.Errorf("rate %g: want 1..1e6 requests/s", o.Rate)
	case o.Instances < 1 || o.Instances > 16:
		return fmt.Errorf("instances %d: want 1..16", o.Instances)
	case o.Rounds > 20:
		return fmt.Errorf("rounds %d: want 0..20", o.Rounds)
	case o.RoundDuration < 0 || o.RoundDuration > time.Minute:
		return fmt.Errorf("round duration %s: want 0 < d <= 1m", o.RoundDuration)
	}
	switch o.Generator {
	case "", "auto":
		o.Generator = "go"
		if _, err := exec.LookPath("wrk"); err == nil {
			o.Generator = "wrk"
		}
	case "go":
	case "wrk":
		if _, err := exec.LookPath("wrk"); err != nil {
			return fmt.Errorf("BENCH_LOADGEN=wrk but wrk is not installed")
		}
	default:
		return fmt.Errorf("generator %q: want wrk, go or auto", o.Generator)
	}
	if len(o.Scenarios) == 0 {
		for _, s := range AllScenarios {
			o.Scenarios = append(o.Scenarios, s.Name)
		}
	}
	for _, name := range o.Scenarios {
		if scenarioByName(name) == nil {
			return fmt.Errorf("unknown scenario %q (have %s)", name, scenarioNames())
		}
	}
	return nil
}
