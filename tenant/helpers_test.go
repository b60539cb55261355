package tenant

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/internal/redistest"
)

// testRedis connects to the real Redis and fails the test when it is not
// there: these tests are about Redis behaviour and must not pass vacuously.
func testRedis(t testing.TB) *redis.Client {
	t.Helper()
	return redistest.NewClient(t)
}

// testRedisNamed sets a client name so a test can find its own connections
// in CLIENT LIST.
func testRedisNamed(t testing.TB, name string) *redis.Client {
	t.Helper()
	return redistest.NewClient(t, func(opt *redis.Options) { opt.ClientName = name })
}

// deadRedis is a client for a port nothing listens on: any command fails.
func deadRedis(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{
		Addr:          "127.0.0.1:1",
		DialTimeout:   200 * time.Millisecond,
		MaxRetries:    -1,
		DialerRetries: 1,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return hex.EncodeToString(b)
}

// createTenant writes the entitlement hash that marks a tenant as existing.
func createTenant(t testing.TB, rdb redis.UniversalClient) string {
	t.Helper()
	tid := "ten_test_" + randHex(t, 8)
	addTenant(t, rdb, tid)
	return tid
}

func addTenant(t testing.TB, rdb redis.UniversalClient, tid string) {
	t.Helper()
	ctx := context.Background()
	if err := rdb.HSet(ctx, entKey(tid), "plan", "test").Err(); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), entKey(tid)) })
}

func issueTestKey(t testing.TB, rdb redis.UniversalClient, tid string) string {
	t.Helper()
	key, err := IssueKey(context.Background(), rdb, tid)
	if err != nil {
		t.Fatalf("IssueKey: %v", err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), apiKeyRedisKey(HashKey(key))) })
	return key
}

// newTestResolver builds a Resolver and waits until its invalidation
// subscription is confirmed, so messages published afterwards reach it.
func newTestResolver(t testing.TB, cfg config.TenantIdentification, rdb redis.UniversalClient, opts ...Option) *Resolver {
	t.Helper()
	r, err := NewResolver(context.Background(), cfg, rdb, opts...)
	if err != nil {
		t.Fatalf("NewResolver: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	select {
	case <-r.ready:
	case <-time.After(5 * time.Second):
		t.Fatalf("invalidation subscription not confirmed within 5s")
	}
	return r
}

// hdr builds request headers; an empty name means no header at all.
func hdr(name, value string) *fasthttp.RequestHeader {
	var h fasthttp.RequestHeader
	if name != "" {
		h.Set(name, value)
	}
	return &h
}

// rawHdr reads request headers from raw header lines (without their CRLF)
// the way the server does, so a test can send a field more than once.
func rawHdr(t testing.TB, lines ...string) *fasthttp.RequestHeader {
	t.Helper()
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: example.com\r\n")
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader(b.String()))); err != nil {
		t.Fatalf("read header %q: %v", b.String(), err)
	}
	return &h
}

// eventually polls f every 20ms for up to d; the loop is bounded by d.
func eventually(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isSentinel(err error) bool {
	return errors.Is(err, ErrMissing) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnknown)
}
