package config

import "testing"

func TestParseWorkers(t *testing.T) {
	cases := []struct {
		name, file, env string
		want            Workers
		err             string
	}{
		{name: "default is one process", want: 1},
		{name: "auto, any case", file: "Auto", want: WorkersAuto},
		{name: "count", file: "4", want: 4},
		{name: "env wins", file: "auto", env: "2", want: 2},
		{name: "env auto", file: "3", env: "auto", want: WorkersAuto},
		{name: "zero", file: "0", err: `t.yaml: workers: expected auto or a whole number from 1 to 256, got "0"`},
		{name: "too many", file: "257", err: `got "257"`},
		{name: "all is procs' word", file: "all", err: `got "all"`},
		{name: "map", file: "{n: 2}", err: "workers: expected a string, got a mapping"},
		{name: "bad env", env: "two", err: `t.yaml: env TOLLGATE_WORKERS: expected auto or a whole number from 1 to 256, got "two"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := parseSetting(t, "workers", tc.file, EnvWorkers, tc.env, tc.err)
			if c != nil && c.Workers != tc.want {
				t.Errorf("Workers = %v, want %v", c.Workers, tc.want)
			}
		})
	}
}

func TestWorkersSplit(t *testing.T) {
	cases := []struct {
		w           Workers
		procs       int
		workers, ps int
	}{
		{Workers(1), 8, 1, 8},
		{WorkersAuto, 2, 2, 1},
		{WorkersAuto, 1, 1, 1},
		{Workers(2), 8, 2, 4},
		{Workers(3), 8, 3, 2}, // the spare P stays unused rather than unevenly given
		{Workers(4), 2, 4, 1}, // more workers than Ps: each still runs
		{WorkersAuto, 0, 1, 1},
		{WorkersAuto, 1024, 256, 4},
	}
	for _, tc := range cases {
		n, each := tc.w.Split(tc.procs)
		if n != tc.workers || each != tc.ps {
			t.Errorf("%v.Split(%d) = %d, %d; want %d, %d", tc.w, tc.procs, n, each, tc.workers, tc.ps)
		}
	}
}

// FuzzWorkers checks the workers value parser (file and TOLLGATE_WORKERS):
// an accepted value is "auto" or a count in range and reads back as
// itself, and its split always runs at least one worker with at least one
// P.
func FuzzWorkers(f *testing.F) {
	for _, s := range []string{"auto", "AUTO", " 2 ", "1", "256", "257", "0", "-1", "+3", "0x10", "all", ""} {
		f.Add(s, 2)
	}
	f.Fuzz(func(t *testing.T, s string, procs int) {
		norm, msg := checkWorkers(s)
		if msg != "" {
			if norm != "" {
				t.Fatalf("checkWorkers(%q) = %q with error %q", s, norm, msg)
			}
			return
		}
		w := workersValue(norm)
		if w.String() != norm {
			t.Fatalf("checkWorkers(%q) = %q, reads back as %q", s, norm, w.String())
		}
		if w < 0 || w > maxWorkers {
			t.Fatalf("checkWorkers(%q) accepted %d", s, w)
		}
		if n, each := w.Split(procs); n < 1 || n > maxWorkers || each < 1 || (procs >= 1 && n*each > max(procs, n)) {
			t.Fatalf("%v.Split(%d) = %d, %d", w, procs, n, each)
		}
	})
}
