package usage_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/billingtest"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/configtest"
	"github.com/tollgate/tollgate/internal/redistest"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sharedRedis is the test Redis other packages use too: only random keys.
func sharedRedis(t *testing.T) *redis.Client {
	t.Helper()
	return redistest.NewClient(t)
}

// privateRedis starts a redis-server of its own without persistence, for
// tests that wipe Redis; it is killed when the test ends.
func privateRedis(t *testing.T) *redis.Client {
	t.Helper()
	addr := redistest.Private(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	for range 100 {
		if rdb.Ping(context.Background()).Err() == nil {
			return rdb
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("private redis-server on %s did not answer", addr)
	return nil
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// openPool opens another pool on url, a schema's URL from newBilling.
func openPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 8
	return pgxpool.NewWithConfig(ctx, cfg)
}

// newBilling returns a migrated billing store in a fresh schema with the
// test plans synced, and the schema's database URL.
func newBilling(t *testing.T, cfg *config.Config) (*billing.Store, string) {
	t.Helper()
	pool, url := billingtest.NewPool(t)
	s := billing.New(pool)
	if _, err := s.SyncPlans(testCtx(t), cfg.Plans, cfg.Features); err != nil {
		t.Fatalf("sync plans: %v", err)
	}
	return s, url
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	return configtest.Load(t, filepath.Join("testdata", "tollgate.yaml"), nil)
}

// newEpoch starts an epoch in the billing store and sets it under a
// test-private epoch key in rdb, removed at the end.
func newEpoch(t *testing.T, rdb *redis.Client, s *billing.Store) (string, int64) {
	t.Helper()
	ctx := testCtx(t)
	e, err := s.BeginEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := "tg:test-epoch:" + randomHex(t, 6)
	if err := rdb.Set(ctx, key, e, 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	return key, e
}

// tenantPrefix returns a random tenant id prefix whose keys are deleted
// when the test ends.
func tenantPrefix(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	p := "ut" + randomHex(t, 5)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var cursor uint64
		for range 10000 {
			keys, next, err := rdb.Scan(ctx, cursor, "tg:{"+p+"*", 1000).Result()
			if err != nil {
				t.Errorf("cleanup %s: %v", p, err)
				return
			}
			if len(keys) > 0 {
				rdb.Del(ctx, keys...)
			}
			if cursor = next; cursor == 0 {
				return
			}
		}
	})
	return p
}

func thisMonth() (int64, int64) {
	now := time.Now().UTC()
	start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start.Unix(), start.AddDate(0, 1, 0).Unix()
}

func meteredKey(tid, feature string, start int64) string {
	return "tg:{" + tid + "}:m:" + feature + ":" + strconv.FormatInt(start, 10)
}

// totals reads what billing holds of the tenant this month.
func totals(t *testing.T, s *billing.Store, tid string) (messages, agents int64) {
	t.Helper()
	start, _ := thisMonth()
	u, err := s.UsageFor(testCtx(t), tid, time.Unix(start, 0))
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.GaugesFor(testCtx(t), tid)
	if err != nil {
		t.Fatal(err)
	}
	return u["messages"], g["agents"]
}

func redisInt(t *testing.T, rdb *redis.Client, key string) int64 {
	t.Helper()
	n, err := rdb.Get(testCtx(t), key).Int64()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return n
}

// eventually polls cond every 50 ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for range int(d / (50 * time.Millisecond)) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !cond() {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}
