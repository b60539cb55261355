package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits linear sub-buckets per
// power of two keep every recorded value within 1/128 (0.8 %) of the truth,
// which is enough to tell p99.9 apart on loopback latencies.
const (
	subBits    = 7
	subBuckets = 1 << subBits
	// 64 powers of two cover any int64 nanosecond value.
	numBuckets = 64 * subBuckets
)

// Histogram is a log-linear latency histogram in the spirit of HDR
// Histogram: fixed memory, O(1) record, no allocation. It is not safe for
// concurrent use; each worker keeps its own and they are merged at the end.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

func bucketOf(v int64) int {
	if v < subBuckets {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1
	return (shift+1)*subBuckets + int(uint64(v)>>uint(shift)) - subBuckets
}

// bucketMid is the middle of a bucket's value range, the least-biased
// representative of the values it holds.
func bucketMid(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	shift := i/subBuckets - 1
	lo := int64(i%subBuckets+subBuckets) << uint(shift)
	return lo + (int64(1)<<uint(shift))/2
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds o's values into h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Quantile returns the latency at q (0..1), clamped to the exact extremes.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := min(max(bucketMid(i), h.min), h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

// Mean is the exact average latency.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Max is the largest recorded latency.
func (h *Histogram) Max() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.max)
}
