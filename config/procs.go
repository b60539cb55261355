package config

import (
	"strconv"
	"strings"
)

// Procs is the `procs` setting: ProcsAuto, ProcsAll or a count >= 1. A
// count wins over the GOMAXPROCS variable; auto and all leave it in charge.
type Procs int

const (
	// ProcsAuto runs on half the CPUs the process may use, rounded up,
	// unless the GOMAXPROCS variable is set, which then decides.
	//
	// Why half: Tollgate is a sidecar, so the application it fronts (and
	// often its load) runs on the same cores. A proxy that waits on the
	// network most of the time keeps its extra Ps idle, and the Go runtime
	// wakes a spare thread for every goroutine the network readies while
	// a P is idle: a futex wake, a context switch and a spinning search
	// per hand-off. On the 2-core bench host one P instead of two cut the
	// proxy's CPU per request by about a sixth and raised throughput by
	// 15-30 % (bench/README.md, "How many Ps").
	ProcsAuto Procs = 0
	// ProcsAll keeps the Go runtime's own default: every CPU the process
	// may use (its cgroup CPU limit, when lower), followed as it changes,
	// or the GOMAXPROCS variable when set.
	ProcsAll Procs = -1
)

// maxProcs bounds an explicit count; anything larger is a typo.
const maxProcs = 1024

const procsExpect = "auto, all or a whole number from 1 to 1024"

func checkProcs(s string) (string, string) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "auto" || t == "all" {
		return t, ""
	}
	n, err := strconv.Atoi(t)
	if err != nil || n < 1 || n > maxProcs {
		return "", "expected " + procsExpect + ", got " + quote(s)
	}
	return strconv.Itoa(n), ""
}

// procsValue turns a value checkProcs accepted into a Procs.
func procsValue(s string) Procs {
	switch s {
	case "auto":
		return ProcsAuto
	case "all":
		return ProcsAll
	}
	n, _ := strconv.Atoi(s)
	return Procs(n)
}

// For returns the GOMAXPROCS to run with, given the runtime's value at
// start (current: the CPUs the process may use, or the GOMAXPROCS
// variable) and whether that variable was set, and whether the runtime
// must be told: leaving the runtime's default alone keeps it following a
// changing cgroup CPU limit, which any explicit setting turns off.
func (p Procs) For(current int, envSet bool) (n int, set bool) {
	switch {
	case p > 0:
		return int(p), int(p) != current
	case p == ProcsAll, envSet:
		return current, false
	}
	n = (current + 1) / 2
	return n, n != current
}

// String is the setting as written in the file.
func (p Procs) String() string {
	switch {
	case p == ProcsAuto:
		return "auto"
	case p == ProcsAll:
		return "all"
	}
	return strconv.Itoa(int(p))
}
