package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// GoBench is one line of `go test -bench -benchmem` output.
type GoBench struct {
	Package     string  `json:"package"`
	Name        string  `json:"name"`
	N           int64   `json:"n"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
	// Metrics are the benchmark's own b.ReportMetric units (redis-calls/op,
	// cpu-us/op, ...).
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// goBenchStep is one `go test -bench` invocation. Redis-bound benchmarks run
// Options.GoBenchIter iterations; the in-memory ones (tens of ns each) run
// microFactor times as many so their figures are not start-up noise, still a
// fixed count and so bounded.
type goBenchStep struct {
	pkg   string
	regex string
	micro bool
}

const microFactor = 100

// goBenchSteps are the benchmarks of the allocation targets (route
// match, tenant lookup, header writing) plus whole requests through the
// handler (exact and lease mode) and the quota Reserve paths, reported
// without a target.
var goBenchSteps = []goBenchStep{
	{pkg: "./proxy/", regex: "^(BenchmarkHandler|BenchmarkHandlerLease)$"},
	{pkg: "./config/", regex: "^BenchmarkRouterMatch$", micro: true},
	{pkg: "./tenant/", regex: "^(BenchmarkResolveAPIKey|BenchmarkResolveHeader)$", micro: true},
	{pkg: "./quota/", regex: "^BenchmarkWriteHeaders$", micro: true},
	{pkg: "./quota/", regex: "^(BenchmarkReserve|BenchmarkReserveLease|BenchmarkReserveParallel|BenchmarkReserveScript)$"},
}

// runGoBench runs every step against the run's Redis: allocations per
// request come from there rather than from a new endpoint in the server. A
// failing step (a package mid-edit) does not stop the others; the error
// names every failure.
func runGoBench(ctx context.Context, root, redisURL string, iterations int) ([]GoBench, []string, error) {
	var (
		all   []GoBench
		shown []string
		fails []string
	)
	for _, st := range goBenchSteps {
		n := iterations
		if st.micro {
			n *= microFactor
		}
		cmdline := []string{"test", "-run", "^$", "-bench", st.regex, "-benchmem",
			"-benchtime", strconv.Itoa(n) + "x", "-count", "1", st.pkg}
		line := "go " + strings.Join(cmdline, " ")
		shown = append(shown, line)
		out, err := goTest(ctx, root, redisURL, cmdline)
		if err != nil {
			fails = append(fails, fmt.Sprintf("%s: %v: %s", line, err, lastLines(out, 5)))
			continue
		}
		got := parseGoBench(out)
		if len(got) == 0 {
			fails = append(fails, line+": no benchmark ran")
		}
		all = append(all, got...)
	}
	if len(fails) > 0 {
		return all, shown, fmt.Errorf("go benchmarks: %s", strings.Join(fails, "; "))
	}
	return all, shown, nil
}

func goTest(ctx context.Context, root, redisURL string, args []string) (string, error) {
	tctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(tctx, goTool(), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TOLLGATE_TEST_REDIS_URL="+redisURL)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func parseGoBench(out string) []GoBench {
	var res []GoBench
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		b := GoBench{Package: pkg, Name: f[0]}
		b.N, _ = strconv.ParseInt(f[1], 10, 64)
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				b.NsPerOp = v
			case "B/op":
				b.BytesPerOp = v
			case "allocs/op":
				b.AllocsPerOp = v
			default:
				if b.Metrics == nil {
					b.Metrics = map[string]float64{}
				}
				b.Metrics[f[i+1]] = v
			}
		}
		res = append(res, b)
	}
	return res
}

// benchBase is a benchmark's name without the -GOMAXPROCS suffix go test
// appends ("BenchmarkHandler/unmetered-2" → "BenchmarkHandler/unmetered").
func benchBase(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
