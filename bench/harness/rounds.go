package harness

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tollgate/tollgate/bench/loadgen"
)

// Alternating rounds. On a shared two-core machine the speed of everything
// drifts by a quarter within minutes (other tenants of the host, the CPU's
// clock), so one run of A early and one of B later measures the drift as
// much as A against B. The ratios the throughput targets are judged on are
// measured again as short rounds that run the targets back to back, in
// alternating order, and summarised by their median.

// Round is one round's requests per second by leg and, for the
// passthrough latency target, the p99 in ms of fixed-rate runs of the
// direct upstream and Tollgate passthrough.
type Round struct {
	RPS      map[string]float64 `json:"rps"`
	PacedP99 map[string]float64 `json:"paced_p99_ms,omitempty"`
	// Costs is what each leg cost every process per request.
	Costs map[string]Costs `json:"costs,omitempty"`
	// StealPct is the share of the machine's CPU time other guests took
	// during the round's throughput legs; -1 when unknown.
	StealPct float64 `json:"cpu_steal_pct"`
}

// Spread summarises one ratio over the rounds.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// RoundSummary is the alternating rounds of one harness run.
type RoundSummary struct {
	DurationSec float64           `json:"duration_s"`
	WarmupSec   float64           `json:"warmup_s"`
	Legs        []string          `json:"legs"`
	Rounds      []Round           `json:"rounds"`
	Ratios      map[string]Spread `json:"ratios"`
}

// Legs of a round and the ratios taken from each round.
const (
	legNginx       = "nginx"
	legPassthrough = "tollgate passthrough"
	legMetered     = "tollgate metered"
	legLease       = "tollgate lease"
	legDirect      = "direct"
	// legUnmeteredPost is the metered legs' request (a POST with the same
	// body, answered 201) on a route no meter matches: what metering adds,
	// apart from the request's shape, is the gap between it and them.
	legUnmeteredPost = "tollgate unmetered POST"
	// The same legs on Tollgate as one process, when the configuration
	// runs workers: what the workers buy, measured in the same rounds.
	legSinglePassthrough = "tollgate 1 process passthrough"
	legSingleMetered     = "tollgate 1 process metered"
	legSingleLease       = "tollgate 1 process lease"
)

var unmeteredPost = &Scenario{Name: "unmetered-post", Plan: "bench", Status: 201,
	Sequence: []loadgen.Request{{Method: "POST", Path: "/api/v1/notes", Body: message.Body}}}

// pacedAddedKey is the median over rounds of Tollgate's paced p99 minus the
// direct upstream's, in ms; pacedNginxAddedKey the same for nginx, the
// reference for what a proxy adds on the run's host (not a target).
const (
	pacedAddedKey      = "paced_tollgate_p99_added_ms_vs_direct"
	pacedNginxAddedKey = "paced_nginx_p99_added_ms_vs_direct"
)

var roundRatios = []struct{ key, num, den string }{
	{"tollgate_over_nginx_rps", legPassthrough, legNginx},
	{"metered_over_passthrough_rps", legMetered, legPassthrough},
	{"lease_over_passthrough_rps", legLease, legPassthrough},
	// Not targets: the same ratios against the same request unmetered.
	{"metered_over_unmetered_post_rps", legMetered, legUnmeteredPost},
	{"lease_over_unmetered_post_rps", legLease, legUnmeteredPost},
	// Not targets: Tollgate as one process, and the workers over it.
	{"single_over_nginx_rps", legSinglePassthrough, legNginx},
	{"single_metered_over_single_passthrough_rps", legSingleMetered, legSinglePassthrough},
	{"single_lease_over_single_passthrough_rps", legSingleLease, legSinglePassthrough},
	{"passthrough_workers_over_single_rps", legPassthrough, legSinglePassthrough},
	{"metered_workers_over_single_rps", legMetered, legSingleMetered},
	{"lease_workers_over_single_rps", legLease, legSingleLease},
}

// roundLegs are the legs this run can measure: those whose scenario was
// asked for, and nginx when it runs.
func (e *env) roundLegs() []string {
	var legs []string
	has := func(name string) bool { return slices.Contains(e.opts.Scenarios, name) }
	if !has("passthrough") {
		return nil
	}
	if e.nginx != nil {
		legs = append(legs, legNginx)
	}
	legs = append(legs, legPassthrough)
	if has("metered") || has("lease") {
		legs = append(legs, legUnmeteredPost)
	}
	if has("metered") {
		legs = append(legs, legMetered)
	}
	if has("lease") {
		legs = append(legs, legLease)
	}
	if e.single != nil {
		legs = append(legs, legSinglePassthrough)
		if has("metered") {
			legs = append(legs, legSingleMetered)
		}
		if has("lease") {
			legs = append(legs, legSingleLease)
		}
	}
	if len(legs) < 2 {
		return nil
	}
	return legs
}

// runRounds runs the legs Rounds times, reversing their order every other
// round so that a steady drift favours none of them.
func (e *env) runRounds(ctx context.Context) (*RoundSummary, error) {
	legs := e.roundLegs()
	if legs == nil || e.opts.Rounds < 1 {
		return nil, nil
	}
	// measure takes its times from the options.
	saved := e.opts
	e.opts.Duration, e.opts.Warmup = e.opts.RoundDuration, min(e.opts.Warmup, time.Second)
	defer func() { e.opts = saved }()

	sum := &RoundSummary{DurationSec: e.opts.Duration.Seconds(), WarmupSec: e.opts.Warmup.Seconds(), Legs: legs}
	for i := range e.opts.Rounds {
		order := slices.Clone(legs)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		r := Round{RPS: map[string]float64{}, Costs: map[string]Costs{}}
		steal0 := readCPUTimes()
		for _, leg := range order {
			sc, cfg, pids := e.legLoad(leg)
			tr, err := e.measure(ctx, sc, cfg, pids)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", i+1, leg, err)
			}
			if tr.Expected >= 0 && tr.Expected < 0.99 {
				return nil, fmt.Errorf("round %d, %s: only %.1f%% of answers had the expected status", i+1, leg, tr.Expected*100)
			}
			r.RPS[leg] = tr.Load.RPS
			r.Costs[leg] = tr.Costs
		}
		r.StealPct = stealPct(steal0, readCPUTimes())
		if !saved.NoPaced {
			if err := e.pacedLegs(ctx, &r, i%2 == 1); err != nil {
				return nil, fmt.Errorf("round %d: %w", i+1, err)
			}
		}
		e.logf("round %d/%d: %s", i+1, e.opts.Rounds, formatRound(legs, r))
		sum.Rounds = append(sum.Rounds, r)
	}
	sum.Ratios = roundSpreads(sum.Rounds)
	return sum, nil
}

// pacedLegs runs the direct upstream, nginx when it runs, and Tollgate
// passthrough at the fixed rate, one after the other (reversed when flip),
// and records their p99.
func (e *env) pacedLegs(ctx context.Context, r *Round, flip bool) error {
	sc := scenarioByName("passthrough")
	order := []string{legDirect, legPassthrough}
	if e.nginx != nil {
		order = []string{legDirect, legNginx, legPassthrough}
	}
	if flip {
		slices.Reverse(order)
	}
	r.PacedP99 = map[string]float64{}
	for _, leg := range order {
		target := e.tollgate[0].addr
		switch leg {
		case legDirect:
			target = e.upAddr
		case legNginx:
			target = e.nginxAdr
		}
		cfg := loadgen.Config{Connections: e.opts.Connections, Sequence: sc.Sequence, Keys: e.keys[sc.Plan],
			Targets: []string{target}, Rate: e.opts.Rate, Duration: e.opts.Duration}
		res, err := loadgen.Run(ctx, cfg)
		if err != nil {
			return fmt.Errorf("%s at %.0f req/s: %w", leg, e.opts.Rate, err)
		}
		if res.Errors > 0 || res.Requests == 0 {
			return fmt.Errorf("%s at %.0f req/s: %d requests, %d errors (first: %s)", leg, e.opts.Rate, res.Requests, res.Errors, res.FirstError)
		}
		r.PacedP99[leg] = res.LatencyUS.P99 / 1e3
	}
	return nil
}

// legLoad is the load and the measured processes of one leg.
func (e *env) legLoad(leg string) (*Scenario, loadgen.Config, []int) {
	name, in := "passthrough", e.tollgate[0]
	switch leg {
	case legMetered:
		name = "metered"
	case legLease:
		name = "lease"
	case legSinglePassthrough:
		in = e.single
	case legSingleMetered:
		name, in = "metered", e.single
	case legSingleLease:
		name, in = "lease", e.single
	}
	sc := scenarioByName(name)
	if leg == legUnmeteredPost {
		sc = unmeteredPost
	}
	target, pids := in.addr, in.pids()
	if leg == legNginx {
		target, pids = e.nginxAdr, append([]int{e.nginx.pid()}, childrenOf(e.nginx.pid())...)
	}
	cfg := loadgen.Config{Connections: e.opts.Connections, Sequence: sc.Sequence, Keys: e.keys[sc.Plan], Targets: []string{target}}
	return sc, cfg, pids
}

func roundSpreads(rounds []Round) map[string]Spread {
	out := map[string]Spread{}
	for _, rr := range roundRatios {
		var vals []float64
		for _, r := range rounds {
			num, ok1 := r.RPS[rr.num]
			den, ok2 := r.RPS[rr.den]
			if ok1 && ok2 && den > 0 {
				vals = append(vals, num/den)
			}
		}
		if len(vals) == 0 {
			continue
		}
		out[rr.key] = spreadOf(vals)
	}
	for key, leg := range map[string]string{pacedAddedKey: legPassthrough, pacedNginxAddedKey: legNginx} {
		var added []float64
		for _, r := range rounds {
			proxy, ok1 := r.PacedP99[leg]
			direct, ok2 := r.PacedP99[legDirect]
			if ok1 && ok2 {
				added = append(added, proxy-direct)
			}
		}
		if len(added) > 0 {
			out[key] = spreadOf(added)
		}
	}
	return out
}

func spreadOf(vals []float64) Spread {
	slices.Sort(vals)
	med := vals[len(vals)/2]
	if len(vals)%2 == 0 {
		med = (vals[len(vals)/2-1] + vals[len(vals)/2]) / 2
	}
	return Spread{Median: med, Min: vals[0], Max: vals[len(vals)-1], N: len(vals)}
}

func formatRound(legs []string, r Round) string {
	s := ""
	for i, leg := range legs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %.0f req/s", leg, r.RPS[leg])
	}
	if len(r.PacedP99) > 0 {
		s += "; p99 at the fixed rate: " + formatPacedP99(r)
	}
	return s + "; CPU steal " + formatSteal(r.StealPct)
}

// formatPacedP99 renders a round's fixed-rate p99s: "direct 0.58 ms,
// nginx 1.20 ms, tollgate 1.73 ms" (nginx when it ran).
func formatPacedP99(r Round) string {
	s := fmt.Sprintf("direct %.2f ms", r.PacedP99[legDirect])
	if v, ok := r.PacedP99[legNginx]; ok {
		s += fmt.Sprintf(", nginx %.2f ms", v)
	}
	return s + fmt.Sprintf(", tollgate %.2f ms", r.PacedP99[legPassthrough])
}
