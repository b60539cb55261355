package billing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/configtest"
)

func testDatabaseURL() string {
	if u := os.Getenv("TOLLGATE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// fixedNow is the clock of stores made by newStore: mid-May 2026, UTC.
var fixedNow = time.Date(2026, 5, 15, 14, 32, 1, 0, time.UTC)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newPool returns a pool whose search_path is a fresh schema, dropped when
// the test ends: packages testing in parallel share the database.
func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := testDatabaseURL()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("PostgreSQL is required at %s (set TOLLGATE_TEST_DATABASE_URL; `make services` starts it): %v", url, err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "tg_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 6
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close) // runs before the schema drop (cleanups are LIFO)
	return pool
}

// testConfig is testdata/plans.yaml.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	return configtest.Load(t, filepath.Join("testdata", "plans.yaml"), nil)
}

// newStore returns a migrated store with the test plans synced and the
// "legacy" plan deactivated, on a clock fixed at fixedNow.
func newStore(t *testing.T) *Store {
	t.Helper()
	ctx := testCtx(t)
	pool := newPool(t)
	if err := Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	s := New(pool)
	s.now = func() time.Time { return fixedNow }
	cfg := testConfig(t)
	if _, err := s.SyncPlans(ctx, cfg.Plans, cfg.Features); err != nil {
		t.Fatalf("sync plans: %v", err)
	}
	off := false
	if _, err := s.UpdatePlan(ctx, "legacy", PlanUpdate{Active: &off}, "test"); err != nil {
		t.Fatalf("deactivate legacy: %v", err)
	}
	return s
}

// mustTenant creates a tenant on plan and returns it with its key.
func mustTenant(t *testing.T, s *Store, name, plan string) (Tenant, string) {
	t.Helper()
	tn, key, err := s.CreateTenant(testCtx(t), name, plan)
	if err != nil {
		t.Fatalf("create tenant %q on %q: %v", name, plan, err)
	}
	return tn, key
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("error = %v, want %v", err, want)
	}
}

// count returns a single integer from sql; for checks on raw tables.
func count(t *testing.T, s *Store, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.pool.QueryRow(testCtx(t), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// sameSub compares subscriptions by value, pointers included.
func sameSub(a, b Subscription) bool {
	at, bt := a.LastTierSwitchAt, b.LastTierSwitchAt
	a.LastTierSwitchAt, b.LastTierSwitchAt = nil, nil
	if (at == nil) != (bt == nil) || (at != nil && !at.Equal(*bt)) {
		return false
	}
	return a == b
}
