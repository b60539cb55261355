package harness

import "testing"

func TestParseCPUTimes(t *testing.T) {
	for _, tc := range []struct {
		name         string
		in           string
		ok           bool
		total, steal uint64
	}{
		{"kernel with guest columns", "cpu  141140 0 117601 276381 1288 0 48843 40789 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", true, 626042, 40789},
		{"no guest columns", "cpu 10 20 30 40 50 60 70 80\n", true, 360, 80},
		{"only a line, no newline", "cpu 1 1 1 1 1 1 1 1 1 1", true, 8, 1},
		{"too few columns", "cpu 1 2 3 4 5 6 7\n", false, 0, 0},
		{"not the cpu line first", "cpu0 1 2 3 4 5 6 7 8\n", false, 0, 0},
		{"a column not a number", "cpu 1 2 3 4 5 6 7 x\n", false, 0, 0},
		{"negative column", "cpu 1 2 3 4 5 6 7 -8\n", false, 0, 0},
		{"sum past 2^64", "cpu 18446744073709551615 1 0 0 0 0 0 0\n", false, 0, 0},
		{"empty", "", false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseCPUTimes([]byte(tc.in))
			if got.ok != tc.ok || got.total != tc.total || got.steal != tc.steal {
				t.Fatalf("parseCPUTimes(%q) = %+v, want ok %v total %d steal %d", tc.in, got, tc.ok, tc.total, tc.steal)
			}
		})
	}
}

func TestStealPct(t *testing.T) {
	at := func(total, steal uint64) cpuTimes { return cpuTimes{total: total, steal: steal, ok: true} }
	for _, tc := range []struct {
		name string
		a, b cpuTimes
		want float64
	}{
		{"a quarter stolen", at(1000, 100), at(1400, 200), 25},
		{"none stolen", at(1000, 100), at(2000, 100), 0},
		{"start unknown", cpuTimes{}, at(2000, 100), -1},
		{"end unknown", at(1000, 100), cpuTimes{}, -1},
		{"no time passed", at(1000, 100), at(1000, 100), -1},
		{"counter went back", at(1000, 100), at(2000, 50), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stealPct(tc.a, tc.b); got != tc.want {
				t.Fatalf("stealPct = %v, want %v", got, tc.want)
			}
		})
	}
	if got := formatSteal(-1); got != "–" {
		t.Fatalf("formatSteal(-1) = %q", got)
	}
	if got := formatSteal(24.6); got != "25%" {
		t.Fatalf("formatSteal(24.6) = %q", got)
	}
}

// FuzzParseCPUTimes: any /proc/stat text parses without panicking, and a
// parsed line's steal is part of its total.
func FuzzParseCPUTimes(f *testing.F) {
	f.Add([]byte("cpu  141140 0 117601 276381 1288 0 48843 40789 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	f.Add([]byte("cpu 1 2 3 4 5 6 7\n"))
	f.Add([]byte("cpu 18446744073709551615 1 1 1 1 1 1 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := parseCPUTimes(b)
		if !got.ok {
			if got.total != 0 || got.steal != 0 {
				t.Fatalf("unparsed line left values: %+v", got)
			}
			return
		}
		if got.steal > got.total {
			t.Fatalf("steal %d above total %d", got.steal, got.total)
		}
	})
}
