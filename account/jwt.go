package account

import (
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tollgate/tollgate/config"
)

// dashboardVerifier checks dashboard tokens and returns the tenants they
// may act for.
type dashboardVerifier struct {
	parser *jwt.Parser
	key    any
	claim  string
}

func newDashboardVerifier(c *config.JWT) (*dashboardVerifier, error) {
	v := &dashboardVerifier{claim: c.Claim}
	if v.claim == "" {
		v.claim = "tenants"
	}
	switch c.Algorithm {
	case "HS256":
		if len(c.Secret) == 0 {
			return nil, errors.New("dashboard jwt: HS256 needs a secret")
		}
		v.key = c.Secret
	case "RS256":
		pub, err := jwt.ParseRSAPublicKeyFromPEM(c.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("dashboard jwt: RS256 public key: %w", err)
		}
		v.key = pub
	default:
		return nil, fmt.Errorf("dashboard jwt: unsupported algorithm %q (want HS256 or RS256)", c.Algorithm)
	}
	// Pinning the one configured method is what stops "alg: none" and
	// HS256 signed with an RS256 public key.
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{c.Algorithm})}
	if c.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(c.Issuer))
	}
	if c.Audience != "" {
		opts = append(opts, jwt.WithAudience(c.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

var errTokenClaim = errors.New("tenants claim")

// verify checks the signature and the registered claims (exp and nbf when
// present, iss and aud when configured) and returns the tenant ids of the
// tenants claim: an array of strings or one string.
func (v *dashboardVerifier) verify(tok string) ([]string, error) {
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return v.key, nil }); err != nil {
		return nil, fmt.Errorf("verify dashboard token: %w", err)
	}
	switch raw := claims[v.claim].(type) {
	case string:
		if !validTenantID(raw) {
			return nil, fmt.Errorf("verify dashboard token: %w: %q is not a tenant id", errTokenClaim, v.claim)
		}
		return []string{raw}, nil
	case []any:
		out := make([]string, 0, len(raw))
		for _, e := range raw {
			s, ok := e.(string)
			if !ok || !validTenantID(s) {
				return nil, fmt.Errorf("verify dashboard token: %w: %q holds a value that is not a tenant id", errTokenClaim, v.claim)
			}
			out = append(out, s)
		}
		return out, nil
	case nil:
		return nil, fmt.Errorf("verify dashboard token: %w: %q missing", errTokenClaim, v.claim)
	default:
		return nil, fmt.Errorf("verify dashboard token: %w: %q is neither a string nor a list", errTokenClaim, v.claim)
	}
}
