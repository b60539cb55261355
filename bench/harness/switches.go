package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Switches is how often a process's threads stopped running, per request.
// On a host where waking a thread that slept is dear (the wake-up round
// trip of host.go), these are what a run's CPU figures are made of: a
// process that sleeps more per request pays more wake-ups for the same
// work, and the processes it feeds sleep more too when it feeds them more
// slowly.
type Switches struct {
	// Sleeps are voluntary context switches: a thread waited (for I/O, a
	// lock, a timer) and must be woken.
	Sleeps float64 `json:"sleeps_per_req"`
	// Preempted are involuntary ones: the scheduler gave the core to
	// another thread, mostly one this process's writes woke.
	Preempted float64 `json:"preempted_per_req"`
}

// switchCount is the context switches of some processes' threads so far.
type switchCount struct {
	voluntary, involuntary int64
}

// perReq turns the switches between two counts into per-request figures;
// nil when either count is missing.
func (c switchCount) perReq(end switchCount, requests float64) *Switches {
	if requests <= 0 || c.voluntary < 0 || end.voluntary < 0 {
		return nil
	}
	return &Switches{
		Sleeps:    float64(end.voluntary-c.voluntary) / requests,
		Preempted: float64(end.involuntary-c.involuntary) / requests,
	}
}

// contextSwitches sums the context switches of every thread of the given
// processes (/proc/<pid>/task/*/status): a process's own status counts its
// main thread only, and a Go server's work runs on other threads. A thread
// that exits between two counts takes its switches with it, so a figure
// can only come out low; Go servers keep their threads. The count is
// {-1, -1} when a process cannot be read.
func contextSwitches(pids ...int) switchCount {
	var c switchCount
	for _, pid := range pids {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		if err != nil || len(tasks) == 0 {
			return switchCount{-1, -1}
		}
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				// The thread exited after the glob.
				continue
			}
			v, n, ok := parseSwitches(b)
			if !ok {
				return switchCount{-1, -1}
			}
			c.voluntary += v
			c.involuntary += n
		}
	}
	return c
}

// parseSwitches reads voluntary_ctxt_switches and
// nonvoluntary_ctxt_switches from a /proc status file; ok is false unless
// both are there, once each, as non-negative integers.
func parseSwitches(status []byte) (voluntary, involuntary int64, ok bool) {
	var seenV, seenN bool
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, value, found := bytes.Cut(sc.Bytes(), []byte(":"))
		if !found {
			continue
		}
		var dst *int64
		var seen *bool
		switch string(name) {
		case "voluntary_ctxt_switches":
			dst, seen = &voluntary, &seenV
		case "nonvoluntary_ctxt_switches":
			dst, seen = &involuntary, &seenN
		default:
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64)
		if err != nil || n < 0 || *seen {
			return 0, 0, false
		}
		*dst, *seen = n, true
	}
	if sc.Err() != nil || !seenV || !seenN {
		return 0, 0, false
	}
	return voluntary, involuntary, true
}

// formatSwitches is "sleeps / preempted" per request, or "–".
func formatSwitches(s *Switches) string {
	if s == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f / %.2f", s.Sleeps, s.Preempted)
}

// processTable is the Markdown table of each scenario run's CPU and
// context switches per request, by process; "" when no run counted
// switches.
func processTable(r *Report) string {
	var b strings.Builder
	for _, s := range r.Scenarios {
		for _, t := range s.Runs {
			if t.Switches == nil && t.UpstreamSwitches == nil {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", s.Name, t.Target, costCells(t.Costs))
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "| scenario | target | target CPU µs/req | upstream CPU µs/req | Redis CPU µs/req | target sleeps / preempted per req | upstream sleeps / preempted per req | Redis sleeps / preempted per req |\n" +
		"| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + b.String()
}

// medianCost is each figure's median over the rounds that measured leg,
// taken figure by figure (so the medians need not come from one round),
// and how many rounds that was; a switch figure is nil when no round
// counted it.
func medianCost(rounds []Round, leg string) (Costs, int) {
	var cpu, upCPU, redCPU []float64
	var sw, upSw, redSw []*Switches
	for _, r := range rounds {
		c, ok := r.Costs[leg]
		if !ok {
			continue
		}
		cpu, upCPU, redCPU = append(cpu, c.CPUUSPerReq), append(upCPU, c.UpstreamCPUUSPerReq), append(redCPU, c.RedisCPUUSPerReq)
		sw, upSw, redSw = append(sw, c.Switches), append(upSw, c.UpstreamSwitches), append(redSw, c.RedisSwitches)
	}
	if len(cpu) == 0 {
		return Costs{}, 0
	}
	return Costs{
		CPUUSPerReq: spreadOf(cpu).Median, UpstreamCPUUSPerReq: spreadOf(upCPU).Median, RedisCPUUSPerReq: spreadOf(redCPU).Median,
		Switches: medianSwitches(sw), UpstreamSwitches: medianSwitches(upSw), RedisSwitches: medianSwitches(redSw),
	}, len(cpu)
}

func medianSwitches(all []*Switches) *Switches {
	var sleeps, preempted []float64
	for _, s := range all {
		if s != nil {
			sleeps, preempted = append(sleeps, s.Sleeps), append(preempted, s.Preempted)
		}
	}
	if len(sleeps) == 0 {
		return nil
	}
	return &Switches{Sleeps: spreadOf(sleeps).Median, Preempted: spreadOf(preempted).Median}
}

// roundCostTable is the Markdown table of each leg's median costs over
// the rounds; "" when no round recorded any.
func roundCostTable(rs *RoundSummary) string {
	var b strings.Builder
	for _, leg := range rs.Legs {
		c, n := medianCost(rs.Rounds, leg)
		if n == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %s |\n", leg, n, costCells(c))
	}
	if b.Len() == 0 {
		return ""
	}
	return "| leg | rounds | target CPU µs/req | upstream CPU µs/req | Redis CPU µs/req | target sleeps / preempted per req | upstream sleeps / preempted per req | Redis sleeps / preempted per req |\n" +
		"| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + b.String()
}

// costCells is a cost table's figures: CPU of the target, the upstream and
// Redis, then each one's switches. Redis's CPU is "–" where its switches
// were not read either (a shared Redis).
func costCells(c Costs) string {
	redisCPU := "–"
	if c.RedisSwitches != nil {
		redisCPU = fmt.Sprintf("%.1f", c.RedisCPUUSPerReq)
	}
	return fmt.Sprintf("%.1f | %.1f | %s | %s | %s | %s", c.CPUUSPerReq, c.UpstreamCPUUSPerReq, redisCPU,
		formatSwitches(c.Switches), formatSwitches(c.UpstreamSwitches), formatSwitches(c.RedisSwitches))
}
