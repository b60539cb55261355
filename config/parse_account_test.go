package config

import (
	"slices"
	"strings"
	"testing"
)

func TestParseAccount(t *testing.T) {
	env := map[string]string{"DASH_SECRET": "s3cret"}
	cases := []struct {
		name    string
		account string
		mounts  []string
		jwt     *JWT
	}{
		{"absent", "", nil, nil},
		{"mounts only", "account:\n  mounts: [/api/v1/billing, /billing/, /v1/workspace]\n",
			[]string{"/api/v1/billing", "/billing", "/v1/workspace"}, nil},
		{"hs256 default claim", "account:\n  dashboard_jwt: {algorithm: HS256, secret_env: DASH_SECRET}\n",
			nil, &JWT{Algorithm: "HS256", Claim: "tenants", Secret: []byte("s3cret")}},
		{"hs256 custom claim", "account:\n  dashboard_jwt: {algorithm: HS256, secret_env: DASH_SECRET, tenants_claim: orgs, issuer: dash}\n",
			nil, &JWT{Algorithm: "HS256", Claim: "orgs", Secret: []byte("s3cret"), Issuer: "dash"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := validBase + c.account
			cfg, err := Parse("t.yaml", []byte(src), func(k string) string { return env[k] })
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !slices.Equal(cfg.Account.Mounts, c.mounts) {
				t.Errorf("mounts = %q, want %q", cfg.Account.Mounts, c.mounts)
			}
			got := cfg.Account.DashboardJWT
			switch {
			case (got == nil) != (c.jwt == nil):
				t.Fatalf("dashboard jwt = %+v, want %+v", got, c.jwt)
			case got != nil && (got.Algorithm != c.jwt.Algorithm || got.Claim != c.jwt.Claim ||
				string(got.Secret) != string(c.jwt.Secret) || got.Issuer != c.jwt.Issuer):
				t.Fatalf("dashboard jwt = %+v, want %+v", got, c.jwt)
			}
		})
	}
}

func TestParseAccountRS256(t *testing.T) {
	src := validBase + "account:\n  dashboard_jwt: {algorithm: RS256, public_key_file: keys/jwt.pem}\n"
	cfg, err := Parse("testdata/t.yaml", []byte(src), nil)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if j := cfg.Account.DashboardJWT; j == nil || len(j.PublicKeyPEM) == 0 {
		t.Fatalf("dashboard jwt = %+v, want the PEM key", j)
	}
}

func TestInvalidAccount(t *testing.T) {
	cases := []struct {
		name, account, want string
	}{
		{"not a mapping", "account: [x]", `account: expected a mapping, got a list`},
		{"unknown key", "account: {mount: [/x]}", `account.mount: unknown key`},
		{"relative mount", "account: {mounts: [billing]}", `account.mounts[0]: expected a path prefix`},
		{"root mount", "account: {mounts: [/]}", `account.mounts[0]: expected a path prefix`},
		{"dot segment", "account: {mounts: [/a/../b]}", `account.mounts[0]: expected a path prefix`},
		{"double slash", "account: {mounts: [/a//b]}", `account.mounts[0]: expected a path prefix`},
		{"query", "account: {mounts: ['/a?b']}", `account.mounts[0]: expected a path prefix`},
		{"null mount", "account: {mounts: [~]}", `account.mounts[0]: expected a path prefix`},
		{"duplicate", "account: {mounts: [/a, /a]}", `account.mounts[1]: duplicate mount "/a"`},
		{"mounts not a list", "account: {mounts: /a}", `account.mounts: expected a list`},
		{"no algorithm", "account: {dashboard_jwt: {secret_env: X}}", `account.dashboard_jwt.algorithm: missing`},
		{"bad algorithm", "account: {dashboard_jwt: {algorithm: none}}", `account.dashboard_jwt.algorithm: expected HS256 or RS256`},
		{"no secret", "account: {dashboard_jwt: {algorithm: HS256}}", `account.dashboard_jwt.secret_env: missing`},
		{"unset secret", "account: {dashboard_jwt: {algorithm: HS256, secret_env: NOPE}}", `environment variable NOPE is empty or unset`},
		{"key for hs256", "account: {dashboard_jwt: {algorithm: HS256, secret_env: S, public_key_file: k.pem}}", `account.dashboard_jwt.public_key_file: only for RS256`},
		{"no key", "account: {dashboard_jwt: {algorithm: RS256}}", `account.dashboard_jwt.public_key_file: missing`},
		{"missing key file", "account: {dashboard_jwt: {algorithm: RS256, public_key_file: nope.pem}}", `cannot read the public key`},
		{"empty claim", "account: {dashboard_jwt: {algorithm: HS256, secret_env: S, tenants_claim: ''}}", `account.dashboard_jwt.tenants_claim: expected a claim name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(validBase+c.account+"\n"), func(k string) string {
				if k == "S" {
					return "secret"
				}
				return ""
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}
