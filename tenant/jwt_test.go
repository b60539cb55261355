package tenant

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tollgate/tollgate/config"
)

var testSecret = []byte("tenant-test-secret-0123456789abcdef")

func hsToken(t testing.TB, secret []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func rsToken(t testing.TB, key *rsa.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// writePublicPEM writes key's public half the way an operator would provide
// public_key_file, and reads it back as config does.
func writePublicPEM(t testing.TB, key *rsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	path := filepath.Join(t.TempDir(), "jwt.pub.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatalf("write pem: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read pem: %v", err)
	}
	return b
}

func TestResolveJWTHS256(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	unknown := "ten_test_" + randHex(t, 8)
	cfg := config.TenantIdentification{Source: config.TenantJWT, JWT: config.JWT{
		Algorithm: "HS256", Secret: testSecret, Claim: "tenant_id", Issuer: "https://auth.example", Audience: "tollgate",
	}}
	r := newTestResolver(t, cfg, rdb)
	now := time.Now()
	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"tenant_id": tid, "iss": "https://auth.example", "aud": "tollgate", "exp": now.Add(time.Hour).Unix()}
		if mut != nil {
			mut(c)
		}
		return c
	}
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, value string
		want        string
		err         error
	}{
		{"valid", "Bearer " + hsToken(t, testSecret, claims(nil)), tid, nil},
		{"valid without exp", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { delete(c, "exp") })), tid, nil},
		{"missing header", "", "", ErrMissing},
		{"wrong scheme", "Basic " + hsToken(t, testSecret, claims(nil)), "", ErrInvalid},
		{"not a jwt", "Bearer " + goodKey, "", ErrInvalid},
		{"expired", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), "", ErrInvalid},
		{"not yet valid", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), "", ErrInvalid},
		{"wrong signature", "Bearer " + hsToken(t, []byte("some-other-secret-0123456789abcdef"), claims(nil)), "", ErrInvalid},
		{"alg none", "Bearer " + noneTok, "", ErrInvalid},
		{"missing claim", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { delete(c, "tenant_id") })), "", ErrInvalid},
		{"claim not a string", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { c["tenant_id"] = 42 })), "", ErrInvalid},
		{"claim not a tenant id", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { c["tenant_id"] = "a{b}" })), "", ErrInvalid},
		{"issuer mismatch", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), "", ErrInvalid},
		{"issuer missing", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { delete(c, "iss") })), "", ErrInvalid},
		{"audience mismatch", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { c["aud"] = []string{"billing"} })), "", ErrInvalid},
		{"unknown tenant", "Bearer " + hsToken(t, testSecret, claims(func(c jwt.MapClaims) { c["tenant_id"] = unknown })), "", ErrUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "Authorization"
			if tt.value == "" {
				name = ""
			}
			for i := range 2 { // the second call may come from the token cache
				got, err := r.Resolve(context.Background(), hdr(name, tt.value))
				if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
					t.Fatalf("call %d: got %q, %v; want %q, %v", i, got, err, tt.want, tt.err)
				}
			}
		})
	}
}

func TestResolveJWTRS256(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := writePublicPEM(t, key)
	cfg := config.TenantIdentification{Source: config.TenantJWT, JWT: config.JWT{Algorithm: "RS256", PublicKeyPEM: pubPEM, Claim: "org"}}
	r := newTestResolver(t, cfg, rdb)
	exp := time.Now().Add(time.Hour).Unix()

	tests := []struct {
		name, token string
		want        string
		err         error
	}{
		{"valid", rsToken(t, key, jwt.MapClaims{"org": tid, "exp": exp}), tid, nil},
		{"other key", rsToken(t, other, jwt.MapClaims{"org": tid, "exp": exp}), "", ErrInvalid},
		// The classic confusion attack: HS256 keyed with the public key.
		{"hs256 with public key", hsToken(t, pubPEM, jwt.MapClaims{"org": tid, "exp": exp}), "", ErrInvalid},
		{"default claim ignored", rsToken(t, key, jwt.MapClaims{"tenant_id": tid, "exp": exp}), "", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Resolve(context.Background(), hdr("Authorization", "Bearer "+tt.token))
			if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

// A cached token never outlives its exp, and the tenant behind a cached
// token is still subject to existence checks and invalidation.
func TestJWTTokenCache(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	r := newTestResolver(t, config.TenantIdentification{Source: config.TenantJWT, JWT: config.JWT{Algorithm: "HS256", Secret: testSecret}}, rdb)
	exp := time.Now().Add(10 * time.Second)
	tok := hsToken(t, testSecret, jwt.MapClaims{"tenant_id": tid, "exp": exp.Unix()})
	h := hdr("Authorization", "Bearer "+tok)
	if got, err := r.Resolve(context.Background(), h); err != nil || got != tid {
		t.Fatalf("got %q, %v", got, err)
	}
	if n := r.tokens.len(); n != 1 {
		t.Fatalf("token cache holds %d entries, want 1", n)
	}
	for i := range r.tokens.shards {
		for _, e := range r.tokens.shards[i].m {
			if e.expires > exp.UnixNano() {
				t.Fatalf("cached token expires at %d, after its exp %d", e.expires, exp.UnixNano())
			}
		}
	}
	// Delete the tenant and invalidate it: the cached token must not keep it
	// alive.
	rdb.Del(context.Background(), entKey(tid))
	if err := Invalidate(context.Background(), rdb, tid); err != nil {
		t.Fatal(err)
	}
	if !eventually(2*time.Second, func() bool {
		_, err := r.Resolve(context.Background(), h)
		return errors.Is(err, ErrUnknown)
	}) {
		t.Fatal("deleted tenant still resolves through a cached token")
	}
}
