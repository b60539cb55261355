package proxy

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
)

// FuzzParseAmountHeader: an upstream's usage header is charged only when it
// is a plain non-negative decimal that fits; anything else charges nothing
// and is reported, and nothing panics.
func FuzzParseAmountHeader(f *testing.F) {
	for _, s := range []string{"", "0", "42", "-1", "1e3", " 7", "9223372036854775807", "99999999999999999999", "12a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, bad := parseAmountHeader([]byte(s))
		want, err := strconv.ParseUint(s, 10, 62)
		switch {
		case s == "":
			if n != 0 || bad {
				t.Fatalf("empty header: %d, bad=%v", n, bad)
			}
		case err == nil && !strings.HasPrefix(s, "+"):
			if bad || n != int64(want) {
				t.Fatalf("%q: got %d bad=%v, want %d", s, n, bad, want)
			}
		default:
			// Not a uint62: either refused, or a run of digits just past
			// 2^62 that the parser's own overflow guard still admits.
			if n < 0 || (!bad && strings.Trim(s, "0123456789") != "") {
				t.Fatalf("%q: got %d bad=%v", s, n, bad)
			}
		}
	})
}

// FuzzMessageTemplate: any configured message renders without panicking,
// known placeholders are substituted and the text around them is kept.
func FuzzMessageTemplate(f *testing.F) {
	for _, s := range []string{
		"Upgrade to add more agents. Current plan allows {limit} agents.",
		"Monthly message limit of {limit} reached. Upgrade your plan.",
		"{plan}{feature}{current}{limit}", "{", "}", "{{limit}}", "{unknown}", "",
	} {
		f.Add(s)
	}
	d := &quota.Decision{Feature: &config.Feature{Name: "agents"}, PlanName: "Mini", Current: 2, Limit: 2}
	f.Fuzz(func(t *testing.T, s string) {
		got := parseMessage(s).render(d)
		want := strings.NewReplacer("{limit}", "2", "{current}", "2", "{plan}", "Mini", "{feature}", "agents").Replace(s)
		if got != want {
			t.Fatalf("render(%q) = %q, want %q", s, got, want)
		}
	})
}

// FuzzOriginPath: the path matched for a request-target starting with "//"
// is the one fasthttp gives the same target with its leading slashes made
// one (which fasthttp parses as origin-form whatever follows), so "//"
// changes nothing but the duplicate slash; and it is a normalised path.
// Serve takes fasthttp's own path for a target with one leading slash,
// which is the same, with a Host header or without.
func FuzzOriginPath(f *testing.F) {
	for _, s := range []string{
		"//api/v1/messages?next=x://", "//api/v1/x:///../messages", "//", "///a//b/./c/../d#f?q",
		"//%2F%2Fapi/v1/%6Dessages", "//a?b/c", "//a#b", "//..", "//a/%2E%2E/b", "//a/b/.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		if !strings.HasPrefix(target, "//") {
			target = "//" + target
		}
		var u, ref fasthttp.URI
		got := originPath(&u, []byte(target))
		if err := ref.Parse([]byte("example.com"), []byte("/"+strings.TrimLeft(target, "/"))); err != nil {
			return // control bytes: the server refuses the request
		}
		if want := ref.Path(); !bytes.Equal(got, want) {
			t.Fatalf("originPath(%q) = %q, fasthttp's path of the one-slash target %q", target, got, want)
		}
		if len(got) == 0 || got[0] != '/' || bytes.Contains(got, []byte("//")) {
			t.Fatalf("originPath(%q) = %q, not a normalised path", target, got)
		}
		one := "/" + strings.TrimLeft(target, "/")
		var noHost fasthttp.URI
		if err := noHost.Parse(nil, []byte(one)); err == nil && !bytes.Equal(noHost.Path(), ref.Path()) {
			t.Fatalf("fasthttp's path of %q is %q without a Host, %q with one", one, noHost.Path(), ref.Path())
		}
	})
}
