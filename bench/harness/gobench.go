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
	Name        string  `json:"name"`
	N           int64   `json:"n"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
}

// runGoBench runs the proxy package's handler benchmark for a fixed number
// of iterations (bounded) against the run's Redis: allocations per request
// come from there rather than from a new endpoint in the server.
func runGoBench(ctx context.Context, root, redisURL string, iterations int) ([]GoBench, string, error) {
	cmdline := []string{"test", "-run", "^$", "-bench", "^BenchmarkHandler$", "-benchmem",
		"-benchtime", strconv.Itoa(iterations) + "x", "-count", "1", "./proxy/"}
	tctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(tctx, goTool(), cmdline...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TOLLGATE_TEST_REDIS_URL="+redisURL)
	out, err := cmd.CombinedOutput()
	shown := "go " + strings.Join(cmdline, " ")
	if err != nil {
		return nil, shown, fmt.Errorf("%s: %w: %s", shown, err, out)
	}
	return parseGoBench(string(out)), shown, nil
}

func parseGoBench(out string) []GoBench {
	var res []GoBench
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		b := GoBench{Name: f[0]}
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
			}
		}
		res = append(res, b)
	}
	return res
}
