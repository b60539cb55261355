package tenant

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

const (
	hashHexLen = 2 * sha256.Size

	apiKeyPrefix      = "tg:apikey:"
	invalidateChannel = "tg:invalidate"
	msgKeyPrefix      = "key:"
	msgTenantPrefix   = "tenant:"
)

// keyEncoding turns 25 random bytes (200 bits) into exactly 40 characters.
var keyEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func apiKeyRedisKey(sha256hex string) string { return apiKeyPrefix + sha256hex }

// entKey is the entitlement hash the quota package writes; it exists iff the
// tenant does.
func entKey(tenantID string) string { return "tg:{" + tenantID + "}:ent" }

// HashKey returns the lower-case hex SHA-256 of key, the only form of a key
// Tollgate stores.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// hashInto writes the hex SHA-256 of b into dst without allocating, for the
// request path.
func hashInto(dst *[hashHexLen]byte, b []byte) {
	sum := sha256.Sum256(b)
	hex.Encode(dst[:], sum[:])
}

// IssueKey creates a key for tenantID, stores its hash and returns the key.
// The key itself is never stored, so this is the only time it is visible.
// It does not check that the tenant exists; the caller creates it first.
func IssueKey(ctx context.Context, rdb redis.UniversalClient, tenantID string) (string, error) {
	if !validTenantID(tenantID) {
		return "", fmt.Errorf("issue key: tenant id %q: %w", tenantID, ErrInvalid)
	}
	var raw [25]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("issue key: random: %w", err)
	}
	key := keyPrefix + strings.ToLower(keyEncoding.EncodeToString(raw[:]))
	// SET NX: a collision of 200 random bits will not happen, but if it did
	// it must not silently hand another tenant's key to this one.
	ok, err := rdb.SetNX(ctx, apiKeyRedisKey(HashKey(key)), tenantID, 0).Result()
	if err != nil {
		return "", fmt.Errorf("issue key: %w", err)
	}
	if !ok {
		return "", errors.New("issue key: generated key already exists")
	}
	return key, nil
}

// RevokeKey revokes key (the key itself, as issued). A malformed key is
// ErrInvalid.
func RevokeKey(ctx context.Context, rdb redis.UniversalClient, key string) error {
	if !wellFormedKey(key) {
		return fmt.Errorf("revoke key: %w", ErrInvalid)
	}
	return RevokeKeyHash(ctx, rdb, HashKey(key))
}

// RevokeKeyHash deletes the key with the given hex SHA-256 and tells every
// Resolver to forget it. Upper-case hex is accepted; anything else is
// ErrInvalid. When no such key was stored the invalidation is still
// published (so a retry after a failed publish completes the revocation) and
// the result is ErrUnknown.
func RevokeKeyHash(ctx context.Context, rdb redis.UniversalClient, sha256hex string) error {
	h := strings.ToLower(sha256hex)
	if !validHashHex(h) {
		return fmt.Errorf("revoke key: hash: %w", ErrInvalid)
	}
	n, err := rdb.Del(ctx, apiKeyRedisKey(h)).Result()
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	if err := rdb.Publish(ctx, invalidateChannel, msgKeyPrefix+h).Err(); err != nil {
		return fmt.Errorf("revoke key: publish: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("revoke key: %w", ErrUnknown)
	}
	return nil
}

// Invalidate tells every Resolver to forget what it cached about tenantID:
// its API keys, its tokens and whether it exists. Call it after deleting or
// suspending a tenant, and after creating one whose id may have been looked
// up (and cached as unknown) before, as with the header source.
func Invalidate(ctx context.Context, rdb redis.UniversalClient, tenantID string) error {
	if !validTenantID(tenantID) {
		return fmt.Errorf("invalidate: tenant id %q: %w", tenantID, ErrInvalid)
	}
	if err := rdb.Publish(ctx, invalidateChannel, msgTenantPrefix+tenantID).Err(); err != nil {
		return fmt.Errorf("invalidate: publish: %w", err)
	}
	return nil
}
