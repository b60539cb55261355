// Package configtest loads the configuration files of tests' testdata the
// way the server does, but with the environment a test chooses instead of
// the process's, so a TOLLGATE_* variable set on the machine cannot change
// what a test runs against.
package configtest

import (
	"os"
	"testing"

	"github.com/tollgate/tollgate/config"
)

// Load parses the file at path with env as the only environment (nil: none)
// and fails the test on any error.
func Load(t testing.TB, path string, env map[string]string) *config.Config {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(path, data, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return cfg
}
