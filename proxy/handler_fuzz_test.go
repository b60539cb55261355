package proxy

import (
	"strconv"
	"strings"
	"testing"

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
