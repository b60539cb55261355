package redistest

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ServerCPU is the Redis server's used_cpu_user + used_cpu_sys (INFO cpu).
// It is server-wide: per-operation figures from it only mean something on
// a Redis nobody else uses (Private, or TOLLGATE_TEST_REDIS_URL pointing at
// one).
func ServerCPU(tb testing.TB, rdb *redis.Client) time.Duration {
	tb.Helper()
	s, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatalf("INFO cpu %s: %v", k, err)
			}
			sum += f
		}
	}
	return time.Duration(sum * float64(time.Second))
}

// ProcessCPU is the user and system CPU time of this process so far, for
// benchmarks that report CPU per operation beside Redis's.
func ProcessCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
