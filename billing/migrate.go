package billing

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded schema change.
type Migration struct {
	Version int64  // the file's numeric prefix; applied in ascending order
	Name    string // the file name without .sql, e.g. "0001_core"
	SQL     string
}

var migrationName = regexp.MustCompile(`^([0-9]{4,})_[a-z0-9_]+\.sql$`)

// Migrations returns the embedded migrations in the order they apply.
func Migrations() ([]Migration, error) {
	return loadMigrations(migrationFS, "migrations")
}

func loadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	var ms []Migration
	seen := map[int64]string{}
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if e.IsDir() || m == nil {
			return nil, fmt.Errorf("load migrations: %q is not NNNN_name.sql", e.Name())
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("load migrations: %s: %w", e.Name(), err)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("load migrations: %s and %s share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("load migrations: %w", err)
		}
		ms = append(ms, Migration{Version: v, Name: e.Name()[:len(e.Name())-len(".sql")], SQL: string(b)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return cmp.Compare(a.Version, b.Version) })
	return ms, nil
}

// migrationLockClass is the first key of the advisory lock; the second is a
// hash of the schema, so runs against different schemas (tests) don't wait
// on each other while runs against the same one are serialised.
const migrationLockClass = 0x7467 // "tg"

const lockSQL = `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`

// Migrate brings the schema up to date. See ApplyMigrations.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := ApplyMigrations(ctx, pool)
	return err
}

// ApplyMigrations applies the embedded migrations not yet recorded in
// schema_migrations, each in its own transaction holding an advisory lock,
// and returns the names of those it applied. Migrations are forward-only:
// a version recorded in the database is never run again, and versions the
// database has but this binary does not know (a newer binary ran) are left
// alone. Concurrent callers are safe: the lock serialises them and each
// re-checks under it, so every migration runs once.
func ApplyMigrations(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	return applyMigrations(ctx, pool, ms)
}

func applyMigrations(ctx context.Context, pool *pgxpool.Pool, ms []Migration) ([]string, error) {
	// Creating the bookkeeping table also happens under the lock: two
	// concurrent CREATE TABLE IF NOT EXISTS can otherwise both try to create
	// it and one fails on the catalog's unique index.
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockSQL, migrationLockClass); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    bigint      PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("migrate: schema_migrations: %w", err)
	}
	var applied []string
	for _, m := range ms {
		ran, err := applyOne(ctx, pool, m)
		if err != nil {
			return applied, err
		}
		if ran {
			applied = append(applied, m.Name)
		}
	}
	return applied, nil
}

var errAlreadyApplied = errors.New("already applied")

func applyOne(ctx context.Context, pool *pgxpool.Pool, m Migration) (bool, error) {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockSQL, migrationLockClass); err != nil {
			return err
		}
		var done bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, m.Version).Scan(&done); err != nil {
			return err
		}
		if done {
			return errAlreadyApplied
		}
		// No arguments: pgx sends it with the simple protocol, which
		// accepts several statements in one string.
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
		return err
	})
	if errors.Is(err, errAlreadyApplied) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("migrate %s: %w", m.Name, err)
	}
	return true, nil
}

// AppliedMigration is a row of schema_migrations.
type AppliedMigration struct {
	Version   int64
	Name      string
	AppliedAt time.Time
}

// AppliedMigrations lists what schema_migrations records, oldest first.
func AppliedMigrations(ctx context.Context, pool *pgxpool.Pool) ([]AppliedMigration, error) {
	rows, err := pool.Query(ctx, `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("applied migrations: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[AppliedMigration])
	if err != nil {
		return nil, fmt.Errorf("applied migrations: %w", err)
	}
	return out, nil
}
