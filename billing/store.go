package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is the billing data layer. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// now is the clock for billing periods; tests move it.
	now func() time.Time
}

// New returns a Store on pool. The schema must be migrated (Migrate).
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, now: time.Now}
}

// Pool returns the pool the store uses.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Connect opens a pool on dbURL and checks that the server answers, so a
// wrong URL fails at start rather than on the first request.
func Connect(ctx context.Context, dbURL string) (*pgxpool.Pool, error) {
	if dbURL == "" {
		return nil, fmt.Errorf("connect: %w: empty database URL", ErrInvalid)
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// A blackholed host would otherwise hold the start until the
		// kernel gives up; connect_timeout in the URL overrides this.
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	return pool, nil
}

// inTx runs fn in a transaction, committed when fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// MonthPeriod returns the calendar month in UTC holding t: [start, end).
func MonthPeriod(t time.Time) (start, end time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

type actorKey struct{}

// WithActor names who is acting for the audit rows written by calls made
// with the returned context (e.g. "admin", "webhook:stripe"). Calls that
// take an explicit actor use that one.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// actorFrom returns the context's actor, "system" when none was set.
func actorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "system"
}
