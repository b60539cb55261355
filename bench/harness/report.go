package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tollgate/tollgate/bench/loadgen"
)

// Report is one harness run.
type Report struct {
	Date        string  `json:"date"`
	Machine     Machine `json:"machine"`
	Generator   string  `json:"generator"`
	Connections int     `json:"connections"`
	// OwnSessions: every server ran in a scheduling group of its own
	// (BENCH_OWN_SESSIONS=1) instead of all in the harness's.
	OwnSessions bool             `json:"own_sessions,omitempty"`
	DurationSec float64          `json:"duration_s"`
	WarmupSec   float64          `json:"warmup_s"`
	PacedRate   float64          `json:"paced_rate,omitempty"`
	Scenarios   []ScenarioResult `json:"scenarios"`
	Rounds      *RoundSummary    `json:"rounds,omitempty"`
	Targets     []TargetCheck    `json:"targets,omitempty"`
	GoBench     []GoBench        `json:"go_bench,omitempty"`
	GoBenchCmds []string         `json:"go_bench_cmds,omitempty"`
	Notes       []string         `json:"notes,omitempty"`
}

// Machine says where the figures come from; the load generator and every
// server share its cores.
type Machine struct {
	NProc      int `json:"nproc"`
	GOMAXPROCS int `json:"gomaxprocs"`
	// TollgateProcs is the GOMAXPROCS Tollgate reported running with (its
	// procs setting, see docs/config.md); 0 when its log did not say.
	TollgateProcs int `json:"tollgate_procs,omitempty"`
	// TollgateWorkers is how many processes Tollgate served with (its
	// workers setting), each with TollgateProcs Ps; 0 when its log did
	// not say.
	TollgateWorkers int    `json:"tollgate_workers,omitempty"`
	CPU             string `json:"cpu"`
	GoVersion       string `json:"go"`
	Redis           string `json:"redis,omitempty"`
	RedisPrivate    bool   `json:"redis_private"`
	Nginx           string `json:"nginx,omitempty"`
	Wrk             string `json:"wrk,omitempty"`
	// LoadAvg is /proc/loadavg's 1-minute figure at the start and the end:
	// other work on the machine is the main source of noise.
	LoadAvgStart string `json:"loadavg_start,omitempty"`
	LoadAvgEnd   string `json:"loadavg_end,omitempty"`
	// StealPct is the share of the machine's CPU time that the host gave
	// to other guests from the first scenario to the end of the rounds
	// (steal.go); -1 when unknown.
	StealPct float64 `json:"cpu_steal_pct"`
	// HostStart and HostEnd are the host's price of a system call and of
	// a wake-up (host.go), measured before the servers start and after
	// the rounds; nil when the measurement failed.
	HostStart *HostCost `json:"host_cost_start,omitempty"`
	HostEnd   *HostCost `json:"host_cost_end,omitempty"`
}

// ScenarioResult is one scenario's runs, one per target.
type ScenarioResult struct {
	Name        string             `json:"name"`
	Description string             `json:"description"`
	Runs        []TargetRun        `json:"runs"`
	Ratios      map[string]float64 `json:"ratios,omitempty"`
}

// TargetRun is one timed load against one target.
type TargetRun struct {
	Target string         `json:"target"`
	Load   loadgen.Result `json:"load"`
	// Expected is the share of answers with the scenario's status.
	Expected float64 `json:"expected_status_share"`
	// What the load cost each process per request.
	Costs
	// CPUUtil is the server under test's CPU in cores busy on average.
	CPUUtil float64 `json:"cpu_cores"`
	// From INFO commandstats: includes commands run inside Lua scripts.
	RedisCommandsPerReq float64          `json:"redis_commands_per_req"`
	RedisCommands       map[string]int64 `json:"redis_commands,omitempty"`
	// From a separate MONITOR pass: commands clients sent (round trips)
	// and those scripts ran, per request.
	RoundTripsPerReq  float64          `json:"redis_round_trips_per_req,omitempty"`
	RoundTripCommands map[string]int64 `json:"redis_round_trip_commands,omitempty"`
	ScriptCommands    map[string]int64 `json:"redis_script_commands,omitempty"`
	// TransactionCommands are the MULTI…EXEC transactions seen during the
	// pass, left out of the round trips: the request path sends none.
	TransactionCommands map[string]int64 `json:"redis_transaction_commands,omitempty"`
	// BackgroundCommands are the commands of the pass that the rate seen
	// with no traffic explains (monitor in redis.go), left out of
	// RoundTripsPerReq.
	BackgroundCommands map[string]int64 `json:"redis_background_commands,omitempty"`
	MonitorRequests    int64            `json:"monitor_requests,omitempty"`
	// Paced is the open-loop run at a fixed rate (latency at equal load).
	Paced *loadgen.Result `json:"paced,omitempty"`
	// StealPct is the share of the machine's CPU time other guests took
	// during the timed part; -1 when unknown.
	StealPct float64 `json:"cpu_steal_pct"`
}

// Costs is what a timed load cost each process per request: the server
// under test (all its processes), the upstream and the private Redis.
type Costs struct {
	// CPU time in µs.
	CPUUSPerReq         float64 `json:"cpu_us_per_req"`
	UpstreamCPUUSPerReq float64 `json:"upstream_cpu_us_per_req"`
	// 0 on a shared Redis: not ours to read.
	RedisCPUUSPerReq float64 `json:"redis_cpu_us_per_req"`
	// Context switches; nil when not read (Redis: a shared one).
	Switches         *Switches `json:"switches,omitempty"`
	UpstreamSwitches *Switches `json:"upstream_switches,omitempty"`
	RedisSwitches    *Switches `json:"redis_switches,omitempty"`
}

// TargetCheck is one of the performance targets against this run.
type TargetCheck struct {
	Target string `json:"target"`
	// Scenario is the scenario the figure comes from; "go-bench" for the
	// allocation targets.
	Scenario string `json:"scenario"`
	Value    string `json:"value"`
	Met      string `json:"met"` // "yes", "no" or "n/a" (not measured in this run)
}

func (s *ScenarioResult) run(target string) *TargetRun {
	for i := range s.Runs {
		if s.Runs[i].Target == target || strings.HasPrefix(s.Runs[i].Target, target+" ") {
			return &s.Runs[i]
		}
	}
	return nil
}

func (r *Report) scenario(name string) *ScenarioResult {
	for i := range r.Scenarios {
		if r.Scenarios[i].Name == name {
			return &r.Scenarios[i]
		}
	}
	return nil
}

// computeRatios compares runs of the same harness run only: load from
// colleagues' work on the same machine moves absolute figures, not much the
// ratios of back-to-back runs.
func (r *Report) computeRatios() {
	var passTG *TargetRun
	if p := r.scenario("passthrough"); p != nil {
		passTG = p.run("tollgate")
		direct, ngx := p.run("direct"), p.run("nginx")
		p.Ratios = map[string]float64{}
		if passTG != nil && direct != nil {
			p.Ratios["tollgate_over_direct_rps"] = passTG.Load.RPS / direct.Load.RPS
			p.Ratios["tollgate_p99_added_ms_vs_direct"] = (passTG.Load.LatencyUS.P99 - direct.Load.LatencyUS.P99) / 1e3
		}
		if passTG != nil && ngx != nil {
			p.Ratios["tollgate_over_nginx_rps"] = passTG.Load.RPS / ngx.Load.RPS
			p.Ratios["tollgate_p99_added_ms_vs_nginx"] = (passTG.Load.LatencyUS.P99 - ngx.Load.LatencyUS.P99) / 1e3
		}
		if ngx != nil && direct != nil {
			p.Ratios["nginx_over_direct_rps"] = ngx.Load.RPS / direct.Load.RPS
		}
		if passTG != nil && passTG.Paced != nil && direct != nil && direct.Paced != nil {
			p.Ratios["paced_tollgate_p99_added_ms_vs_direct"] = (passTG.Paced.LatencyUS.P99 - direct.Paced.LatencyUS.P99) / 1e3
		}
		if passTG != nil && passTG.Paced != nil && ngx != nil && ngx.Paced != nil {
			p.Ratios["paced_tollgate_p99_added_ms_vs_nginx"] = (passTG.Paced.LatencyUS.P99 - ngx.Paced.LatencyUS.P99) / 1e3
		}
	}
	for i := range r.Scenarios {
		s := &r.Scenarios[i]
		if s.Name == "passthrough" {
			continue
		}
		tg := s.run("tollgate")
		if tg == nil {
			continue
		}
		if s.Ratios == nil {
			s.Ratios = map[string]float64{}
		}
		if passTG != nil {
			s.Ratios["over_tollgate_passthrough_rps"] = tg.Load.RPS / passTG.Load.RPS
		}
		if tg.Paced != nil && passTG != nil && passTG.Paced != nil {
			s.Ratios["paced_p99_added_ms_vs_tollgate_passthrough"] = (tg.Paced.LatencyUS.P99 - passTG.Paced.LatencyUS.P99) / 1e3
		}
		if sc := scenarioByName(s.Name); sc != nil && sc.Single != "" {
			if one := r.scenario(sc.Single); one != nil && one.run("tollgate") != nil {
				s.Ratios["over_single_instance_rps"] = tg.Load.RPS / one.run("tollgate").Load.RPS
			}
		}
		if s.Name == "lease" {
			if m := r.scenario("metered"); m != nil && m.run("tollgate") != nil {
				s.Ratios["over_metered_exact_rps"] = tg.Load.RPS / m.run("tollgate").Load.RPS
			}
		}
	}
}

func (r *Report) write(dir string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	date := now.Format("2006-01-02")
	for _, s := range r.Scenarios {
		one := *r
		one.Scenarios = []ScenarioResult{s}
		one.Targets = nil
		for _, t := range r.Targets {
			// The allocation targets go with the Go benchmarks every file carries.
			if t.Scenario == s.Name || t.Scenario == "go-bench" {
				one.Targets = append(one.Targets, t)
			}
		}
		b, err := json.MarshalIndent(one, "", "  ")
		if err != nil {
			return fmt.Errorf("encode %s: %w", s.Name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, date+"-"+s.Name+".json"), append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", s.Name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(r.Markdown()), 0o644); err != nil {
		return fmt.Errorf("write latest.md: %w", err)
	}
	return nil
}

// Markdown renders the run as the table committed in bench/results/latest.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# Tollgate benchmark, %s\n\n", r.Date)
	fmt.Fprintf(&b, "Machine: %d cores (%s), GOMAXPROCS %d", m.NProc, m.CPU, m.GOMAXPROCS)
	switch {
	case m.TollgateWorkers > 1:
		fmt.Fprintf(&b, " (Tollgate's: %d workers × %d)", m.TollgateWorkers, m.TollgateProcs)
	case m.TollgateProcs > 0:
		fmt.Fprintf(&b, " (Tollgate's: %d)", m.TollgateProcs)
	}
	fmt.Fprintf(&b, ", %s", m.GoVersion)
	if m.Redis != "" {
		fmt.Fprintf(&b, ", %s", firstWords(m.Redis, 3))
	}
	if m.Nginx != "" {
		fmt.Fprintf(&b, ", %s", m.Nginx)
	}
	if m.LoadAvgStart != "" {
		fmt.Fprintf(&b, ", load average %s at the start and %s at the end", m.LoadAvgStart, m.LoadAvgEnd)
	}
	if m.StealPct >= 0 {
		fmt.Fprintf(&b, ", CPU steal %s of the machine's time during the scenarios and rounds (time the host gave other guests)", formatSteal(m.StealPct))
	}
	if m.HostStart != nil {
		fmt.Fprintf(&b, "; on this host %s at the start", formatHostCost(m.HostStart))
		if m.HostEnd != nil {
			fmt.Fprintf(&b, ", %s at the end", formatHostCost(m.HostEnd))
		}
	}
	fmt.Fprintf(&b, ".\nLoad: %s", r.Generator)
	if m.Wrk != "" {
		fmt.Fprintf(&b, " (%s)", firstWords(m.Wrk, 2))
	}
	fmt.Fprintf(&b, ", %d connections, %g s warmup + %g s measured per run; the load generator, Redis, the upstream and the proxies share the cores",
		r.Connections, r.WarmupSec, r.DurationSec)
	if r.OwnSessions {
		b.WriteString(", each server in a session (scheduling group) of its own")
	} else {
		b.WriteString(", all in one session (scheduling group)")
	}
	b.WriteString(".\n\n")

	b.WriteString("| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | expected status | Redis cmds/req | Redis round trips/req | proxy CPU µs/req | Redis CPU µs/req | vs Tollgate passthrough | CPU steal |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Scenarios {
		for _, t := range s.Runs {
			rt := "–"
			if t.MonitorRequests > 0 {
				rt = perReq(t.RoundTripsPerReq)
			}
			vs := "–"
			if v, ok := s.Ratios["over_tollgate_passthrough_rps"]; ok && strings.HasPrefix(t.Target, "tollgate") {
				vs = fmt.Sprintf("%.2fx", v)
			}
			l := t.Load.LatencyUS
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.3f | %.3f | %.3f | %.1f%% | %s | %s | %.1f | %.1f | %s | %s |\n",
				s.Name, t.Target, t.Load.RPS, l.P50/1e3, l.P99/1e3, l.P999/1e3, t.Expected*100,
				perReq(t.RedisCommandsPerReq), rt, t.CPUUSPerReq, t.RedisCPUUSPerReq, vs, formatSteal(t.StealPct))
		}
	}
	var paced []string
	for _, s := range r.Scenarios {
		for _, t := range s.Runs {
			if t.Paced == nil {
				continue
			}
			l := t.Paced.LatencyUS
			paced = append(paced, fmt.Sprintf("| %s | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.1f%% |",
				s.Name, t.Target, t.Paced.RPS, l.P50/1e3, l.P99/1e3, l.P999/1e3, l.Max/1e3,
				100*float64(t.Paced.Errors+t.Paced.Non2xx)/float64(max(1, t.Paced.Requests+t.Paced.Errors))))
		}
	}
	if perProc := processTable(r); perProc != "" {
		b.WriteString("\nWhat each process paid per request in the same runs: CPU, and how often its threads slept (voluntary context switches: each one a wake-up to pay) or were preempted (involuntary ones):\n\n")
		b.WriteString(perProc)
	}
	if len(paced) > 0 {
		fmt.Fprintf(&b, "\nLatency at equal load: open loop at a fixed rate (Go generator, latency counted from each request's scheduled send time, or from its send when the generator's timer woke late):\n\n")
		b.WriteString("| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors + unexpected |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		b.WriteString(strings.Join(paced, "\n") + "\n")
	}
	if p := r.scenario("passthrough"); p != nil && len(p.Ratios) > 0 {
		b.WriteString("\nPassthrough ratios (same run):\n\n")
		for _, k := range sortedKeys(p.Ratios) {
			fmt.Fprintf(&b, "- %s: %.3f\n", k, p.Ratios[k])
		}
	}
	var others []string
	for _, s := range r.Scenarios {
		if v, ok := s.Ratios["over_metered_exact_rps"]; ok {
			others = append(others, fmt.Sprintf("- %s over metered (exact mode) throughput: %.2fx", s.Name, v))
		}
		if v, ok := s.Ratios["over_single_instance_rps"]; ok {
			others = append(others, fmt.Sprintf("- %s over %s (one instance) throughput: %.2fx", s.Name, scenarioByName(s.Name).Single, v))
		}
	}
	if len(others) > 0 {
		b.WriteString("\nOther ratios (same run):\n\n" + strings.Join(others, "\n") + "\n")
	}
	if rs := r.Rounds; rs != nil && len(rs.Rounds) > 0 {
		fmt.Fprintf(&b, "\nAlternating rounds (req/s; %g s warmup + %g s each, the order reversed every other round; the targets below use their medians):\n\n",
			rs.WarmupSec, rs.DurationSec)
		b.WriteString("| round | " + strings.Join(rs.Legs, " | ") + " | CPU steal |\n|" + strings.Repeat(" ---: |", len(rs.Legs)+2) + "\n")
		for i, round := range rs.Rounds {
			fmt.Fprintf(&b, "| %d |", i+1)
			for _, leg := range rs.Legs {
				fmt.Fprintf(&b, " %.0f |", round.RPS[leg])
			}
			fmt.Fprintf(&b, " %s |\n", formatSteal(round.StealPct))
		}
		if costs := roundCostTable(rs); costs != "" {
			b.WriteString("\nWhat each leg cost every process per request, median of the rounds (each figure's own median):\n\n" + costs)
		}
		b.WriteString("\n")
		for _, rr := range roundRatios {
			if sp, ok := rs.Ratios[rr.key]; ok {
				fmt.Fprintf(&b, "- %s over %s: median %.2fx (%.2f-%.2f, %d rounds)\n", rr.num, rr.den, sp.Median, sp.Min, sp.Max, sp.N)
			}
		}
		if sp, ok := rs.Ratios[pacedAddedKey]; ok {
			fmt.Fprintf(&b, "- p99 at %g req/s, Tollgate passthrough minus the direct upstream (each round runs both): median %+.3f ms (%+.2f to %+.2f, %d rounds)\n",
				r.PacedRate, sp.Median, sp.Min, sp.Max, sp.N)
			if sp, ok := rs.Ratios[pacedNginxAddedKey]; ok {
				fmt.Fprintf(&b, "- p99 at %g req/s, nginx minus the direct upstream (the same rounds; what a proxy adds on this host): median %+.3f ms (%+.2f to %+.2f, %d rounds)\n",
					r.PacedRate, sp.Median, sp.Min, sp.Max, sp.N)
			}
			for i, round := range rs.Rounds {
				fmt.Fprintf(&b, "  - round %d: %s\n", i+1, formatPacedP99(round))
			}
		}
	}
	if len(r.Targets) > 0 {
		b.WriteString("\n| target from the issue | this run | met |\n| --- | ---: | --- |\n")
		for _, t := range r.Targets {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", t.Target, t.Value, t.Met)
		}
	}
	if len(r.GoBench) > 0 {
		b.WriteString("\nGo benchmarks (fixed iteration counts, against the run's Redis; `BenchmarkHandler` sends whole requests through the handler with an in-process client and upstream):\n\n")
		b.WriteString("| package | benchmark | iterations | ns/op | B/op | allocs/op | other metrics |\n| --- | --- | ---: | ---: | ---: | ---: | --- |\n")
		for _, g := range r.GoBench {
			ns := fmt.Sprintf("%.0f", g.NsPerOp)
			if g.NsPerOp < 1000 {
				ns = fmt.Sprintf("%.1f", g.NsPerOp)
			}
			var other []string
			for _, k := range sortedKeys(g.Metrics) {
				other = append(other, fmt.Sprintf("%.4g %s", g.Metrics[k], k))
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %.0f | %.0f | %s |\n", strings.TrimPrefix(g.Package, "github.com/tollgate/tollgate/"),
				g.Name, g.N, ns, g.BytesPerOp, g.AllocsPerOp, strings.Join(other, ", "))
		}
		b.WriteString("\nCommands:\n\n")
		for _, c := range r.GoBenchCmds {
			fmt.Fprintf(&b, "- `%s`\n", c)
		}
	}
	b.WriteString("\nScenarios:\n\n")
	for _, s := range r.Scenarios {
		fmt.Fprintf(&b, "- **%s**: %s.\n", s.Name, s.Description)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// perReq shows a per-request count; lease mode's are a few thousandths,
// which two decimals would show as 0.
func perReq(v float64) string {
	if v > 0 && v < 0.1 {
		return fmt.Sprintf("%.4f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}
