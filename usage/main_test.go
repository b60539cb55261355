package usage_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/usage"
)

// helperEnv selects the test binary's helper mode: the kill -9 test
// re-executes this binary as a flusher process it can SIGKILL.
const helperEnv = "TOLLGATE_USAGE_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "flusher" {
		os.Exit(flusherHelper())
	}
	os.Exit(m.Run())
}

// flusherHelper flushes the parent's tenants every few milliseconds until
// it is killed (or, should the parent vanish, for a minute at most).
func flusherHelper() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opt, err := redis.ParseURL(redistest.URL())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	pool, err := openPool(ctx, os.Getenv("TOLLGATE_USAGE_TEST_DATABASE_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer pool.Close()
	f := usage.NewFlusher(rdb, usage.StoreSink{Store: billing.New(pool)},
		usage.WithEpochKey(os.Getenv("TOLLGATE_USAGE_TEST_EPOCH_KEY")),
		usage.WithSweepTenants(os.Getenv("TOLLGATE_USAGE_TEST_TENANTS")),
		usage.WithInterval(20*time.Millisecond), usage.WithSweepInterval(20*time.Millisecond))
	_ = f.Run(ctx)
	return 0
}
