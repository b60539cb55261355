package harness

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// CPU steal. On a virtual machine the host may run other guests on the
// cores this one was given; the time it takes is "steal" in /proc/stat.
// Every process in a run slows down by it, not all alike: a target that
// waits for another process (the proxy for Redis, say) waits longer when
// that process was descheduled. A run with much steal says more about the
// host than about the code, so every figure is reported with it.

// cpuTimes is the machine-wide CPU time in clock ticks: all of it (idle
// included) and the part other guests took.
type cpuTimes struct {
	total, steal uint64
	ok           bool
}

func readCPUTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	return parseCPUTimes(b)
}

// parseCPUTimes reads /proc/stat's first line: "cpu" then user, nice,
// system, idle, iowait, irq, softirq, steal and, on newer kernels, guest
// and guest_nice, which are already counted in user and nice.
func parseCPUTimes(b []byte) cpuTimes {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, s := range f[1:9] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil || t.total+v < t.total {
			return cpuTimes{}
		}
		t.total += v
		if i == 7 {
			t.steal = v
		}
	}
	t.ok = true
	return t
}

// stealPct is the share, in percent, of the machine's CPU time from a to b
// that other guests took; -1 when /proc/stat could not be read or no time
// passed.
func stealPct(a, b cpuTimes) float64 {
	if !a.ok || !b.ok || b.total <= a.total || b.steal < a.steal {
		return -1
	}
	return 100 * float64(b.steal-a.steal) / float64(b.total-a.total)
}

// formatSteal renders a steal share for the report, "–" when unknown.
func formatSteal(p float64) string {
	if p < 0 {
		return "–"
	}
	return strconv.FormatFloat(p, 'f', 0, 64) + "%"
}
