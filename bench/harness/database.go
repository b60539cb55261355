package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// defaultDatabaseURL is the local test database; BENCH_DATABASE_URL or
// Options.DatabaseURL point elsewhere.
const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// benchSchema creates a schema of its own for one run, so a run starts with
// no tenants left by an earlier one (the restorer would copy them all into
// the run's fresh Redis), and returns the URL to give Tollgate and a func
// dropping the schema.
func benchSchema(ctx context.Context, base string) (string, func(), error) {
	if base == "" {
		base = os.Getenv("TOLLGATE_TEST_DATABASE_URL")
	}
	if base == "" {
		base = defaultDatabaseURL
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("bench database (PostgreSQL at %s; scripts/services.sh starts it): %w", base, err)
	}
	defer conn.Close(cctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "tg_bench_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(cctx, "CREATE SCHEMA "+schema); err != nil {
		return "", nil, fmt.Errorf("bench database: create schema: %w", err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			_ = c.Close(ctx)
		}
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema, drop, nil
}
