package tenant

import (
	"context"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tollgate/tollgate/config"
	"github.com/valyala/fasthttp"
)

// The steady state of the request path must not allocate.
func TestResolveCacheHitZeroAllocs(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	tests := []struct {
		name   string
		cfg    config.TenantIdentification
		header *fasthttp.RequestHeader
	}{
		{"api_key", apiKeyCfg, hdr("Authorization", "Bearer "+key)},
		{"header", config.TenantIdentification{Source: config.TenantHeader}, hdr("X-Tenant-Id", tid)},
		{"header read from the wire", config.TenantIdentification{Source: config.TenantHeader},
			rawHdr(t, "Accept: */*", "X-Tenant-Id: "+tid, "Cookie: a=b")},
		{"jwt", config.TenantIdentification{Source: config.TenantJWT, JWT: config.JWT{Algorithm: "HS256", Secret: testSecret}},
			hdr("Authorization", "Bearer "+hsToken(t, testSecret, jwt.MapClaims{"tenant_id": tid}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestResolver(t, tt.cfg, rdb)
			ctx := context.Background()
			if got, err := r.Resolve(ctx, tt.header); err != nil || got != tid {
				t.Fatalf("warm-up: got %q, %v", got, err)
			}
			var got string
			var err error
			allocs := testing.AllocsPerRun(200, func() {
				got, err = r.Resolve(ctx, tt.header)
			})
			if err != nil || got != tid {
				t.Fatalf("got %q, %v", got, err)
			}
			if allocs != 0 {
				t.Fatalf("cache hit allocates %.1f times per call, want 0", allocs)
			}
		})
	}
}

func BenchmarkResolveAPIKey(b *testing.B) {
	rdb := testRedis(b)
	tid := createTenant(b, rdb)
	key := issueTestKey(b, rdb, tid)
	r := newTestResolver(b, apiKeyCfg, rdb)
	h := hdr("Authorization", "Bearer "+key)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolveHeader(b *testing.B) {
	rdb := testRedis(b)
	tid := createTenant(b, rdb)
	r := newTestResolver(b, config.TenantIdentification{Source: config.TenantHeader}, rdb)
	h := hdr("X-Tenant-Id", tid)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}
