package billing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tollgate/tollgate/tenant"
)

// APIKey is the stored part of a tenant's API key: never the key itself.
type APIKey struct {
	ID        string
	TenantID  string
	Prefix    string // the key's first characters, for display ("tg_abcde")
	CreatedAt time.Time
	RevokedAt *time.Time // nil while the key works
}

const keyColumns = `id, tenant_id, prefix, created_at, revoked_at`

func scanKey(r pgx.Row) (APIKey, error) {
	var k APIKey
	err := r.Scan(&k.ID, &k.TenantID, &k.Prefix, &k.CreatedAt, &k.RevokedAt)
	return k, err
}

// insertKey mints a key for tenantID and stores its hash. A hash collision
// (200 random bits: it will not happen) surfaces as ErrConflict rather than
// handing one tenant's key to another.
func insertKey(ctx context.Context, q querier, tenantID string) (key, id string, err error) {
	key, err = NewAPIKey()
	if err != nil {
		return "", "", err
	}
	id, err = newID("key_")
	if err != nil {
		return "", "", err
	}
	if _, err := q.Exec(ctx, `INSERT INTO api_keys (id, tenant_id, key_hash, prefix) VALUES ($1, $2, $3, $4)`,
		id, tenantID, tenant.HashKey(key), key[:keyDisplayLen]); err != nil {
		return "", "", err
	}
	return key, id, nil
}

// IssueAPIKey creates another key for the tenant and returns it with its
// record; the key is visible only now. The actor comes from ctx.
func (s *Store) IssueAPIKey(ctx context.Context, tenantID string) (APIKey, string, error) {
	const op = "issue api key"
	var rec APIKey
	var key string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		k, id, err := insertKey(ctx, tx, tenantID)
		if err != nil {
			return err
		}
		key = k
		if rec, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1`, id)); err != nil {
			return err
		}
		return writeAudit(ctx, tx, actorFrom(ctx), ActionKeyIssue, tenantID, map[string]any{"api_key_id": id, "prefix": rec.Prefix})
	})
	if err != nil {
		return APIKey{}, "", classify(op, err)
	}
	return rec, key, nil
}

// RevokeAPIKey revokes the tenant's key keyID. Revoking a revoked key
// changes nothing and succeeds; a key of another tenant is
// ErrKeyNotFound. The caller also removes the key from Redis
// (tenant.RevokeKeyHash) so proxies stop accepting it. The actor comes from
// ctx.
func (s *Store) RevokeAPIKey(ctx context.Context, tenantID, keyID string) (APIKey, error) {
	const op = "revoke api key"
	var rec APIKey
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		rec, err = scanKey(tx.QueryRow(ctx, `
			UPDATE api_keys SET revoked_at = now()
			WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL
			RETURNING `+keyColumns, keyID, tenantID))
		if errors.Is(err, pgx.ErrNoRows) {
			rec, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1 AND tenant_id = $2`, keyID, tenantID))
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("%q: %w", keyID, ErrKeyNotFound)
			}
			return err // already revoked: nothing to audit
		}
		if err != nil {
			return err
		}
		return writeAudit(ctx, tx, actorFrom(ctx), ActionKeyRevoke, tenantID, map[string]any{"api_key_id": keyID})
	})
	if err != nil {
		return APIKey{}, classify(op, err)
	}
	return rec, nil
}

// ListAPIKeys returns the tenant's keys, revoked ones included, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID string) ([]APIKey, error) {
	const op = "list api keys"
	if err := requireTenant(ctx, s.pool, tenantID); err != nil {
		return nil, classify(op, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, classify(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (APIKey, error) { return scanKey(r) })
	if err != nil {
		return nil, classify(op, err)
	}
	return out, nil
}

// TenantByKeyHash returns the tenant owning the unrevoked key whose hex
// SHA-256 is keyHash (tenant.HashKey). Unknown and revoked keys are
// ErrKeyNotFound; a hash that is not 64 hex characters is ErrInvalid.
func (s *Store) TenantByKeyHash(ctx context.Context, keyHash string) (Tenant, error) {
	const op = "tenant by key hash"
	h := strings.ToLower(keyHash)
	if !isHexHash(h) {
		return Tenant{}, invalid(op, "key hash must be 64 hex characters")
	}
	t, err := scanTenant(s.pool.QueryRow(ctx, tenantSelect+`
		JOIN api_keys k ON k.tenant_id = t.id
		WHERE k.key_hash = $1 AND k.revoked_at IS NULL`, h))
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, fmt.Errorf("%s: %w", op, ErrKeyNotFound)
	}
	if err != nil {
		return Tenant{}, classify(op, err)
	}
	return t, nil
}

func isHexHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
