package config

import (
	"strings"
	"testing"
)

func TestParseProcs(t *testing.T) {
	cases := []struct {
		name, file, env string
		want            Procs
		err             string
	}{
		{name: "default", want: ProcsAll},
		{name: "all, any case", file: "All", want: ProcsAll},
		{name: "count", file: "3", want: 3},
		{name: "quoted count", file: `"2"`, want: 2},
		{name: "env wins", file: "all", env: "4", want: 4},
		{name: "env all", file: "2", env: "all", want: ProcsAll},
		{name: "zero", file: "0", err: `t.yaml: procs: expected all or a whole number from 1 to 1024, got "0"`},
		{name: "negative", file: "-1", err: `procs: expected all or a whole number from 1 to 1024, got "-1"`},
		{name: "too many", file: "1025", err: `got "1025"`},
		{name: "fraction", file: "1.5", err: `got "1.5"`},
		{name: "word", file: "auto", err: `got "auto"`},
		{name: "list", file: "[1]", err: "procs: expected a string, got a list"},
		{name: "bad env", env: "lots", err: `t.yaml: env TOLLGATE_PROCS: expected all or a whole number from 1 to 1024, got "lots"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := parseSetting(t, "procs", tc.file, EnvProcs, tc.env, tc.err)
			if c != nil && c.Procs != tc.want {
				t.Errorf("Procs = %v, want %v", c.Procs, tc.want)
			}
		})
	}
}

// parseSetting parses validBase with "key: file" added (when file is not
// empty) and envName set to env. With wantErr it checks that the error
// contains it and returns nil.
func parseSetting(t *testing.T, key, file, envName, env, wantErr string) *Config {
	t.Helper()
	text := validBase
	if file != "" {
		text += key + ": " + file + "\n"
	}
	c, err := Parse("t.yaml", []byte(text), func(k string) string {
		if k == envName {
			return env
		}
		return ""
	})
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("err = %v, want it to contain %q", err, wantErr)
		}
		return nil
	}
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestProcsFor(t *testing.T) {
	cases := []struct {
		p       Procs
		current int
		want    int
		set     bool
	}{
		{ProcsAll, 8, 8, false},
		{ProcsAll, 1, 1, false},
		{Procs(2), 8, 2, true},
		{Procs(8), 8, 8, false},
		{Procs(16), 2, 16, true},
	}
	for _, tc := range cases {
		n, set := tc.p.For(tc.current)
		if n != tc.want || set != tc.set {
			t.Errorf("%v.For(%d) = %d, %v; want %d, %v", tc.p, tc.current, n, set, tc.want, tc.set)
		}
	}
}

// FuzzProcs checks the procs value parser (file and TOLLGATE_PROCS): an
// accepted value is "all" or a count in range and reads back as itself,
// and the GOMAXPROCS it yields is always at least 1.
func FuzzProcs(f *testing.F) {
	for _, s := range []string{"all", "ALL", " 2 ", "1", "1024", "1025", "0", "-1", "+3", "0x10", "1e3", "auto", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		norm, msg := checkProcs(s)
		if msg != "" {
			if norm != "" {
				t.Fatalf("checkProcs(%q) = %q with error %q", s, norm, msg)
			}
			return
		}
		p := procsValue(norm)
		if p.String() != norm {
			t.Fatalf("checkProcs(%q) = %q, reads back as %q", s, norm, p.String())
		}
		if p < 0 || p > maxProcs {
			t.Fatalf("checkProcs(%q) accepted %d", s, p)
		}
		if n, _ := p.For(1); n < 1 {
			t.Fatalf("%v.For(1) = %d", p, n)
		}
	})
}
