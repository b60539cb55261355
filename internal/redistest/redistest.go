// Package redistest gives tests a client of the real Redis, the way
// billingtest gives them a billing store. It fails the test when Redis is
// not there: a test of Redis behaviour that skips proves nothing.
package redistest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// URL is TOLLGATE_TEST_REDIS_URL or the local test Redis.
func URL() string {
	if u := os.Getenv("TOLLGATE_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// NewClient connects to URL and fails the test unless Redis answers a PING
// within 2 s; the client is closed when the test ends. Each edit adjusts the
// parsed options before the client is made (pool size, timeouts, a dialer),
// so the PING already goes through them. Other packages share this Redis:
// use random key names and delete them, never FLUSHDB.
func NewClient(t testing.TB, edits ...func(*redis.Options)) *redis.Client {
	t.Helper()
	url := URL()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("TOLLGATE_TEST_REDIS_URL %q: %v", url, err)
	}
	for _, edit := range edits {
		edit(opt)
	}
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("Redis is required at %s for this test (scripts/services.sh starts it; TOLLGATE_TEST_REDIS_URL points elsewhere): %v", url, err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}
