package billing

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// KeyHashes returns the hex SHA-256 of the tenant's working keys and of
// its revoked ones, so a resync can SET the former in Redis and delete the
// latter. An unknown tenant is ErrTenantNotFound.
func (s *Store) KeyHashes(ctx context.Context, tenantID string) (live, revoked []string, err error) {
	return keyHashes(ctx, s.pool, tenantID)
}

func keyHashes(ctx context.Context, q querier, tenantID string) (live, revoked []string, err error) {
	const op = "key hashes"
	if err := requireTenant(ctx, q, tenantID); err != nil {
		return nil, nil, classify(op, err)
	}
	rows, err := q.Query(ctx, `SELECT key_hash, revoked_at IS NOT NULL FROM api_keys
		WHERE tenant_id = $1 ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, nil, classify(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		var h string
		var gone bool
		if err := rows.Scan(&h, &gone); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", op, err)
		}
		if gone {
			revoked = append(revoked, h)
		} else {
			live = append(live, h)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, classify(op, err)
	}
	return live, revoked, nil
}

// APIKeyHash returns the hex SHA-256 of the tenant's key keyID, revoked or
// not; a key of another tenant is ErrKeyNotFound.
func (s *Store) APIKeyHash(ctx context.Context, tenantID, keyID string) (string, error) {
	var h string
	err := s.pool.QueryRow(ctx, `SELECT key_hash FROM api_keys WHERE id = $1 AND tenant_id = $2`, keyID, tenantID).Scan(&h)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("api key hash %q: %w", keyID, ErrKeyNotFound)
	}
	if err != nil {
		return "", classify(fmt.Sprintf("api key hash %q", keyID), err)
	}
	return h, nil
}
