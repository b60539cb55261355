package billing

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// tenantLockIdleMargin is how much longer than its context a section
	// may sit idle in its transaction before the server ends the session,
	// and with it the lock: the backstop for a holder that stopped talking
	// (a frozen process, a lost network).
	tenantLockIdleMargin = 5 * time.Second
	// tenantLockDefaultBound bounds the wait and the idle time of a
	// section whose context has no deadline.
	tenantLockDefaultBound = time.Minute
)

// TenantLock is a tenant's write-through lock, held by one section at a
// time across every process on the database (LockTenant). Its reads run
// on the connection holding it, inside its transaction, so a section needs
// no second connection from the pool.
type TenantLock struct {
	tx       pgx.Tx
	tenantID string
}

// LockTenant takes the tenant's write-through lock, waiting while a
// section of any process (worker, replica) holds it. The admin API holds it
// from reading what the tenant is entitled to and its keys to the last
// Redis write made from them, so two processes' write-throughs of one
// tenant cannot interleave: a write-through that read a key as live cannot
// SET it after the revocation's DEL, and of two plan changes the later
// write-through reads both commits.
//
// It is a transaction-scoped advisory lock (pg_advisory_xact_lock on a
// hash of the schema and tenant id) in a read-only READ COMMITTED
// transaction; Unlock ends the transaction. ctx bounds the wait, which
// PostgreSQL also gives up (lock_timeout) when ctx's deadline passes, and
// the server ends a session left idle inside the section for ctx's
// remaining time and 5 s more, so a holder that stops answering cannot keep
// the lock; without a deadline both bounds are a minute. An unrelated
// tenant whose key hashes alike waits too; nothing else does.
func (s *Store) LockTenant(ctx context.Context, tenantID string) (*TenantLock, error) {
	const op = "lock tenant"
	wait := tenantLockDefaultBound
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	wait = max(wait, time.Millisecond)
	// READ COMMITTED, whatever the server's default: each read then sees
	// every change committed before it, those committed while this waited
	// for the lock included. A snapshot taken by the locking statement
	// would predate the wait.
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", op, tenantID, err)
	}
	l := &TenantLock{tx: tx, tenantID: tenantID}
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true),
			set_config('idle_in_transaction_session_timeout', $2, true)`,
		strconv.FormatInt(wait.Milliseconds(), 10), strconv.FormatInt((wait+tenantLockIdleMargin).Milliseconds(), 10)); err != nil {
		l.Unlock()
		return nil, fmt.Errorf("%s %q: %w", op, tenantID, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended(
			'tollgate:tenant:' || current_schema() || ':' || $1::text, 0))`, tenantID); err != nil {
		l.Unlock()
		return nil, classify(fmt.Sprintf("%s %q", op, tenantID), err)
	}
	return l, nil
}

// Unlock releases the lock. A rollback that fails closes the connection,
// which releases it too. Calling it again does nothing.
func (l *TenantLock) Unlock() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.tx.Rollback(ctx)
}

// Subscription is GetSubscription of the locked tenant.
func (l *TenantLock) Subscription(ctx context.Context) (Subscription, error) {
	return getSubscription(ctx, l.tx, l.tenantID)
}

// Plan is GetPlan.
func (l *TenantLock) Plan(ctx context.Context, slug string) (Plan, error) {
	return getPlan(ctx, l.tx, slug)
}

// KeyHashes is KeyHashes of the locked tenant.
func (l *TenantLock) KeyHashes(ctx context.Context) (live, revoked []string, err error) {
	return keyHashes(ctx, l.tx, l.tenantID)
}
