package usage_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
)

func redisURL() string {
	if u := os.Getenv("TOLLGATE_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func databaseURL() string {
	if u := os.Getenv("TOLLGATE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sharedRedis is the test Redis other packages use too: only random keys.
func sharedRedis(t *testing.T) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(redisURL())
	if err != nil {
		t.Fatalf("TOLLGATE_TEST_REDIS_URL %q: %v", redisURL(), err)
	}
	return connect(t, opt, redisURL())
}

func connect(t *testing.T, opt *redis.Options, what string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		t.Fatalf("redis at %s is unreachable (set TOLLGATE_TEST_REDIS_URL): %v", what, err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// privateRedis starts a redis-server of its own without persistence, for
// tests that wipe Redis; it is killed when the test ends.
func privateRedis(t *testing.T) *redis.Client {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is required for the wipe test (make services installs it): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
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

// newSchema creates a fresh schema, dropped when the test ends: packages
// testing in parallel share the database.
func newSchema(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL())
	if err != nil {
		t.Fatalf("PostgreSQL is required at %s (set TOLLGATE_TEST_DATABASE_URL; `make services` starts it): %v", databaseURL(), err)
	}
	defer conn.Close(ctx)
	schema := "tg_usage_" + randomHex(t, 6)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, databaseURL())
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

func openPool(ctx context.Context, schema string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL())
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 8
	return pgxpool.NewWithConfig(ctx, cfg)
}

// newBilling returns a migrated billing store in a fresh schema with the
// test plans synced, and the schema's name.
func newBilling(t *testing.T, cfg *config.Config) (*billing.Store, string) {
	t.Helper()
	ctx := testCtx(t)
	schema := newSchema(t)
	pool, err := openPool(ctx, schema)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := billing.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	s := billing.New(pool)
	if _, err := s.SyncPlans(ctx, cfg.Plans, cfg.Features); err != nil {
		t.Fatalf("sync plans: %v", err)
	}
	return s, schema
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	path := filepath.Join("testdata", "tollgate.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(path, data, nil)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return cfg
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
