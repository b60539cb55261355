package tenant

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

const (
	keyPrefix    = "tg_"
	keyBodyLen   = 40
	keyLen       = len(keyPrefix) + keyBodyLen
	maxTenantID  = 64
	maxJWTLen    = 8 << 10
	bearerScheme = "bearer"
)

// singleValue returns the value of header name in h, nil when it is absent.
// A header sent more than once is ErrRepeated, whatever the values: a front
// proxy that adds its X-Tenant-Id (or Authorization) line instead of
// replacing the client's leaves two, and Tollgate reading the first while an
// upstream reads the last would meter one tenant and serve another.
//
// PeekAll counts every line, trailer fields included, in the header's own
// scratch slice: it allocates only until that has grown, never on a reused
// (pooled) request.
func singleValue(h *fasthttp.RequestHeader, name string) ([]byte, error) {
	vs := h.PeekAll(name)
	switch len(vs) {
	case 0:
		return nil, nil
	case 1:
		return vs[0], nil
	}
	return nil, ErrRepeated
}

// parseBearer returns the credential of an "Authorization: Bearer <cred>"
// value. A value with no credential at all is ErrMissing; anything else that
// is not a single bearer credential is ErrInvalid. The result aliases v.
func parseBearer(v []byte) ([]byte, error) {
	v = trimSpace(v)
	if len(v) == 0 {
		return nil, ErrMissing
	}
	if len(v) < len(bearerScheme) || !bytes.EqualFold(v[:len(bearerScheme)], []byte(bearerScheme)) {
		return nil, ErrInvalid
	}
	rest := v[len(bearerScheme):]
	if len(rest) == 0 {
		// "Bearer" alone: the client meant to send a credential but sent none.
		return nil, ErrMissing
	}
	if !isSpace(rest[0]) {
		// e.g. "Bearerx", a different scheme.
		return nil, ErrInvalid
	}
	cred := trimSpace(rest)
	if len(cred) == 0 {
		return nil, ErrMissing
	}
	for _, c := range cred {
		if isSpace(c) {
			return nil, ErrInvalid
		}
	}
	return cred, nil
}

// parseAPIKey returns the well-formed Tollgate key of a bearer header value.
// Anything that cannot be an issued key is rejected here so garbage never
// reaches Redis or the cache.
func parseAPIKey(v []byte) ([]byte, error) {
	cred, err := parseBearer(v)
	if err != nil {
		return nil, err
	}
	if !wellFormedKey(cred) {
		return nil, ErrInvalid
	}
	return cred, nil
}

// wellFormedKey accepts "tg_" + 40 characters of [0-9a-z]: the union of
// lower-case base32 (what IssueKey emits) and lower-case hex, so keys minted
// either way by other tools are recognised.
func wellFormedKey[T string | []byte](k T) bool {
	if len(k) != keyLen || string(k[:len(keyPrefix)]) != keyPrefix {
		return false
	}
	for i := len(keyPrefix); i < len(k); i++ {
		c := k[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

// headerTenantID returns the tenant id carried by a trusted header value.
func headerTenantID(v []byte) ([]byte, error) {
	if len(v) == 0 {
		return nil, ErrMissing
	}
	if !validTenantID(v) {
		return nil, ErrInvalid
	}
	return v, nil
}

// validTenantID accepts 1–64 characters of [A-Za-z0-9_.-]. Braces are
// excluded on purpose: the id sits inside a Redis Cluster hash tag.
func validTenantID[T string | []byte](id T) bool {
	if len(id) == 0 || len(id) > maxTenantID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// validHashHex accepts a lower-case hex SHA-256, the form stored in Redis.
func validHashHex(h string) bool {
	if len(h) != hashHexLen {
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

// plausibleJWT is a cheap filter run before any signature work: three
// base64url segments and a sane length.
func plausibleJWT(t []byte) bool {
	if len(t) > maxJWTLen {
		return false
	}
	dots := 0
	for _, c := range t {
		switch {
		case c == '.':
			dots++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func trimSpace(v []byte) []byte {
	for len(v) > 0 && isSpace(v[0]) {
		v = v[1:]
	}
	for len(v) > 0 && isSpace(v[len(v)-1]) {
		v = v[:len(v)-1]
	}
	return v
}
