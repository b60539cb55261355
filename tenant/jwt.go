package tenant

import (
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tollgate/tollgate/config"
)

const defaultClaim = "tenant_id"

// jwtVerifier checks tokens with exactly one configured algorithm and key.
// Verification allocates (base64, JSON, big-number maths for RS256); the
// Resolver therefore caches verified tokens so repeat requests skip it.
type jwtVerifier struct {
	parser *jwt.Parser
	key    any
	claim  string
}

func newJWTVerifier(cfg config.JWT) (*jwtVerifier, error) {
	v := &jwtVerifier{claim: cfg.Claim}
	if v.claim == "" {
		v.claim = defaultClaim
	}
	switch cfg.Algorithm {
	case "HS256":
		if len(cfg.Secret) == 0 {
			return nil, errors.New("jwt: HS256 needs a secret")
		}
		v.key = cfg.Secret
	case "RS256":
		pub, err := jwt.ParseRSAPublicKeyFromPEM(cfg.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("jwt: RS256 public key: %w", err)
		}
		v.key = pub
	default:
		return nil, fmt.Errorf("jwt: unsupported algorithm %q (want HS256 or RS256)", cfg.Algorithm)
	}
	// Pinning the method is what stops "alg: none" and the HS256-with-the-
	// RSA-public-key confusion attack.
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{cfg.Algorithm})}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// verify checks tok's signature and claims (exp and nbf when present, iss and
// aud when configured) and returns the tenant claim and the expiry in unix
// nanos (0 when the token has none). Every failure is ErrInvalid.
func (v *jwtVerifier) verify(tok string) (string, int64, error) {
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return v.key, nil })
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	raw, ok := claims[v.claim]
	if !ok {
		return "", 0, fmt.Errorf("%w: claim %q missing", ErrInvalid, v.claim)
	}
	tid, ok := raw.(string)
	if !ok || !validTenantID(tid) {
		return "", 0, fmt.Errorf("%w: claim %q is not a valid tenant id", ErrInvalid, v.claim)
	}
	var exp int64
	if t, err := claims.GetExpirationTime(); err == nil && t != nil {
		exp = t.UnixNano()
	}
	return tid, exp, nil
}
