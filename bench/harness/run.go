package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/tollgate/tollgate/bench/loadgen"
)

// monitorRequests is the size of the MONITOR pass that counts round trips;
// monitorIdle the idle window before it, where background commands are
// learnt.
const (
	monitorRequests = 200
	monitorIdle     = time.Second
)

// env is everything one harness run started.
type env struct {
	opts     Options
	dir      string
	hz       float64
	dbURL    string // Tollgate's PostgreSQL, a schema of this run
	redis    *benchRedis
	upstream *proc
	upAddr   string
	nginx    *proc
	nginxAdr string
	tgBin    string
	token    string
	tollgate []*instance
	// single is Tollgate as one process (TOLLGATE_WORKERS=1), for the
	// rounds' comparison legs; nil when the configuration runs one process
	// anyway.
	single  *instance
	keys    map[string][]string // plan or "zipf" → API keys
	created []createdTenant
}

type instance struct {
	p         *proc
	addr, api string
}

// pids are the instance's processes: Tollgate itself and, when it runs
// workers (the workers setting), each of them; looked up when asked, as a
// worker that died is replaced.
func (in *instance) pids() []int {
	return append([]int{in.p.pid()}, childrenOf(in.p.pid())...)
}

// Run runs the selected scenarios and writes their results. Every server it
// starts is stopped before it returns.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.fill(); err != nil {
		return nil, fmt.Errorf("bench options: %w", err)
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("bench root: %w", err)
	}
	opts.Root = root
	dir, err := os.MkdirTemp("", "tollgate-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench temp dir: %w", err)
	}
	dbURL, dropSchema, err := benchSchema(ctx, opts.DatabaseURL)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer dropSchema()
	e := &env{opts: opts, dir: dir, hz: clockTicks(), keys: map[string][]string{}, dbURL: dbURL}
	rep, err := e.run(ctx)
	e.teardown()
	if err != nil {
		return nil, fmt.Errorf("%w (server logs kept in %s)", err, dir)
	}
	_ = os.RemoveAll(dir)
	return rep, nil
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.opts.Log, "bench: "+format+"\n", args...)
}

func (e *env) teardown() {
	for _, in := range e.tollgate {
		in.p.stop()
	}
	if e.single != nil {
		e.single.p.stop()
	}
	e.nginx.stop()
	e.upstream.stop()
	if e.redis != nil {
		if !e.redis.private && len(e.created) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := deleteTenantKeys(ctx, e.redis.rdb, e.created); err != nil {
				e.logf("cleanup: %v", err)
			}
			cancel()
		}
		e.redis.close()
	}
}

func (e *env) run(ctx context.Context) (*Report, error) {
	o := &e.opts
	rep := &Report{
		Date: o.Now.UTC().Format(time.RFC3339), Machine: machineInfo(), Generator: o.Generator,
		Connections: o.Connections, DurationSec: o.Duration.Seconds(), WarmupSec: o.Warmup.Seconds(), OwnSessions: o.OwnSessions,
	}
	if !o.NoPaced {
		rep.PacedRate = o.Rate
	}
	rep.Machine.HostStart = e.measureHost("start")
	e.logf("building tollgate and the bench upstream")
	tgBin, upBin, err := build(ctx, o.Root, e.dir)
	if err != nil {
		return nil, err
	}
	e.tgBin = tgBin
	if e.redis, err = startRedis(ctx, e.dir, o.SharedRedisURL, o.OwnSessions); err != nil {
		return nil, err
	}
	rep.Machine.RedisPrivate = e.redis.private
	if !e.redis.private {
		rep.Notes = append(rep.Notes, "redis-server is not installed: the run used the shared Redis at "+o.SharedRedisURL+
			", so Redis commands per request include whatever else used it meanwhile")
	}
	if e.upAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if e.upstream, err = startProc(e.dir, "upstream", o.OwnSessions, nil, upBin, "--listen", e.upAddr); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, e.upstream, "http://"+e.upAddr+"/healthz"); err != nil {
		return nil, err
	}
	if wantsTarget(o.Scenarios, "nginx") && !o.NoNginx {
		if e.nginx, e.nginxAdr, err = startNginx(ctx, e.dir, e.upAddr, o.OwnSessions); err != nil {
			return nil, err
		}
		if e.nginx == nil {
			rep.Notes = append(rep.Notes, "nginx is not installed: no reference proxy in this run")
		} else {
			rep.Machine.Nginx = commandVersion("nginx", "-v")
		}
	}
	if o.Generator == "wrk" {
		rep.Machine.Wrk = commandVersion("wrk", "-v")
	}
	e.token = randomHex(16)
	if err := e.startTollgates(ctx, 1); err != nil {
		return nil, err
	}
	rep.Machine.TollgateProcs, rep.Machine.TollgateWorkers = loggedProcs(e.tollgate[0].p.log)
	if err := e.makeTenants(ctx); err != nil {
		return nil, err
	}

	steal0 := readCPUTimes()
	for _, name := range o.Scenarios {
		sc := scenarioByName(name)
		res, err := e.runScenario(ctx, sc)
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", name, err)
		}
		rep.Scenarios = append(rep.Scenarios, res)
	}
	rep.computeRatios()
	if rep.Machine.TollgateWorkers > 1 && o.Rounds > 0 && len(e.roundLegs()) > 0 {
		if e.single, err = e.startTollgate(ctx, "tollgate-single", "TOLLGATE_WORKERS=1"); err != nil {
			return nil, err
		}
	}
	if rep.Rounds, err = e.runRounds(ctx); err != nil {
		return nil, fmt.Errorf("alternating rounds: %w", err)
	}
	rep.Machine.LoadAvgEnd = loadAvg()
	rep.Machine.HostEnd = e.measureHost("end")
	rep.Machine.StealPct = stealPct(steal0, readCPUTimes())

	if !o.NoGoBench {
		e.logf("go test -bench: proxy, config, tenant, quota (%d iterations, %d for in-memory ones)", o.GoBenchIter, o.GoBenchIter*microFactor)
		gb, cmds, err := runGoBench(ctx, o.Root, e.redis.url, o.GoBenchIter)
		rep.GoBenchCmds = cmds
		if err != nil {
			// The load figures stand on their own; say why allocations are missing.
			rep.Notes = append(rep.Notes, err.Error())
		}
		rep.GoBench = gb
	}
	rep.checkTargets(!o.NoGoBench)
	if err := rep.write(o.OutDir, o.Now); err != nil {
		return nil, err
	}
	e.logf("results in %s (latest.md)", o.OutDir)
	return rep, nil
}

func wantsTarget(scenarios []string, target string) bool {
	for _, name := range scenarios {
		for _, t := range scenarioByName(name).Targets {
			if t == target {
				return true
			}
		}
	}
	return false
}

// startTollgates brings the number of running instances up to n.
func (e *env) startTollgates(ctx context.Context, n int) error {
	for len(e.tollgate) < n {
		in, err := e.startTollgate(ctx, fmt.Sprintf("tollgate-%d", len(e.tollgate)+1))
		if err != nil {
			return err
		}
		e.tollgate = append(e.tollgate, in)
	}
	return nil
}

// startTollgate starts one instance on fresh ports, with extra settings
// in the environment, and waits until both its listeners answer.
func (e *env) startTollgate(ctx context.Context, name string, extraEnv ...string) (*instance, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	api, err := freeAddr()
	if err != nil {
		return nil, err
	}
	envv := append([]string{
		"TOLLGATE_LISTEN=" + addr, "TOLLGATE_API_LISTEN=" + api,
		"TOLLGATE_UPSTREAM_URL=http://" + e.upAddr, "TOLLGATE_REDIS_URL=" + e.redis.url,
		"TOLLGATE_ADMIN_TOKEN=" + e.token, "TOLLGATE_DATABASE_URL=" + e.dbURL,
	}, extraEnv...)
	p, err := startProc(e.dir, name, e.opts.OwnSessions, envv, e.tgBin, "serve", "--config", filepath.Join(e.opts.Root, "bench", "tollgate-bench.yaml"))
	if err != nil {
		return nil, err
	}
	in := &instance{p: p, addr: addr, api: api}
	for _, url := range []string{"http://" + addr + "/healthz", "http://" + api + "/healthz"} {
		if err := waitHTTP(ctx, p, url); err != nil {
			p.stop()
			return nil, err
		}
	}
	return in, nil
}

// stopExtraTollgates keeps only the first n instances.
func (e *env) stopExtraTollgates(n int) {
	for len(e.tollgate) > n {
		last := e.tollgate[len(e.tollgate)-1]
		last.p.stop()
		e.tollgate = e.tollgate[:len(e.tollgate)-1]
	}
}

func (e *env) makeTenants(ctx context.Context) error {
	api := e.tollgate[0].api
	need := map[string]bool{}
	zipf := false
	for _, name := range e.opts.Scenarios {
		sc := scenarioByName(name)
		if sc.Zipf {
			zipf = true
		} else {
			need[sc.Plan] = true
		}
	}
	for _, plan := range []string{"bench", "capped"} {
		if !need[plan] {
			continue
		}
		ts, err := createTenants(ctx, api, e.token, plan, 1)
		e.created = append(e.created, ts...)
		if err != nil {
			return err
		}
		e.keys[plan] = []string{ts[0].APIKey}
	}
	if zipf {
		start := time.Now()
		ts, err := createTenants(ctx, api, e.token, "bench", e.opts.Tenants)
		e.created = append(e.created, ts...)
		if err != nil {
			return err
		}
		for _, t := range ts {
			e.keys["zipf"] = append(e.keys["zipf"], t.APIKey)
		}
		e.logf("created %d tenants through the admin API in %s", len(ts), time.Since(start).Round(time.Millisecond))
	}
	return waitWrittenThrough(ctx, e.redis.rdb, e.created)
}

func (e *env) runScenario(ctx context.Context, sc *Scenario) (ScenarioResult, error) {
	res := ScenarioResult{Name: sc.Name, Description: sc.Description}
	keys := e.keys[sc.Plan]
	if sc.Zipf {
		keys = e.keys["zipf"]
	}
	if sc.Multi {
		if err := e.startTollgates(ctx, e.opts.Instances); err != nil {
			return res, err
		}
		defer e.stopExtraTollgates(1)
		res.Description = strings.Replace(sc.Description, "4 Tollgate", fmt.Sprintf("%d Tollgate", e.opts.Instances), 1)
	}
	if sc.Zipf {
		res.Description = strings.Replace(sc.Description, "1,000", fmt.Sprint(e.opts.Tenants), 1)
	}
	for _, target := range sc.Targets {
		cfg := loadgen.Config{Connections: e.opts.Connections, Sequence: sc.Sequence, Keys: keys, Zipf: sc.Zipf}
		var pids []int
		name := target
		switch target {
		case "direct":
			cfg.Targets = []string{e.upAddr}
			pids = []int{e.upstream.pid()}
		case "nginx":
			if e.nginx == nil {
				continue
			}
			cfg.Targets = []string{e.nginxAdr}
			pids = append([]int{e.nginx.pid()}, childrenOf(e.nginx.pid())...)
		case "tollgate":
			for _, in := range e.tollgate {
				cfg.Targets = append(cfg.Targets, in.addr)
				pids = append(pids, in.pids()...)
			}
			if len(e.tollgate) > 1 {
				name = fmt.Sprintf("tollgate x%d", len(e.tollgate))
			}
		}
		e.logf("%s → %s: %s warmup, %s measured, %d connections, %s", sc.Name, name, e.opts.Warmup, e.opts.Duration, cfg.Connections, e.opts.Generator)
		tr, err := e.measure(ctx, sc, cfg, pids)
		if err != nil {
			return res, fmt.Errorf("%s: %w", name, err)
		}
		tr.Target = name
		if target == "tollgate" {
			if err := e.countRoundTrips(ctx, cfg, &tr); err != nil {
				return res, err
			}
		}
		if sc.Paced && !e.opts.NoPaced {
			p := cfg
			p.Rate, p.Duration = e.opts.Rate, e.opts.Duration
			pr, err := loadgen.Run(ctx, p)
			if err != nil {
				return res, fmt.Errorf("%s paced: %w", name, err)
			}
			tr.Paced = &pr
			e.logf("  at %.0f req/s: p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs (%d errors)", e.opts.Rate,
				pr.LatencyUS.P50, pr.LatencyUS.P99, pr.LatencyUS.P999, pr.Errors)
		}
		e.logf("  %.0f req/s, p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, %.2f Redis commands/req, proxy CPU %.1f µs/req, CPU steal %s",
			tr.Load.RPS, tr.Load.LatencyUS.P50, tr.Load.LatencyUS.P99, tr.Load.LatencyUS.P999, tr.RedisCommandsPerReq, tr.CPUUSPerReq, formatSteal(tr.StealPct))
		res.Runs = append(res.Runs, tr)
	}
	return res, nil
}

// measure warms up, then runs the timed load between two snapshots of the
// servers' CPU time and of Redis' command counters.
func (e *env) measure(ctx context.Context, sc *Scenario, cfg loadgen.Config, pids []int) (TargetRun, error) {
	var tr TargetRun
	if e.opts.Warmup > 0 {
		w := cfg
		w.Duration = e.opts.Warmup
		if _, err := loadgen.Run(ctx, w); err != nil {
			return tr, fmt.Errorf("warmup: %w", err)
		}
	}
	upPID := e.upstream.pid()
	cpu0, err := cpuSeconds(e.hz, pids...)
	if err != nil {
		return tr, err
	}
	up0, err := cpuSeconds(e.hz, upPID)
	if err != nil {
		return tr, err
	}
	redisCPU := func() float64 { return 0 }
	if e.redis.private {
		redisCPU = func() float64 { v, _ := cpuSeconds(e.hz, e.redis.proc.pid()); return v }
	}
	red0 := redisCPU()
	redisSwitches := func() switchCount { return switchCount{-1, -1} }
	if e.redis.private {
		redisSwitches = func() switchCount { return contextSwitches(e.redis.proc.pid()) }
	}
	sw0, upSw0, redSw0 := contextSwitches(pids...), contextSwitches(upPID), redisSwitches()
	rs0, err := e.redis.commandStats(ctx)
	if err != nil {
		return tr, err
	}
	cfg.Duration = e.opts.Duration
	steal0 := readCPUTimes()
	if e.opts.Generator == "wrk" {
		tr.Load, err = runWrk(ctx, e.dir, e.opts.WrkThreads, cfg)
	} else {
		tr.Load, err = loadgen.Run(ctx, cfg)
	}
	if err != nil {
		return tr, err
	}
	tr.StealPct = stealPct(steal0, readCPUTimes())
	cpu1, err := cpuSeconds(e.hz, pids...)
	if err != nil {
		return tr, err
	}
	up1, err := cpuSeconds(e.hz, upPID)
	if err != nil {
		return tr, err
	}
	red1 := redisCPU()
	sw1, upSw1, redSw1 := contextSwitches(pids...), contextSwitches(upPID), redisSwitches()
	rs1, err := e.redis.commandStats(ctx)
	if err != nil {
		return tr, err
	}
	n := float64(tr.Load.Requests)
	if n == 0 {
		return tr, fmt.Errorf("no request completed (%d errors, first: %s)", tr.Load.Errors, tr.Load.FirstError)
	}
	tr.CPUUSPerReq = (cpu1 - cpu0) * 1e6 / n
	tr.CPUUtil = (cpu1 - cpu0) / tr.Load.DurationSec
	if len(pids) == 1 && pids[0] == upPID {
		tr.UpstreamCPUUSPerReq = tr.CPUUSPerReq
	} else {
		tr.UpstreamCPUUSPerReq = (up1 - up0) * 1e6 / n
	}
	tr.RedisCPUUSPerReq = (red1 - red0) * 1e6 / n
	tr.Switches = sw0.perReq(sw1, n)
	tr.UpstreamSwitches = upSw0.perReq(upSw1, n)
	tr.RedisSwitches = redSw0.perReq(redSw1, n)
	var total int64
	tr.RedisCommands, total = statsDelta(rs0, rs1)
	tr.RedisCommandsPerReq = float64(total) / n
	tr.Expected = expectedShare(sc, tr.Load)
	return tr, nil
}

// expectedShare is the fraction of answers with the scenario's status (any
// 2xx when the scenario names none); -1 when the generator cannot tell.
func expectedShare(sc *Scenario, r loadgen.Result) float64 {
	if r.Requests == 0 {
		return 0
	}
	if r.Status == nil {
		// wrk only counts statuses >= 400.
		if sc.Status >= 400 {
			return float64(r.Non2xx) / float64(r.Requests)
		}
		return float64(r.Requests-r.Non2xx) / float64(r.Requests)
	}
	var ok int
	for code, n := range r.Status {
		if (sc.Status == 0 && code[0] == '2') || code == fmt.Sprint(sc.Status) {
			ok += n
		}
	}
	return float64(ok) / float64(r.Requests)
}

// countRoundTrips sends a short sequential pass with MONITOR attached.
func (e *env) countRoundTrips(ctx context.Context, cfg loadgen.Config, tr *TargetRun) error {
	m, err := startMonitor(e.redis.addr())
	if err != nil {
		return err
	}
	// The idle window: what the proxies send with no traffic (monitor).
	select {
	case <-ctx.Done():
	case <-time.After(monitorIdle):
	}
	m.startPass()
	cfg.Connections = 1
	cfg.Requests = monitorRequests
	cfg.Duration = 30 * time.Second
	res, err := loadgen.Run(ctx, cfg)
	c := m.stop()
	if err != nil {
		return fmt.Errorf("monitor pass: %w", err)
	}
	if res.Requests == 0 {
		return errors.New("monitor pass: no request completed")
	}
	tr.RoundTripsPerReq = float64(sumCounts(c.Top)) / float64(res.Requests)
	tr.RoundTripCommands, tr.ScriptCommands = c.Top, c.Lua
	if len(c.Tx) > 0 {
		tr.TransactionCommands = c.Tx
	}
	if len(c.Background) > 0 {
		tr.BackgroundCommands = c.Background
	}
	tr.MonitorRequests = res.Requests
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func commandVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return ""
	}
	return firstLine(strings.TrimSpace(string(out)))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// measureHost measures the host's costs (host.go), or logs why it could
// not: the load figures stand without them.
func (e *env) measureHost(when string) *HostCost {
	h, err := measureHost(hostSyscalls, hostRTTs)
	if err != nil {
		e.logf("host cost at the %s: %v", when, err)
		return nil
	}
	e.logf("host cost at the %s: %s", when, formatHostCost(&h))
	return &h
}

// Batch sizes of the host measurement: about 0.2 s in all on a host where
// a system call costs a microsecond and a wake-up round trip 40.
const hostSyscalls, hostRTTs = 20000, 500

func machineInfo() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), LoadAvgStart: loadAvg(), StealPct: -1}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command("redis-server", "--version").Output(); err == nil {
		m.Redis = strings.TrimSpace(string(out))
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
