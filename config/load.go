package config

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Environment variables that override the file. A variable that is unset or
// empty leaves the file's value in place.
const (
	EnvListen      = "TOLLGATE_LISTEN"
	EnvAPIListen   = "TOLLGATE_API_LISTEN"
	EnvUpstreamURL = "TOLLGATE_UPSTREAM_URL"
	EnvRedisURL    = "TOLLGATE_REDIS_URL"
	EnvDatabaseURL = "TOLLGATE_DATABASE_URL"
	EnvAdminToken  = "TOLLGATE_ADMIN_TOKEN"
	EnvProcs       = "TOLLGATE_PROCS"
	EnvWorkers     = "TOLLGATE_WORKERS"
)

// Load reads the configuration file at path, applies the environment
// overrides from the process environment and validates the result. Every
// problem found is reported, joined, as *Error values naming the file, the
// key and what was expected.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(path, data, os.Getenv)
}

// Parse is Load without the file read: source names the file in errors and
// anchors relative paths (tenant.jwt.public_key_file); env looks up
// environment variables (nil means none are set).
func Parse(source string, data []byte, env func(string) string) (*Config, error) {
	if env == nil {
		env = func(string) string { return "" }
	}
	p := &parser{
		problems: problems{file: source},
		env:      env,
		dir:      filepath.Dir(source),
		cfg:      &Config{Source: source},
		bad:      map[string]bool{},
	}
	root, err := decodeYAML(data)
	if err != nil {
		return nil, syntaxError(source, err)
	}
	if root != nil && expandedSize(root, map[*yaml.Node]int{}, maxExpandedNodes) > maxExpandedNodes {
		p.add("", "document is too large once its aliases are expanded (more than %d nodes)", maxExpandedNodes)
		return nil, p.err()
	}
	p.parse(root)
	if err := p.err(); err != nil {
		return nil, err
	}
	return p.cfg, nil
}

// parser holds the state of one Parse call.
type parser struct {
	problems
	env func(string) string
	dir string
	cfg *Config
	// bad names features that were declared but are invalid; later
	// references to them are not reported again.
	bad map[string]bool
}

func (p *parser) parse(root *yaml.Node) {
	top := p.object(root, "", "listen", "api_listen", "procs", "workers", "upstream", "redis", "database", "admin",
		"tenant", "features", "default_plan", "plans", "routes", "account")
	c := p.cfg
	before := len(p.errs)
	c.Listen = p.setting(top.get("listen"), "listen", EnvListen, "127.0.0.1:8080", checkListen)
	c.APIListen = p.setting(top.get("api_listen"), "api_listen", EnvAPIListen, "127.0.0.1:8081", checkListen)
	if len(p.errs) == before {
		// The environment is resolved: these are the addresses bound.
		key, listen := "api_listen", "listen"
		if p.env(EnvAPIListen) != "" {
			key = "env " + EnvAPIListen
		}
		if p.env(EnvListen) != "" {
			listen = EnvListen
		}
		if msg := listenOverlap(c.Listen, c.APIListen, listen); msg != "" {
			p.add(key, "%s", msg)
		}
	}
	c.Procs = procsValue(p.setting(top.get("procs"), "procs", EnvProcs, "all", checkProcs))
	c.Workers = workersValue(p.setting(top.get("workers"), "workers", EnvWorkers, "1", checkWorkers))
	p.upstream(top.get("upstream"))
	p.redis(top.get("redis"))
	p.database(top.get("database"))
	p.admin(top.get("admin"))
	p.tenant(top.get("tenant"))
	p.features(top.get("features"))
	p.plans(top.get("plans"), top.get("default_plan"))
	p.routes(top.get("routes"))
	p.account(top.get("account"))
}

// setting resolves a string that the environment can override: the file
// value and the environment value are each checked, and the environment
// wins when set.
func (p *parser) setting(n *yaml.Node, key, envName, def string, check func(string) (string, string)) string {
	v := def
	if s, ok := p.str(n, key, "a string"); ok {
		if norm, msg := check(s); msg != "" {
			p.add(key, "%s", msg)
		} else {
			v = norm
		}
	}
	if s := p.env(envName); s != "" {
		if norm, msg := check(s); msg != "" {
			p.add("env "+envName, "%s", msg)
		} else {
			v = norm
		}
	}
	return v
}
