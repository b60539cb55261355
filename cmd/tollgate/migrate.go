package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/tollgate/tollgate/billing"
)

// migrate brings the billing database at dbURL up to date and prints what
// it applied. Safe to run from several replicas at once: the billing
// package serialises them with an advisory lock.
func migrate(ctx context.Context, dbURL string, stdout io.Writer) error {
	if dbURL == "" {
		return errors.New("migrate: no database URL (set TOLLGATE_DATABASE_URL or database.url)")
	}
	pool, err := billing.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer pool.Close()
	applied, err := billing.ApplyMigrations(ctx, pool)
	for _, name := range applied {
		fmt.Fprintf(stdout, "applied %s\n", name)
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "schema up to date")
	}
	return nil
}
