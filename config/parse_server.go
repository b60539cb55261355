package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"
)

func checkListen(s string) (string, string) {
	host, port, err := net.SplitHostPort(s)
	if err == nil && strings.ContainsAny(host, " /") {
		err = net.InvalidAddrError("bad host")
	}
	if err == nil {
		if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || strconv.FormatUint(n, 10) != port {
			err = net.InvalidAddrError("bad port")
		}
	}
	if err != nil {
		return "", "expected host:port such as 127.0.0.1:8080, got " + quote(s)
	}
	return s, ""
}

// listenOverlap says why api (the api_listen address) cannot be bound
// beside listen (the proxy's, named listenKey), or returns "". Both are
// checked host:port addresses. They overlap on the same port, other than 0,
// when their hosts are the same or either is a wildcard (empty, 0.0.0.0 or
// [::]), which takes the port on every address: one process would fail to
// bind the second with "address already in use", and workers, which bind
// both with SO_REUSEPORT, would have the kernel hand admin connections to
// the proxy.
func listenOverlap(listen, api, listenKey string) string {
	lh, lp, err1 := net.SplitHostPort(listen)
	ah, ap, err2 := net.SplitHostPort(api)
	if err1 != nil || err2 != nil || lp != ap || lp == "0" {
		return ""
	}
	var why string
	switch {
	case isWildcardHost(lh) || isWildcardHost(ah):
		why = "a wildcard host takes the port on every address"
	case sameHost(lh, ah):
		why = "the same host"
	default:
		return ""
	}
	return fmt.Sprintf("expected an address apart from %s's, got %s: %s is %s, and both would take port %s (%s)",
		listenKey, quote(api), listenKey, quote(listen), ap, why)
}

func isWildcardHost(h string) bool {
	ip := net.ParseIP(h)
	return h == "" || (ip != nil && ip.IsUnspecified())
}

// sameHost compares two listen hosts without resolving names: IP
// addresses by value (::ffff:127.0.0.1 is 127.0.0.1), localhost as the
// loopback addresses it names, other names case-insensitively.
func sameHost(a, b string) bool {
	norm := func(h string) []net.IP {
		if strings.EqualFold(strings.TrimSuffix(h, "."), "localhost") {
			return []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		if ip := net.ParseIP(h); ip != nil {
			return []net.IP{ip}
		}
		return nil
	}
	as, bs := norm(a), norm(b)
	if as == nil || bs == nil {
		return as == nil && bs == nil && strings.EqualFold(a, b)
	}
	for _, x := range as {
		for _, y := range bs {
			if x.Equal(y) {
				return true
			}
		}
	}
	return false
}

// checkUpstreamURL accepts only scheme://host[:port]: the forwarder sends
// the client's own path, so a path or query here would be silently ignored.
func checkUpstreamURL(s string) (string, string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" {
		return "", "expected an http:// or https:// URL, got " + quote(s)
	}
	if u.Hostname() == "" {
		return "", "expected an http:// or https:// URL with a host, got " + quote(s)
	}
	if !validPort(u.Port()) {
		return "", "expected an http:// or https:// URL with a port between 1 and 65535, got " + quote(s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", "expected an http:// or https:// URL of just scheme, host and port (requests keep their own path), got " + quote(s)
	}
	return strings.TrimSuffix(s, "/"), ""
}

// validPort reports whether a URL's port is absent (the scheme's default)
// or between 1 and 65535.
func validPort(p string) bool {
	if p == "" {
		return true
	}
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

func checkRedisURL(s string) (string, string) {
	if !strings.HasPrefix(s, "redis://") && !strings.HasPrefix(s, "rediss://") {
		return "", "expected a redis:// or rediss:// URL, got " + quote(s)
	}
	if _, err := redis.ParseURL(s); err != nil {
		return "", "expected a redis:// or rediss:// URL, got " + quote(s) + " (" + err.Error() + ")"
	}
	// The client takes any number as the port and fails on every dial.
	if u, err := url.Parse(s); err != nil || !validPort(u.Port()) {
		return "", "expected a redis:// or rediss:// URL with a port between 1 and 65535, got " + quote(s)
	}
	return s, ""
}

func checkDatabaseURL(s string) (string, string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", "expected a postgres:// or postgresql:// URL, got " + quote(s)
	}
	// The driver takes a comma-separated list of hosts, each with an
	// optional port, and fails on every connect with a port out of range.
	for _, h := range strings.Split(u.Host, ",") {
		if !validPort((&url.URL{Host: h}).Port()) {
			return "", "expected a postgres:// or postgresql:// URL with ports between 1 and 65535, got " + quote(s)
		}
	}
	return s, ""
}

func (p *parser) upstream(n *yaml.Node) {
	o := p.object(n, "upstream", "url", "timeout", "dial_timeout", "max_conns", "max_buffered_body")
	u := &p.cfg.Upstream
	u.URL = p.setting(o.get("url"), "upstream.url", EnvUpstreamURL, "", checkUpstreamURL)
	if u.URL == "" && isNull(o.get("url")) && p.env(EnvUpstreamURL) == "" {
		p.add("upstream.url", "missing; expected an http:// or https:// URL (or set %s)", EnvUpstreamURL)
	}
	if u.URL != "" {
		parsed, _ := url.Parse(u.URL)
		u.Scheme = parsed.Scheme
		port := parsed.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		u.Host = net.JoinHostPort(parsed.Hostname(), port)
	}
	u.Timeout = p.duration(o.get("timeout"), "upstream.timeout", 30*time.Second, minTimeout)
	u.DialTimeout = p.duration(o.get("dial_timeout"), "upstream.dial_timeout", 2*time.Second, minTimeout)
	u.MaxConns = 1024
	const maxConnsExpect = "a whole number from 1 to 1048576 (2^20)"
	if v, ok := p.integer(o.get("max_conns"), "upstream.max_conns", maxConnsExpect); ok {
		if v < 1 || v > 1<<20 {
			p.add("upstream.max_conns", "expected %s, got %d", maxConnsExpect, v)
		} else {
			u.MaxConns = int(v)
		}
	}
	u.MaxBufferedBody = p.size(o.get("max_buffered_body"), "upstream.max_buffered_body", 1<<20)
}

const (
	maxBufferedBodyLimit = 1 << 30
	sizeExpect           = "a size > 0 and <= 1GiB in bytes or with a KiB, MiB or GiB suffix (e.g. 1MiB)"
)

var sizeRE = regexp.MustCompile(`^([0-9]{1,10})\s*(B|KiB|MiB|GiB)?$`)

func (p *parser) size(n *yaml.Node, key string, def int) int {
	s, ok := p.str(n, key, sizeExpect)
	if !ok {
		return def
	}
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		p.add(key, "expected %s, got %s", sizeExpect, quote(s))
		return def
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	v *= map[string]int64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]
	if v <= 0 || v > maxBufferedBodyLimit {
		p.add(key, "expected %s, got %s", sizeExpect, quote(s))
		return def
	}
	return int(v)
}

func (p *parser) redis(n *yaml.Node) {
	o := p.object(n, "redis", "url", "timeout", "pool_size", "pipeline", "reconcile_interval")
	r := &p.cfg.Redis
	r.URL = p.setting(o.get("url"), "redis.url", EnvRedisURL, "redis://127.0.0.1:6379/0", checkRedisURL)
	r.Timeout = p.duration(o.get("timeout"), "redis.timeout", 50*time.Millisecond, minTimeout)
	const poolExpect = "a whole number from 0 to 65536 (2^16; 0: the client's default)"
	if v, ok := p.integer(o.get("pool_size"), "redis.pool_size", poolExpect); ok {
		if v < 0 || v > 1<<16 {
			p.add("redis.pool_size", "expected %s, got %d", poolExpect, v)
		} else {
			r.PoolSize = int(v)
		}
	}
	r.Pipeline = true
	if v, ok := p.boolean(o.get("pipeline"), "redis.pipeline", "true or false"); ok {
		r.Pipeline = v
	}
	r.ReconcileInterval = p.duration(o.get("reconcile_interval"), "redis.reconcile_interval", time.Second, minInterval)
}

func (p *parser) database(n *yaml.Node) {
	o := p.object(n, "database", "url")
	p.cfg.Database.URL = p.setting(o.get("url"), "database.url", EnvDatabaseURL, "", checkDatabaseURL)
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

const envNameExpect = "an environment variable name such as TOLLGATE_ADMIN_TOKEN"

func (p *parser) admin(n *yaml.Node) {
	o := p.object(n, "admin", "token_env")
	if name, ok := p.str(o.get("token_env"), "admin.token_env", envNameExpect); ok {
		switch {
		case !envNameRE.MatchString(name):
			p.add("admin.token_env", "expected %s, got %s", envNameExpect, quote(name))
		case p.env(name) != "":
			p.cfg.Admin.Token = p.env(name)
		case p.env(EnvAdminToken) == "":
			// As for tenant.jwt.secret_env: a variable the file names must
			// be set. Running without the admin API is leaving it out.
			alt := ""
			if name != EnvAdminToken {
				alt = "or set " + EnvAdminToken + "; "
			}
			p.add("admin.token_env", "environment variable %s is empty or unset; it must hold the admin API token (%sleave token_env out to run without the admin API, which then answers 401 to every call)",
				name, alt)
		}
	}
	// The well-known variable always wins, so an operator can rotate the
	// token without editing the file.
	if t := p.env(EnvAdminToken); t != "" {
		p.cfg.Admin.Token = t
	}
}
