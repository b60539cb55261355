// Package billingtest gives tests a billing store on the real PostgreSQL,
// isolated in a schema of its own that is dropped when the test ends, the
// way net/http/httptest gives them a server.
package billingtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
)

// DatabaseURL is TOLLGATE_TEST_DATABASE_URL or the local test database.
func DatabaseURL() string {
	if u := os.Getenv("TOLLGATE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// NewSchema creates an empty schema that is dropped when the test ends and
// returns a database URL whose connections use it, for code under test that
// opens its own pool (tollgate serve, the bench harness).
func NewSchema(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := DatabaseURL()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("PostgreSQL is required at %s (set TOLLGATE_TEST_DATABASE_URL; scripts/services.sh starts it): %v", url, err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "tg_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "search_path=" + schema
}

// Option adjusts the pool NewPool and NewStore open.
type Option func(*pgxpool.Config)

// MaxConns caps the pool at n connections instead of 8.
func MaxConns(n int32) Option {
	return func(c *pgxpool.Config) { c.MaxConns = n }
}

// NewPool opens a pool on a fresh schema (see NewSchema) and migrates it.
// It returns the schema's database URL too, for a second pool or another
// process on the same data. The pool is closed before the schema is
// dropped.
func NewPool(t testing.TB, opts ...Option) (*pgxpool.Pool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := NewSchema(t)
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 8
	for _, o := range opts {
		o(pcfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close) // cleanups run LIFO: before the schema drop
	if err := billing.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool, url
}

// NewStore is a store on NewPool with cfg's plans synced (none when cfg is
// nil). It fails the test when PostgreSQL is not there: a billing test that
// skips proves nothing.
func NewStore(t testing.TB, cfg *config.Config, opts ...Option) *billing.Store {
	t.Helper()
	pool, _ := NewPool(t, opts...)
	db := billing.New(pool)
	if cfg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.SyncPlans(ctx, cfg.Plans, cfg.Features); err != nil {
			t.Fatalf("sync plans: %v", err)
		}
	}
	return db
}
