package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/tenant"
)

type createdTenant struct {
	ID     string `json:"id"`
	Plan   string `json:"plan"`
	APIKey string `json:"api_key"`
	// Pending: created, but not yet written through to Redis.
	Pending bool `json:"-"`
}

// createTenants creates n tenants on plan through the admin API, as an
// operator would, with a few requests in flight.
func createTenants(ctx context.Context, apiAddr, token, plan string, n int) ([]createdTenant, error) {
	out := make([]createdTenant, n)
	errs := make([]error, n)
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < min(8, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i], errs[i] = createTenant(ctx, client, apiAddr, token, plan, fmt.Sprintf("bench-%s-%d", plan, i))
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func createTenant(ctx context.Context, client *http.Client, apiAddr, token, plan, name string) (createdTenant, error) {
	body, _ := json.Marshal(map[string]string{"name": name, "plan": plan})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+apiAddr+"/admin/v1/tenants", bytes.NewReader(body))
	if err != nil {
		return createdTenant{}, fmt.Errorf("create tenant: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return createdTenant{}, fmt.Errorf("create tenant: %w", err)
	}
	defer resp.Body.Close()
	var t createdTenant
	err = json.NewDecoder(resp.Body).Decode(&t)
	switch {
	case err == nil && resp.StatusCode == http.StatusCreated && t.APIKey != "":
		return t, nil
	case err == nil && resp.StatusCode == http.StatusServiceUnavailable && t.ID != "" && t.APIKey != "":
		// Saved in PostgreSQL, but the write-through to Redis timed out
		// (redis.timeout is 50 ms and a loaded machine misses it): the
		// server writes it through later. waitWrittenThrough waits for that.
		t.Pending = true
		return t, nil
	}
	return createdTenant{}, fmt.Errorf("create tenant: status %d, decode error %v", resp.StatusCode, err)
}

// waitWrittenThrough waits, bounded, until every pending tenant's API key
// and entitlement are in Redis, so no timed request meets an unknown key.
func waitWrittenThrough(ctx context.Context, rdb *redis.Client, tenants []createdTenant) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, t := range tenants {
		if !t.Pending {
			continue
		}
		keys := []string{"tg:apikey:" + tenant.HashKey(t.APIKey), "tg:{" + t.ID + "}:ent"}
		for {
			n, err := rdb.Exists(ctx, keys...).Result()
			if err == nil && n == int64(len(keys)) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("tenant %s not written through to Redis within 30 s (last error %v)", t.ID, err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for tenant %s: %w", t.ID, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// deleteTenantKeys removes what the run wrote for these tenants from a
// shared Redis (a private one is simply stopped): their hash-tagged keys and
// their API key entries.
func deleteTenantKeys(ctx context.Context, rdb *redis.Client, tenants []createdTenant) error {
	ids := make(map[string]bool, len(tenants))
	var del []string
	for _, t := range tenants {
		if t.ID == "" {
			continue
		}
		ids[t.ID] = true
		del = append(del, "tg:apikey:"+tenant.HashKey(t.APIKey))
	}
	var cursor uint64
	// Bounded: SCAN ends when the cursor returns to 0; the cap guards
	// against a server that never does.
	for i := 0; i < 1_000_000; i++ {
		keys, next, err := rdb.Scan(ctx, cursor, "tg:{ten_*", 1000).Result()
		if err != nil {
			return fmt.Errorf("scan bench keys: %w", err)
		}
		for _, k := range keys {
			tid, _, _ := strings.Cut(strings.TrimPrefix(k, "tg:{"), "}")
			if ids[tid] {
				del = append(del, k)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	for len(del) > 0 {
		n := min(500, len(del))
		if err := rdb.Del(ctx, del[:n]...).Err(); err != nil {
			return fmt.Errorf("delete bench keys: %w", err)
		}
		del = del[n:]
	}
	return nil
}
