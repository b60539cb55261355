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
	Date        string           `json:"date"`
	Machine     Machine          `json:"machine"`
	Generator   string           `json:"generator"`
	Connections int              `json:"connections"`
	DurationSec float64          `json:"duration_s"`
	WarmupSec   float64          `json:"warmup_s"`
	Scenarios   []ScenarioResult `json:"scenarios"`
	Targets     []TargetCheck    `json:"targets,omitempty"`
	GoBench     []GoBench        `json:"go_bench,omitempty"`
	GoBenchCmd  string           `json:"go_bench_cmd,omitempty"`
	Notes       []string         `json:"notes,omitempty"`
}

// Machine says where the figures come from; the load generator and every
// server share its cores.
type Machine struct {
	NProc        int    `json:"nproc"`
	GOMAXPROCS   int    `json:"gomaxprocs"`
	CPU          string `json:"cpu"`
	GoVersion    string `json:"go"`
	Redis        string `json:"redis,omitempty"`
	RedisPrivate bool   `json:"redis_private"`
	Nginx        string `json:"nginx,omitempty"`
	Wrk          string `json:"wrk,omitempty"`
	// LoadAvg is /proc/loadavg's 1-minute figure at the start and the end:
	// other work on the machine is the main source of noise.
	LoadAvgStart string `json:"loadavg_start,omitempty"`
	LoadAvgEnd   string `json:"loadavg_end,omitempty"`
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
	// CPU of the server under test (all its processes): per request and
	// in cores busy on average.
	CPUUSPerReq         float64 `json:"cpu_us_per_req"`
	CPUUtil             float64 `json:"cpu_cores"`
	UpstreamCPUUSPerReq float64 `json:"upstream_cpu_us_per_req"`
	// CPU of the private Redis (0 on a shared one: not ours to read).
	RedisCPUUSPerReq float64 `json:"redis_cpu_us_per_req"`
	// From INFO commandstats: includes commands run inside Lua scripts.
	RedisCommandsPerReq float64          `json:"redis_commands_per_req"`
	RedisCommands       map[string]int64 `json:"redis_commands,omitempty"`
	// From a separate MONITOR pass: commands clients sent (round trips)
	// and those scripts ran, per request.
	RoundTripsPerReq  float64          `json:"redis_round_trips_per_req,omitempty"`
	RoundTripCommands map[string]int64 `json:"redis_round_trip_commands,omitempty"`
	ScriptCommands    map[string]int64 `json:"redis_script_commands,omitempty"`
	MonitorRequests   int64            `json:"monitor_requests,omitempty"`
	// Paced is the open-loop run at a fixed rate (latency at equal load).
	Paced *loadgen.Result `json:"paced,omitempty"`
}

// TargetCheck is one of the performance targets against this run.
type TargetCheck struct {
	Target string `json:"target"`
	Value  string `json:"value"`
	Met    string `json:"met"` // "yes", "no" or "n/a"
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
	var metered *TargetRun
	if m := r.scenario("metered"); m != nil {
		metered = m.run("tollgate")
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
		if s.Name == "multi" && metered != nil {
			s.Ratios["over_single_instance_metered_rps"] = tg.Load.RPS / metered.Load.RPS
		}
	}

	r.Targets = nil
	check := func(name string, ok bool, have bool, value string) {
		c := TargetCheck{Target: name, Value: value, Met: "n/a"}
		if have {
			c.Met = "no"
			if ok {
				c.Met = "yes"
			}
		}
		r.Targets = append(r.Targets, c)
	}
	if p := r.scenario("passthrough"); p != nil {
		v, have := p.Ratios["tollgate_over_nginx_rps"]
		check("unmetered passthrough >= 1.0x nginx throughput", v >= 1.0, have, fmt.Sprintf("%.2fx", v))
		// Latency is compared at equal load when the paced runs exist:
		// at saturation each target's p99 is mostly its own queue.
		a, have := p.Ratios["paced_tollgate_p99_added_ms_vs_direct"]
		what := "unmetered passthrough p99 added <= 1 ms (vs direct upstream, both at the same fixed rate)"
		if !have {
			a, have = p.Ratios["tollgate_p99_added_ms_vs_direct"]
			what = "unmetered passthrough p99 added <= 1 ms (vs direct upstream, both saturated)"
		}
		check(what, a <= 1.0, have, fmt.Sprintf("%+.3f ms", a))
	}
	if m := r.scenario("metered"); m != nil {
		v, have := m.Ratios["over_tollgate_passthrough_rps"]
		check("metered exact >= 0.8x Tollgate passthrough throughput", v >= 0.8, have, fmt.Sprintf("%.2fx", v))
		if metered != nil {
			rt := metered.RoundTripsPerReq
			check("metered exact: 1 Redis round trip per request", rt > 0 && rt <= 1.05, metered.MonitorRequests > 0,
				fmt.Sprintf("%.2f round trips/req", rt))
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
			if strings.Contains(t.Target, s.Name) || (s.Name == "passthrough" && strings.Contains(t.Target, "unmetered")) {
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
	fmt.Fprintf(&b, "Machine: %d cores (%s), GOMAXPROCS %d, %s", m.NProc, m.CPU, m.GOMAXPROCS, m.GoVersion)
	if m.Redis != "" {
		fmt.Fprintf(&b, ", %s", firstWords(m.Redis, 3))
	}
	if m.Nginx != "" {
		fmt.Fprintf(&b, ", %s", m.Nginx)
	}
	if m.LoadAvgStart != "" {
		fmt.Fprintf(&b, ", load average %s at the start and %s at the end", m.LoadAvgStart, m.LoadAvgEnd)
	}
	fmt.Fprintf(&b, ".\nLoad: %s", r.Generator)
	if m.Wrk != "" {
		fmt.Fprintf(&b, " (%s)", firstWords(m.Wrk, 2))
	}
	fmt.Fprintf(&b, ", %d connections, %g s warmup + %g s measured per run; the load generator, Redis, the upstream and the proxies share the cores.\n\n",
		r.Connections, r.WarmupSec, r.DurationSec)

	b.WriteString("| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | expected status | Redis cmds/req | Redis round trips/req | proxy CPU µs/req | Redis CPU µs/req | vs Tollgate passthrough |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Scenarios {
		for _, t := range s.Runs {
			rt := "–"
			if t.MonitorRequests > 0 {
				rt = fmt.Sprintf("%.2f", t.RoundTripsPerReq)
			}
			vs := "–"
			if v, ok := s.Ratios["over_tollgate_passthrough_rps"]; ok && strings.HasPrefix(t.Target, "tollgate") {
				vs = fmt.Sprintf("%.2fx", v)
			}
			l := t.Load.LatencyUS
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.3f | %.3f | %.3f | %.1f%% | %.2f | %s | %.1f | %.1f | %s |\n",
				s.Name, t.Target, t.Load.RPS, l.P50/1e3, l.P99/1e3, l.P999/1e3, t.Expected*100,
				t.RedisCommandsPerReq, rt, t.CPUUSPerReq, t.RedisCPUUSPerReq, vs)
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
	if len(paced) > 0 {
		fmt.Fprintf(&b, "\nLatency at equal load: open loop at a fixed rate (Go generator, latency counted from each request's scheduled send time):\n\n")
		b.WriteString("| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | max ms | errors + unexpected |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		b.WriteString(strings.Join(paced, "\n") + "\n")
	}
	if p := r.scenario("passthrough"); p != nil && len(p.Ratios) > 0 {
		b.WriteString("\nPassthrough ratios (same run):\n\n")
		for _, k := range sortedKeys(p.Ratios) {
			fmt.Fprintf(&b, "- %s: %.3f\n", k, p.Ratios[k])
		}
	}
	if s := r.scenario("multi"); s != nil {
		if v, ok := s.Ratios["over_single_instance_metered_rps"]; ok {
			fmt.Fprintf(&b, "\nMulti-instance over single-instance metered throughput: %.2fx.\n", v)
		}
	}
	if len(r.Targets) > 0 {
		b.WriteString("\n| target from the issue | this run | met |\n| --- | ---: | --- |\n")
		for _, t := range r.Targets {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", t.Target, t.Value, t.Met)
		}
	}
	if len(r.GoBench) > 0 {
		fmt.Fprintf(&b, "\nAllocations per request (`%s`, in-process client and upstream, real Redis):\n\n", r.GoBenchCmd)
		b.WriteString("| benchmark | ns/op | B/op | allocs/op |\n| --- | ---: | ---: | ---: |\n")
		for _, g := range r.GoBench {
			fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f |\n", g.Name, g.NsPerOp, g.BytesPerOp, g.AllocsPerOp)
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
