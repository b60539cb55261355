package quota

import (
	"math"
	"time"
)

const (
	// leaseSpan is how much traffic one chunk should cover: long enough
	// that a busy tenant costs a Redis call every couple of seconds, short
	// enough that idle units come back quickly.
	leaseSpan = 2 * time.Second
	// minRateWindow keeps a burst measured over microseconds from being
	// read as an absurd rate.
	minRateWindow = 10 * time.Millisecond
	// maxChunk bounds a request for units; the script caps grants by the
	// remaining quota anyway.
	maxChunk int64 = 1 << 40
)

// chunkFor is the chunk an instance asks for at rate units per second:
// rate × leaseSpan, at least 1. The script further caps it by
// available / (2 × live instances), so chunks shrink to 1 near the limit.
func chunkFor(rate float64) int64 {
	if math.IsNaN(rate) || rate <= 0 {
		return 1
	}
	c := math.Ceil(rate * leaseSpan.Seconds())
	if c >= float64(maxChunk) {
		return maxChunk
	}
	return max(int64(c), 1)
}

// nextRate folds the units taken over elapsed into the rate estimate. It
// follows increases at once (a tenant ramping up should not pay a Redis
// call per request while an average catches up) and decays by half per
// sample.
func nextRate(rate float64, taken int64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return rate
	}
	sample := float64(taken) / max(elapsed, minRateWindow).Seconds()
	if sample >= rate {
		return sample
	}
	return (rate + sample) / 2
}
