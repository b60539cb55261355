package tenant

import (
	"bufio"
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

const goodKey = "tg_abcdefghijklmnopqrstuvwxyz234567abcdefgh"

func TestParseBearer(t *testing.T) {
	tests := []struct {
		name, in, want string
		err            error
	}{
		{"plain", "Bearer abc", "abc", nil},
		{"lower scheme", "bearer abc", "abc", nil},
		{"upper scheme", "BEARER abc", "abc", nil},
		{"extra spaces", "  Bearer \t abc  ", "abc", nil},
		{"empty", "", "", ErrMissing},
		{"blank", "   ", "", ErrMissing},
		{"scheme only", "Bearer", "", ErrMissing},
		{"scheme and space", "Bearer   ", "", ErrMissing},
		{"basic", "Basic dXNlcjpwYXNz", "", ErrInvalid},
		{"no scheme", goodKey, "", ErrInvalid},
		{"glued", "Bearerabc", "", ErrInvalid},
		{"two tokens", "Bearer abc def", "", ErrInvalid},
		{"short", "Bear", "", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBearer([]byte(tt.in))
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if string(got) != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseAPIKey(t *testing.T) {
	tests := []struct {
		name, in string
		err      error
	}{
		{"good", "Bearer " + goodKey, nil},
		{"hex body", "Bearer tg_" + strings.Repeat("0123456789", 4), nil},
		{"missing", "", ErrMissing},
		{"wrong scheme", "Token " + goodKey, ErrInvalid},
		{"upper case body", "Bearer " + strings.ToUpper(goodKey), ErrInvalid},
		{"wrong prefix", "Bearer tk_" + goodKey[3:], ErrInvalid},
		{"short", "Bearer " + goodKey[:len(goodKey)-1], ErrInvalid},
		{"long", "Bearer " + goodKey + "a", ErrInvalid},
		{"symbol", "Bearer " + goodKey[:len(goodKey)-1] + "-", ErrInvalid},
		{"jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAPIKey([]byte(tt.in))
			if tt.err == nil {
				if err != nil || !wellFormedKey(got) {
					t.Fatalf("got %q, %v; want a key", got, err)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestHeaderTenantID(t *testing.T) {
	tests := []struct {
		name, in string
		err      error
	}{
		{"simple", "ten_0123abcd", nil},
		{"all classes", "Az09_.-", nil},
		{"max length", strings.Repeat("a", 64), nil},
		{"empty", "", ErrMissing},
		{"too long", strings.Repeat("a", 65), ErrInvalid},
		{"brace", "a{b}", ErrInvalid},
		{"colon", "a:b", ErrInvalid},
		{"space", "a b", ErrInvalid},
		{"unicode", "tenant\u00e9", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := headerTenantID([]byte(tt.in))
			if tt.err == nil {
				if err != nil || string(got) != tt.in {
					t.Fatalf("got %q, %v; want %q", got, err, tt.in)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestPlausibleJWT(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnRfaWQiOiJ4In0.c2ln", true},
		{"a.b", false},
		{"a.b.c.d", false},
		{"a.b.c=", false},
		{strings.Repeat("a", maxJWTLen) + "..", false},
	}
	for _, tt := range tests {
		if got := plausibleJWT([]byte(tt.in)); got != tt.want {
			t.Errorf("plausibleJWT(%.20q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// FuzzParseBearer: the parser never panics, only ever fails with ErrMissing
// or ErrInvalid, and never hands out a key that is not well-formed.
func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"", "Bearer " + goodKey, "bearer\t" + goodKey + " ", "Bearer", "Basic x", "Bearer tg_"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		cred, err := parseBearer(in)
		if err != nil {
			if !errors.Is(err, ErrMissing) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseBearer(%q): unexpected error %v", in, err)
			}
		} else if len(cred) == 0 || bytes.ContainsAny(cred, " \t") {
			t.Fatalf("parseBearer(%q) = %q: empty or contains blanks", in, cred)
		}
		key, err := parseAPIKey(in)
		if err == nil && !wellFormedKey(key) {
			t.Fatalf("parseAPIKey(%q) = %q: not a well-formed key", in, key)
		}
		if err != nil && !errors.Is(err, ErrMissing) && !errors.Is(err, ErrInvalid) {
			t.Fatalf("parseAPIKey(%q): unexpected error %v", in, err)
		}
		if !bytes.Equal(in, orig) {
			t.Fatalf("input modified")
		}
	})
}

var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// FuzzHeaderTenantID checks the hand-written validator against a regular
// expression of the same rule.
func FuzzHeaderTenantID(f *testing.F) {
	for _, s := range []string{"", "ten_1", "a{b}", strings.Repeat("x", 64), strings.Repeat("x", 65), "é"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := headerTenantID(in)
		want := tenantIDPattern.Match(in)
		if (err == nil) != want {
			t.Fatalf("headerTenantID(%q) err = %v, regexp says valid=%v", in, err, want)
		}
		if err == nil && !bytes.Equal(got, in) {
			t.Fatalf("headerTenantID(%q) = %q", in, got)
		}
		if len(in) == 0 && !errors.Is(err, ErrMissing) {
			t.Fatalf("empty value: err = %v, want ErrMissing", err)
		}
	})
}

// FuzzSingleValue reads a header block the way the server does and checks
// singleValue against a count of its lines naming X-Tenant-Id in any case:
// no line is nil, one is that line's value, more than one is ErrRepeated,
// so no line an upstream could read as the header goes unseen.
func FuzzSingleValue(f *testing.F) {
	for _, s := range []string{
		"X-Tenant-Id: acme\r\n",
		"X-Tenant-Id: evil\r\nX-Tenant-Id: acme\r\n",
		"x-tenant-id: evil\r\nAccept: */*\r\nX-TENANT-ID: acme\r\n",
		"X-Tenant-Id:\r\nX-Tenant-Id: acme\r\n",
		"X-Tenant-Id: a, b\r\n",
		"X-Tenant-Ids: evil\r\nX-Tenant-Id: acme\r\n",
		"Accept: */*\r\n",
		"X-Tenant-Id: a\r\n b\r\n",            // obsolete line folding: one value
		"Accept: x\r\n X-Tenant-Id: evil\r\n", // folded into Accept: no line of ours
	} {
		f.Add([]byte(s))
	}
	const name = "X-Tenant-Id"
	f.Fuzz(func(t *testing.T, block []byte) {
		raw := "GET / HTTP/1.1\r\nHost: example.com\r\n" + string(block) + "\r\n"
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return // the server answers 400 itself; Resolve never sees it
		}
		var lines []string
		ours := false // the last header line was one of name's
		for _, l := range strings.Split(string(block), "\n") {
			l = strings.TrimSuffix(l, "\r")
			if l == "" {
				break // the end of the header; the rest is body
			}
			if l[0] == ' ' || l[0] == '\t' {
				// An obsolete line folding: it continues the line before.
				if ours {
					lines[len(lines)-1] = strings.Trim(lines[len(lines)-1]+" "+strings.Trim(l, " \t"), " \t")
				}
				continue
			}
			k, v, ok := strings.Cut(l, ":")
			ours = ok && strings.EqualFold(k, name)
			if ours {
				lines = append(lines, strings.Trim(v, " \t"))
			}
		}
		v, err := singleValue(&h, name)
		switch {
		case len(lines) == 0 && (err != nil || v != nil):
			t.Fatalf("%q: no %s line, got %q, %v", block, name, v, err)
		case len(lines) == 1 && (err != nil || string(v) != lines[0]):
			t.Fatalf("%q: one %s line %q, got %q, %v", block, name, lines[0], v, err)
		case len(lines) > 1 && !errors.Is(err, ErrRepeated):
			t.Fatalf("%q: %d %s lines, got %q, %v", block, len(lines), name, v, err)
		}
	})
}
