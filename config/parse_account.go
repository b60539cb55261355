package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// mountRE accepts absolute paths of plain segments: no empty, dot or
// percent-encoded segments, so what the proxy compares with is exactly what
// the operator wrote.
var mountRE = regexp.MustCompile(`^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+$`)

const mountExpect = "a path prefix such as /api/v1/billing (not /, no empty, . or .. segments)"

func (p *parser) account(n *yaml.Node) {
	o := p.object(n, "account", "mounts", "dashboard_jwt")
	a := &p.cfg.Account
	seen := map[string]bool{}
	for i, m := range p.list(o.get("mounts"), "account.mounts") {
		key := index("account.mounts", i)
		s, ok := p.str(m, key, mountExpect)
		if !ok {
			if isNull(m) {
				p.add(key, "expected %s, got nothing", mountExpect)
			}
			continue
		}
		if len(s) > 1 {
			s = strings.TrimSuffix(s, "/")
		}
		switch {
		case !mountRE.MatchString(s) || strings.Contains(s, "/./") || strings.HasSuffix(s, "/.") ||
			strings.Contains(s, "/../") || strings.HasSuffix(s, "/.."):
			p.add(key, "expected %s, got %s", mountExpect, quote(s))
		case seen[s]:
			p.add(key, "duplicate mount %s", quote(s))
		default:
			seen[s] = true
			a.Mounts = append(a.Mounts, s)
		}
	}
	if !isNull(o.get("dashboard_jwt")) {
		a.DashboardJWT = p.dashboardJWT(o.get("dashboard_jwt"))
	}
}

// dashboardJWT reads account.dashboard_jwt. It mirrors tenant.jwt except
// for the claim, which lists tenants instead of naming one.
func (p *parser) dashboardJWT(n *yaml.Node) *JWT {
	const base = "account.dashboard_jwt"
	o := p.object(n, base, "algorithm", "secret_env", "public_key_file", "tenants_claim", "issuer", "audience")
	j := &JWT{Claim: "tenants"}
	const algExpect = "HS256 or RS256"
	alg, ok := p.str(o.get("algorithm"), base+".algorithm", algExpect)
	switch {
	case !ok && isNull(o.get("algorithm")):
		p.add(base+".algorithm", "missing; expected %s", algExpect)
	case ok && alg != "HS256" && alg != "RS256":
		p.add(base+".algorithm", "expected %s, got %s", algExpect, quote(alg))
	case ok:
		j.Algorithm = alg
	}
	if c, ok := p.str(o.get("tenants_claim"), base+".tenants_claim", "a claim name"); ok {
		if c == "" {
			p.add(base+".tenants_claim", "expected a claim name, got \"\"")
		} else {
			j.Claim = c
		}
	}
	j.Issuer, _ = p.str(o.get("issuer"), base+".issuer", "a string")
	j.Audience, _ = p.str(o.get("audience"), base+".audience", "a string")

	secretEnv, hasSecret := p.str(o.get("secret_env"), base+".secret_env", envNameExpect)
	keyFile, hasKey := p.str(o.get("public_key_file"), base+".public_key_file", "a file path")
	switch j.Algorithm {
	case "HS256":
		if hasKey {
			p.add(base+".public_key_file", "only for RS256; HS256 uses secret_env")
		}
		switch {
		case !hasSecret && isNull(o.get("secret_env")):
			p.add(base+".secret_env", "missing; HS256 needs the name of an environment variable holding the secret")
		case !hasSecret:
		case !envNameRE.MatchString(secretEnv):
			p.add(base+".secret_env", "expected %s, got %s", envNameExpect, quote(secretEnv))
		case p.env(secretEnv) == "":
			p.add(base+".secret_env", "environment variable %s is empty or unset; it must hold the HS256 secret", secretEnv)
		default:
			j.Secret = []byte(p.env(secretEnv))
		}
	case "RS256":
		if hasSecret {
			p.add(base+".secret_env", "only for HS256; RS256 uses public_key_file")
		}
		switch {
		case !hasKey && isNull(o.get("public_key_file")):
			p.add(base+".public_key_file", "missing; RS256 needs a PEM public key file")
		case hasKey:
			j.PublicKeyPEM = p.readPublicKey(base+".public_key_file", keyFile)
		}
	}
	return j
}

// readPublicKey is publicKey for another key: a relative path is relative
// to the configuration file.
func (p *parser) readPublicKey(key, path string) []byte {
	if path == "" {
		p.add(key, "expected a file path, got \"\"")
		return nil
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.dir, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		p.add(key, "cannot read the public key: %v", err)
		return nil
	}
	if !isRSAPublicKeyPEM(data) {
		p.add(key, "expected a PEM-encoded RSA public key (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY) in %s", path)
		return nil
	}
	return data
}
