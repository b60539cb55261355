package main

import (
	"runtime"
	"testing"

	"github.com/tollgate/tollgate/config"
)

// keepProcs restores the test process's GOMAXPROCS after a test that runs
// the server in-process, which applies its procs setting.
func keepProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

func TestApplyProcs(t *testing.T) {
	keepProcs(t)
	cases := []struct {
		name  string
		start int
		env   string
		procs config.Procs
		want  int
	}{
		{"auto halves", 4, "", config.ProcsAuto, 2},
		{"auto rounds up", 3, "", config.ProcsAuto, 2},
		{"auto keeps one", 1, "", config.ProcsAuto, 1},
		{"auto leaves GOMAXPROCS in charge", 4, "4", config.ProcsAuto, 4},
		{"all", 4, "", config.ProcsAll, 4},
		{"count", 4, "", config.Procs(3), 3},
		{"count over GOMAXPROCS", 4, "4", config.Procs(1), 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(tc.start)
			t.Setenv("GOMAXPROCS", tc.env)
			got := applyProcs(tc.procs)
			if got != tc.want || runtime.GOMAXPROCS(0) != tc.want {
				t.Errorf("applyProcs(%v) from %d = %d, runtime has %d; want %d", tc.procs, tc.start, got, runtime.GOMAXPROCS(0), tc.want)
			}
		})
	}
}
