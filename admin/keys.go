package admin

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/tenant"
)

type keyResponse struct {
	ID        string  `json:"id"`
	APIKey    string  `json:"api_key,omitempty"` // only when issued
	Prefix    string  `json:"prefix"`
	CreatedAt string  `json:"created_at"`
	RevokedAt *string `json:"revoked_at,omitempty"`
}

func keyJSON(k billing.APIKey) keyResponse {
	return keyResponse{ID: k.ID, Prefix: k.Prefix, CreatedAt: ts(k.CreatedAt), RevokedAt: tsPtr(k.RevokedAt)}
}

// issueKey mints another key; it is shown only in this answer.
func (a *API) issueKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, key, err := a.db.IssueAPIKey(r.Context(), id)
	if err != nil {
		a.storeError(w, r, "issue key", "invalid_json", err)
		return
	}
	ctx, cancel := writeCtx(r)
	defer cancel()
	err = a.withTenant(ctx, id, func(ctx context.Context, l *billing.TenantLock) error {
		// Only while it is still live: the key is listed from its commit
		// on, and a revocation that ran first must not be undone.
		h := tenant.HashKey(key)
		live, _, err := l.KeyHashes(ctx)
		if err != nil || !slices.Contains(live, h) {
			return err
		}
		return a.rdb.Set(ctx, apiKeyKey(h), id, 0).Err()
	})
	if err != nil {
		a.redisError(w, "issue key", id, err, errorBody{ID: rec.ID, APIKey: key})
		return
	}
	out := keyJSON(rec)
	out.APIKey = key
	writeJSON(w, http.StatusCreated, out)
}

// listKeys lists the tenant's keys, revoked ones included; never a secret.
func (a *API) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := a.db.ListAPIKeys(r.Context(), r.PathValue("id"))
	if err != nil {
		a.storeError(w, r, "list keys", "invalid_json", err)
		return
	}
	out := struct {
		Keys []keyResponse `json:"keys"`
	}{Keys: make([]keyResponse, len(keys))}
	for i, k := range keys {
		out.Keys[i] = keyJSON(k)
	}
	writeJSON(w, http.StatusOK, out)
}

// revokeKey revokes the key in PostgreSQL, then deletes its hash from
// Redis and publishes the eviction every proxy applies. Revoking a revoked
// key succeeds again, and repeats the Redis step.
func (a *API) revokeKey(w http.ResponseWriter, r *http.Request) {
	id, keyID := r.PathValue("id"), r.PathValue("key_id")
	// The hash is read first so that, once the revocation commits, nothing
	// but Redis can fail.
	hash, err := a.db.APIKeyHash(r.Context(), id, keyID)
	if errors.Is(err, billing.ErrKeyNotFound) {
		// Tell an unknown tenant from an unknown key.
		if _, terr := a.db.GetTenant(r.Context(), id); terr != nil {
			err = terr
		}
	}
	if err != nil {
		a.storeError(w, r, "revoke key", "invalid_json", err)
		return
	}
	rec, err := a.db.RevokeAPIKey(r.Context(), id, keyID)
	if err != nil {
		a.storeError(w, r, "revoke key", "invalid_json", err)
		return
	}
	ctx, cancel := writeCtx(r)
	defer cancel()
	err = a.withTenant(ctx, id, func(ctx context.Context, _ *billing.TenantLock) error {
		return tenant.RevokeKeyHash(ctx, a.rdb, hash)
	})
	if err != nil && !errors.Is(err, tenant.ErrUnknown) {
		a.redisError(w, "revoke key", id, err, errorBody{})
		return
	}
	a.log.Info("api key revoked", zap.String("tenant", id), zap.String("key", keyID))
	writeJSON(w, http.StatusOK, keyJSON(rec))
}
