package main

import (
	"runtime"
	"testing"

	"github.com/tollgate/tollgate/config"
)

func TestApplyProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	cases := []struct {
		name  string
		start int
		procs config.Procs
		want  int
	}{
		{"all keeps the runtime's value", 4, config.ProcsAll, 4},
		{"count lowers it", 4, config.Procs(1), 1},
		{"count raises it", 2, config.Procs(3), 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(tc.start)
			got := applyProcs(tc.procs)
			if got != tc.want || runtime.GOMAXPROCS(0) != tc.want {
				t.Errorf("applyProcs(%v) from %d = %d, runtime has %d; want %d", tc.procs, tc.start, got, runtime.GOMAXPROCS(0), tc.want)
			}
		})
	}
}
