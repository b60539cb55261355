package account

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
)

var (
	errNoCredential  = errors.New("no credential")
	errBadCredential = errors.New("malformed credential")
)

const (
	bearerScheme = "bearer"
	apiKeyPrefix = "tg_"
	apiKeyLen    = len(apiKeyPrefix) + 40
	maxJWTLen    = 8 << 10
	maxTenantID  = 64
)

// parseBearer returns the credential of an "Authorization: Bearer <cred>"
// value: errNoCredential when there is none, errBadCredential for any other
// scheme or a credential with spaces in it.
func parseBearer(v string) (string, error) {
	v = strings.Trim(v, " \t")
	if v == "" {
		return "", errNoCredential
	}
	if len(v) < len(bearerScheme) || !strings.EqualFold(v[:len(bearerScheme)], bearerScheme) {
		return "", errBadCredential
	}
	rest := v[len(bearerScheme):]
	if rest == "" {
		return "", errNoCredential
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", errBadCredential // "Bearerx …" is another scheme
	}
	cred := strings.Trim(rest, " \t")
	if cred == "" {
		return "", errNoCredential
	}
	if strings.ContainsAny(cred, " \t") {
		return "", errBadCredential
	}
	return cred, nil
}

// isAPIKey accepts what billing and tenant mint: "tg_" and 40 characters
// of [0-9a-z].
func isAPIKey(s string) bool {
	if len(s) != apiKeyLen || !strings.HasPrefix(s, apiKeyPrefix) {
		return false
	}
	for i := len(apiKeyPrefix); i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

// plausibleJWT is a cheap filter before any signature work: three
// base64url segments and a sane length.
func plausibleJWT(s string) bool {
	if len(s) > maxJWTLen {
		return false
	}
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// validTenantID is the tenant package's rule: 1–64 of [A-Za-z0-9_.-].
func validTenantID(id string) bool {
	if id == "" || len(id) > maxTenantID {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// Invoice list bounds (seed 001: limit defaults to 10).
const (
	defaultInvoiceLimit = 10
	maxInvoiceLimit     = 100
)

var invoiceStatuses = []string{"paid", "open", "void"}

type invoiceQuery struct {
	limit  int
	status string // "" for all
}

// parseInvoiceQuery reads ?limit=&status= from a raw query string. Other
// parameters are ignored; a repeated or malformed one is an error naming
// it.
func parseInvoiceQuery(raw string) (invoiceQuery, *apiError) {
	q := invoiceQuery{limit: defaultInvoiceLimit}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return q, errInvalidRequest("The query string is malformed.")
	}
	if v, ok := vals["limit"]; ok {
		if len(v) != 1 {
			return q, errInvalidRequest("limit must be given once.")
		}
		n, ok := smallInt(v[0])
		if !ok || n < 1 || n > maxInvoiceLimit {
			return q, errInvalidRequest("limit must be a whole number from 1 to " + strconv.Itoa(maxInvoiceLimit) + ".")
		}
		q.limit = n
	}
	if v, ok := vals["status"]; ok {
		if len(v) != 1 {
			return q, errInvalidRequest("status must be given once.")
		}
		switch v[0] {
		case "paid", "open", "void":
			q.status = v[0]
		default:
			return q, errInvalidRequest("status must be one of " + strings.Join(invoiceStatuses, ", ") + ".")
		}
	}
	return q, nil
}

// smallInt parses 1 to 4 decimal digits: no sign, no spaces, no overflow.
func smallInt(s string) (int, bool) {
	if s == "" || len(s) > 4 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
