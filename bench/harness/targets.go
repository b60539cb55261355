package harness

import (
	"fmt"
	"strings"
)

// Thresholds of the performance targets.
const (
	targetPassOverNginx     = 1.0  // Tollgate passthrough / nginx req/s
	targetP99AddedMS        = 1.0  // passthrough p99 over the direct upstream
	targetMeteredOverPass   = 0.8  // metered exact / Tollgate passthrough req/s
	targetLeaseOverPass     = 0.95 // lease / Tollgate passthrough req/s
	targetLeaseCmdsPerReq   = 0.02 // Redis commands per lease-mode request
	targetRoundTripsMetered = 1.05 // "1 round trip": a little slack for a background call during the MONITOR pass
)

// allocTargets are the zero-allocation targets: the benchmarks
// (names without the -GOMAXPROCS suffix) that must report 0 allocs/op.
var allocTargets = []struct {
	what    string
	benches []string
}{
	{"route match: 0 allocs/op (config BenchmarkRouterMatch)", []string{"BenchmarkRouterMatch"}},
	{"tenant lookup: 0 allocs/op (tenant BenchmarkResolveAPIKey, BenchmarkResolveHeader)", []string{"BenchmarkResolveAPIKey", "BenchmarkResolveHeader"}},
	{"header writing: 0 allocs/op (quota BenchmarkWriteHeaders)", []string{"BenchmarkWriteHeaders"}},
}

// checkTargets lists every target of the issue, measured or not: a target
// whose scenario or benchmark did not run in this run says so ("n/a")
// rather than disappearing from the table.
func (r *Report) checkTargets(goBenchRan bool) {
	r.Targets = nil
	add := func(scenario, target string, have, ok bool, value string) {
		c := TargetCheck{Target: target, Scenario: scenario, Value: "not measured", Met: "n/a"}
		if have {
			c.Value, c.Met = value, "no"
			if ok {
				c.Met = "yes"
			}
		}
		r.Targets = append(r.Targets, c)
	}
	ratio := func(scenario, key string) (float64, bool) {
		s := r.scenario(scenario)
		if s == nil {
			return 0, false
		}
		v, ok := s.Ratios[key]
		return v, ok
	}
	tollgate := func(scenario string) *TargetRun {
		if s := r.scenario(scenario); s != nil {
			return s.run("tollgate")
		}
		return nil
	}

	// A throughput ratio is judged on the alternating rounds' median when
	// they ran (rounds.go); the scenario's single run is shown beside it.
	throughput := func(scenario, key, roundKey string) (float64, bool, string) {
		v, have := ratio(scenario, key)
		if r.Rounds != nil {
			if sp, ok := r.Rounds.Ratios[roundKey]; ok {
				s := fmt.Sprintf("%.2fx (median of %d alternating rounds, %.2f-%.2f", sp.Median, sp.N, sp.Min, sp.Max)
				if have {
					s += fmt.Sprintf("; scenario run %.2fx", v)
				}
				return sp.Median, true, s + ")"
			}
		}
		return v, have, fmt.Sprintf("%.2fx", v)
	}
	v, have, shown := throughput("passthrough", "tollgate_over_nginx_rps", "tollgate_over_nginx_rps")
	add("passthrough", "unmetered passthrough >= 1.0x nginx throughput", have, v >= targetPassOverNginx, shown)
	// Latency is compared at equal load when the paced runs exist: at
	// saturation each target's p99 is mostly its own queue.
	what := "unmetered passthrough p99 added <= 1 ms (vs direct upstream, both at the same fixed rate)"
	a, have := ratio("passthrough", "paced_tollgate_p99_added_ms_vs_direct")
	if !have {
		if a, have = ratio("passthrough", "tollgate_p99_added_ms_vs_direct"); have {
			what = "unmetered passthrough p99 added <= 1 ms (vs direct upstream, both saturated)"
		}
	}
	shown = fmt.Sprintf("%+.3f ms", a)
	if r.Rounds != nil {
		if sp, ok := r.Rounds.Ratios[pacedAddedKey]; ok {
			what = "unmetered passthrough p99 added <= 1 ms (vs direct upstream, both at the same fixed rate)"
			shown = fmt.Sprintf("%+.3f ms (median of %d alternating rounds, %+.2f to %+.2f", sp.Median, sp.N, sp.Min, sp.Max)
			if have {
				shown += fmt.Sprintf("; scenario run %+.3f ms", a)
			}
			if ng, ok := r.Rounds.Ratios[pacedNginxAddedKey]; ok {
				shown += fmt.Sprintf("; nginx in the same rounds %+.3f ms", ng.Median)
			}
			a, have, shown = sp.Median, true, shown+")"
		}
	}
	add("passthrough", what, have, a <= targetP99AddedMS, shown)

	v, have, shown = throughput("metered", "over_tollgate_passthrough_rps", "metered_over_passthrough_rps")
	add("metered", "metered exact >= 0.8x Tollgate passthrough throughput", have, v >= targetMeteredOverPass, shown)
	m := tollgate("metered")
	rt := 0.0
	shownRT := ""
	if m != nil {
		rt = m.RoundTripsPerReq
		shownRT = fmt.Sprintf("%.2f round trips/req", rt)
		var left []string
		if n := sumCounts(m.TransactionCommands); n > 0 {
			left = append(left, fmt.Sprintf("%d commands of background MULTI…EXEC transactions", n))
		}
		if n := sumCounts(m.BackgroundCommands); n > 0 {
			left = append(left, fmt.Sprintf("%d background commands at the rate seen with no traffic", n))
		}
		if len(left) > 0 {
			shownRT += " (" + strings.Join(left, " and ") + " during the pass left out)"
		}
	}
	add("metered", "metered exact: 1 Redis round trip per request", m != nil && m.MonitorRequests > 0,
		rt > 0 && rt <= targetRoundTripsMetered, shownRT)

	v, have, shown = throughput("lease", "over_tollgate_passthrough_rps", "lease_over_passthrough_rps")
	add("lease", "lease mode >= 0.95x Tollgate passthrough throughput", have, v >= targetLeaseOverPass, shown)
	// INFO commandstats counts what the lease script runs inside Redis
	// too: the stricter of the two counts is the one checked.
	l := tollgate("lease")
	value := ""
	if l != nil {
		value = fmt.Sprintf("%.4f cmds/req (%.4f round trips/req)", l.RedisCommandsPerReq, l.RoundTripsPerReq)
	}
	add("lease", "lease mode: <= 0.02 Redis commands per request below 50% of the limit", l != nil,
		l != nil && l.RedisCommandsPerReq <= targetLeaseCmdsPerReq, value)

	for _, t := range allocTargets {
		var vals []string
		ok, have := true, goBenchRan
		for _, name := range t.benches {
			g := r.goBench(name)
			if g == nil {
				have = false
				break
			}
			vals = append(vals, fmt.Sprintf("%.0f", g.AllocsPerOp))
			ok = ok && g.AllocsPerOp == 0
		}
		add("go-bench", t.what, have, ok, strings.Join(vals, " / ")+" allocs/op")
	}
}

func (r *Report) goBench(base string) *GoBench {
	for i := range r.GoBench {
		if benchBase(r.GoBench[i].Name) == base {
			return &r.GoBench[i]
		}
	}
	return nil
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
