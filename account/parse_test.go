package account

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/config"
)

const goodKey = "tg_abcdefghijklmnopqrstuvwxyz0123456789abcd"

func TestParseBearer(t *testing.T) {
	cases := []struct {
		in, want string
		err      error
	}{
		{"", "", errNoCredential},
		{"   ", "", errNoCredential},
		{"Bearer", "", errNoCredential},
		{"Bearer   ", "", errNoCredential},
		{"Bearer " + goodKey, goodKey, nil},
		{"bearer\t" + goodKey + " ", goodKey, nil},
		{"BEARER x.y.z", "x.y.z", nil},
		{"Bearerx abc", "", errBadCredential},
		{"Basic abc", "", errBadCredential},
		{"Bea", "", errBadCredential},
		{"Bearer a b", "", errBadCredential},
	}
	for _, c := range cases {
		got, err := parseBearer(c.in)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("parseBearer(%q) = %q, %v; want %q, %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestCredentialShapes(t *testing.T) {
	cases := []struct {
		in         string
		key, jwt   bool
		validTenID bool
	}{
		{goodKey, true, false, true},
		{strings.ToUpper(goodKey), false, false, true},
		{goodKey + "a", false, false, true},
		{"tg_" + strings.Repeat("0", 39) + "-", false, false, true},
		{"aaa.bbb.ccc", false, true, true},
		{"aaa.bbb", false, false, true},
		{"a+b.c.d", false, false, false},
		{"ten_1", false, false, true},
		{"", false, false, false},
		{"a{b}", false, false, false},
		{strings.Repeat("a", 65), false, false, false},
	}
	for _, c := range cases {
		if isAPIKey(c.in) != c.key || plausibleJWT(c.in) != c.jwt || validTenantID(c.in) != c.validTenID {
			t.Errorf("%q: key %v jwt %v tenant %v; want %v %v %v", c.in,
				isAPIKey(c.in), plausibleJWT(c.in), validTenantID(c.in), c.key, c.jwt, c.validTenID)
		}
	}
}

func TestParseInvoiceQuery(t *testing.T) {
	cases := []struct {
		raw    string
		limit  int
		status string
		names  string // the parameter a 400 names; "" when valid
	}{
		{"", 10, "", ""},
		{"limit=1", 1, "", ""},
		{"limit=100&status=void", 100, "void", ""},
		{"limit=0010", 10, "", ""},
		{"status=open&x=y", 10, "open", ""},
		{"limit=0", 0, "", "limit"},
		{"limit=101", 0, "", "limit"},
		{"limit=99999", 0, "", "limit"},
		{"limit=1e2", 0, "", "limit"},
		{"limit=+1", 0, "", "limit"},
		{"limit= 1", 0, "", "limit"},
		{"limit=1&limit=1", 0, "", "limit"},
		{"status=unpaid", 0, "", "status"},
		{"status=paid&status=paid", 0, "", "status"},
		{"status=%", 0, "", "query"},
	}
	for _, c := range cases {
		q, e := parseInvoiceQuery(c.raw)
		switch {
		case c.names == "" && (e != nil || q.limit != c.limit || q.status != c.status):
			t.Errorf("%q: %+v, %v; want limit %d status %q", c.raw, q, e, c.limit, c.status)
		case c.names != "" && (e == nil || e.status != http.StatusBadRequest || !strings.Contains(e.msg, c.names)):
			t.Errorf("%q: error %v, want a 400 naming %s", c.raw, e, c.names)
		}
	}
}

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"", "Bearer " + goodKey, "bearer  a.b.c ", "Basic x", "Bearer\ta\tb", "Bearerx", "\x00Bearer"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		cred, err := parseBearer(v)
		if err != nil {
			if cred != "" {
				t.Fatalf("error %v with credential %q", err, cred)
			}
			return
		}
		if cred == "" || strings.ContainsAny(cred, " \t") || !strings.Contains(v, cred) {
			t.Fatalf("parseBearer(%q) = %q", v, cred)
		}
		if isAPIKey(cred) && plausibleJWT(cred) {
			t.Fatalf("%q is both a key and a token", cred)
		}
	})
}

func FuzzParseInvoiceQuery(f *testing.F) {
	for _, s := range []string{"", "limit=5", "status=paid&limit=100", "limit=%zz", "limit=1&limit=2", "status=void;x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, e := parseInvoiceQuery(raw)
		if e != nil {
			if e.status != http.StatusBadRequest || e.code != "invalid_request" {
				t.Fatalf("%q: %v", raw, e)
			}
			return
		}
		if q.limit < 1 || q.limit > maxInvoiceLimit {
			t.Fatalf("%q: limit %d", raw, q.limit)
		}
		switch q.status {
		case "", "paid", "open", "void":
		default:
			t.Fatalf("%q: status %q", raw, q.status)
		}
	})
}

// The header checks before any store call: a fuzzed Authorization and
// X-Tenant-Id never panic and never authenticate without a store answer.
func FuzzAuthenticateHeaders(f *testing.F) {
	for _, s := range [][2]string{{"", ""}, {"Bearer a.b.c", "ten_1"}, {"Bearer x", "a{b}"}, {"Basic y", ""}} {
		f.Add(s[0], s[1])
	}
	v, err := newDashboardVerifier(&config.JWT{Algorithm: "HS256", Secret: []byte(jwtSecret)})
	if err != nil {
		f.Fatal(err)
	}
	a := &API{jwt: v}
	f.Fuzz(func(t *testing.T, authz, tenantID string) {
		cred, err := parseBearer(authz)
		if err == nil && isAPIKey(cred) {
			return // reaches the store: covered by the integration tests
		}
		r, rerr := http.NewRequest(http.MethodGet, "/subscription", nil)
		if rerr != nil {
			t.Fatal(rerr)
		}
		r.Header["Authorization"] = []string{authz}
		if tenantID != "" {
			r.Header["X-Tenant-Id"] = []string{tenantID}
		}
		for _, need := range []bool{true, false} {
			p, e := a.authenticate(r, need)
			if e == nil && (need || p.tenant.ID != "") {
				t.Fatalf("authenticated %q / %q without a store: %+v", authz, tenantID, p)
			}
		}
	})
}
