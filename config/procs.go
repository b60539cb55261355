package config

import (
	"strconv"
	"strings"
)

// Procs is the `procs` setting: how many threads may run Tollgate's Go code
// at once (the runtime's GOMAXPROCS). ProcsAll, the default, leaves the
// runtime's own choice; a count >= 1 sets it, and wins over the GOMAXPROCS
// variable.
//
// Why a setting and not a cleverer default: which count is fastest
// depends on how the kernel shares the cores. On the 2-core bench host one
// P beat two by a median 13 % on passthrough, with about 15 % less CPU per
// request, when each server ran in a scheduling group of its own (as
// containers and services do); with every process in one group, as `make
// bench` runs them, two Ps beat one by about 20 %. bench/README.md, "How
// many Ps".
type Procs int

// ProcsAll keeps the Go runtime's default: every CPU the process may use
// (its cgroup CPU limit, when lower, followed as it changes), or the
// GOMAXPROCS variable when set.
const ProcsAll Procs = 0

// maxProcs bounds an explicit count; anything larger is a typo.
const maxProcs = 1024

const procsExpect = "all or a whole number from 1 to 1024"

func checkProcs(s string) (string, string) {
	return checkWordOrCount(s, "all", maxProcs, procsExpect)
}

// procsValue turns a value checkProcs accepted into a Procs.
func procsValue(s string) Procs {
	n, _ := strconv.Atoi(s) // "all" gives 0, ProcsAll
	return Procs(n)
}

// checkWordOrCount accepts word in any case, or a whole number from 1 to
// maxN, and returns it normalised (word in lower case, the number without
// spaces or sign).
func checkWordOrCount(s, word string, maxN int, expect string) (string, string) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == word {
		return t, ""
	}
	n, err := strconv.Atoi(t)
	if err != nil || n < 1 || n > maxN {
		return "", "expected " + expect + ", got " + quote(s)
	}
	return strconv.Itoa(n), ""
}

// For returns the GOMAXPROCS to run with, given the runtime's value at
// start, and whether the runtime must be told: leaving its default alone
// keeps it following a changing cgroup CPU limit, which any explicit
// setting turns off.
func (p Procs) For(current int) (n int, set bool) {
	if p == ProcsAll {
		return current, false
	}
	return int(p), int(p) != current
}

// String is the setting as written in the file.
func (p Procs) String() string {
	if p == ProcsAll {
		return "all"
	}
	return strconv.Itoa(int(p))
}
