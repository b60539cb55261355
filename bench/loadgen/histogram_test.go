package loadgen

import (
	"math"
	"testing"
	"time"
)

func TestHistogramQuantilesWithinPrecision(t *testing.T) {
	tests := []struct {
		name string
		vals func(i int) time.Duration // i in [0, 100000)
	}{
		{"uniform 1µs..100ms", func(i int) time.Duration { return time.Duration(i+1) * time.Microsecond }},
		{"small nanoseconds", func(i int) time.Duration { return time.Duration(i % 200) }},
		{"heavy tail", func(i int) time.Duration {
			if i%1000 == 0 {
				return 50 * time.Millisecond
			}
			return 100 * time.Microsecond
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistogram()
			const n = 100000
			vals := make([]int64, n)
			for i := range n {
				d := tc.vals(i)
				vals[i] = int64(d)
				h.Record(d)
			}
			sortInts(vals)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				exact := vals[int(math.Ceil(q*n))-1]
				got := int64(h.Quantile(q))
				if diff := math.Abs(float64(got - exact)); diff > float64(exact)/128+1 {
					t.Errorf("q%.3f = %d, exact %d (beyond 1/128)", q, got, exact)
				}
			}
			if h.Count() != n {
				t.Fatalf("count %d", h.Count())
			}
		})
	}
}

func TestHistogramMergeAndEmpty(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	if a.Quantile(0.99) != 0 || a.Mean() != 0 || a.Max() != 0 {
		t.Fatal("empty histogram reports values")
	}
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	a.Merge(b)
	if a.Count() != 2 || a.Max() != 3*time.Millisecond || a.Mean() != 2*time.Millisecond {
		t.Fatalf("merge: count %d max %s mean %s", a.Count(), a.Max(), a.Mean())
	}
	a.Record(-time.Second) // a clock step must not panic
}

func sortInts(v []int64) {
	// Insertion sort would be O(n²); the values are mostly sorted but not all.
	if len(v) < 2 {
		return
	}
	mid := len(v) / 2
	l, r := append([]int64(nil), v[:mid]...), append([]int64(nil), v[mid:]...)
	sortInts(l)
	sortInts(r)
	i, j := 0, 0
	for k := range v {
		if j >= len(r) || (i < len(l) && l[i] <= r[j]) {
			v[k] = l[i]
			i++
		} else {
			v[k] = r[j]
			j++
		}
	}
}
