package config

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"

	"gopkg.in/yaml.v3"
)

// headerNameRE is an HTTP token (RFC 9110 field-name).
var headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")

const headerExpect = "an HTTP header name such as X-Tenant-Id"

func (p *parser) tenant(n *yaml.Node) {
	o := p.object(n, "tenant", "source", "header", "jwt")
	t := &p.cfg.Tenant
	t.Source = TenantAPIKey
	const sourceExpect = "one of api_key, header, jwt"
	if s, ok := p.str(o.get("source"), "tenant.source", sourceExpect); ok {
		switch src := TenantSource(s); src {
		case TenantAPIKey, TenantHeader, TenantJWT:
			t.Source = src
		default:
			p.add("tenant.source", "expected %s, got %s", sourceExpect, quote(s))
		}
	}
	t.Header = "Authorization"
	if t.Source == TenantHeader {
		t.Header = "X-Tenant-Id"
	}
	if h, ok := p.str(o.get("header"), "tenant.header", headerExpect); ok {
		if headerNameRE.MatchString(h) {
			t.Header = h
		} else {
			p.add("tenant.header", "expected %s, got %s", headerExpect, quote(h))
		}
	}
	switch {
	case t.Source == TenantJWT && isNull(o.get("jwt")):
		p.add("tenant.jwt", "missing; required when tenant.source is jwt")
	case t.Source == TenantJWT:
		p.jwt(o.get("jwt"))
	case !isNull(o.get("jwt")):
		p.add("tenant.jwt", "only allowed when tenant.source is jwt (source is %s)", t.Source)
	}
}

func (p *parser) jwt(n *yaml.Node) {
	o := p.object(n, "tenant.jwt", "algorithm", "claim", "secret_env", "public_key_file", "issuer", "audience")
	j := &p.cfg.Tenant.JWT
	const algExpect = "HS256 or RS256"
	alg, ok := p.str(o.get("algorithm"), "tenant.jwt.algorithm", algExpect)
	switch {
	case !ok && isNull(o.get("algorithm")):
		p.add("tenant.jwt.algorithm", "missing; expected %s", algExpect)
	case ok && alg != "HS256" && alg != "RS256":
		p.add("tenant.jwt.algorithm", "expected %s, got %s", algExpect, quote(alg))
	case ok:
		j.Algorithm = alg
	}
	j.Claim = "tenant_id"
	if c, ok := p.str(o.get("claim"), "tenant.jwt.claim", "a claim name"); ok {
		if c == "" {
			p.add("tenant.jwt.claim", "expected a claim name, got \"\"")
		} else {
			j.Claim = c
		}
	}
	j.Issuer, _ = p.str(o.get("issuer"), "tenant.jwt.issuer", "a string")
	j.Audience, _ = p.str(o.get("audience"), "tenant.jwt.audience", "a string")

	secretEnv, hasSecret := p.str(o.get("secret_env"), "tenant.jwt.secret_env", envNameExpect)
	keyFile, hasKey := p.str(o.get("public_key_file"), "tenant.jwt.public_key_file", "a file path")
	switch j.Algorithm {
	case "HS256":
		if hasKey {
			p.add("tenant.jwt.public_key_file", "only for RS256; HS256 uses secret_env")
		}
		switch {
		case !hasSecret && isNull(o.get("secret_env")):
			p.add("tenant.jwt.secret_env", "missing; HS256 needs the name of an environment variable holding the secret")
		case !hasSecret:
		case !envNameRE.MatchString(secretEnv):
			p.add("tenant.jwt.secret_env", "expected %s, got %s", envNameExpect, quote(secretEnv))
		case p.env(secretEnv) == "":
			p.add("tenant.jwt.secret_env", "environment variable %s is empty or unset; it must hold the HS256 secret", secretEnv)
		default:
			j.Secret = []byte(p.env(secretEnv))
		}
	case "RS256":
		if hasSecret {
			p.add("tenant.jwt.secret_env", "only for HS256; RS256 uses public_key_file")
		}
		switch {
		case !hasKey && isNull(o.get("public_key_file")):
			p.add("tenant.jwt.public_key_file", "missing; RS256 needs a PEM public key file")
		case hasKey:
			p.publicKey(keyFile)
		}
	}
}

// publicKey reads an RSA public key; a relative path is relative to the
// configuration file, so the file and its keys can move together.
func (p *parser) publicKey(path string) {
	const key = "tenant.jwt.public_key_file"
	if path == "" {
		p.add(key, "expected a file path, got \"\"")
		return
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.dir, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		p.add(key, "cannot read the public key: %v", err)
		return
	}
	if !isRSAPublicKeyPEM(data) {
		p.add(key, "expected a PEM-encoded RSA public key (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY) in %s", path)
		return
	}
	p.cfg.Tenant.JWT.PublicKeyPEM = data
}

func isRSAPublicKeyPEM(data []byte) bool {
	block, _ := pem.Decode(data)
	if block == nil {
		return false
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return false
		}
		_, ok := k.(*rsa.PublicKey)
		return ok
	case "RSA PUBLIC KEY":
		_, err := x509.ParsePKCS1PublicKey(block.Bytes)
		return err == nil
	}
	return false
}
