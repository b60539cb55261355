package quota

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/config"
)

var (
	hdrLimit     = []byte("X-Quota-Limit")
	hdrRemaining = []byte("X-Quota-Remaining")
	hdrReset     = []byte("X-Quota-Reset")
	hdrWarning   = []byte("X-Quota-Warning")
	valTrue      = []byte("true")
)

// WriteHeaders sets X-Quota-Limit, X-Quota-Remaining (max(0, Limit-Current)),
// X-Quota-Reset (unix seconds of the period end, metered only) and
// X-Quota-Warning: true when Warning, for a decision on a metered or gauge
// feature that was admitted or refused for its limit. Unlimited features get
// no quota headers. Setting (not adding) also replaces any the upstream sent.
// It does not allocate.
func (d *Decision) WriteHeaders(h *fasthttp.ResponseHeader) {
	if h == nil || d.Feature == nil || d.Feature.Kind == config.Flag || d.Limit < 0 ||
		(d.Outcome != Admitted && d.Outcome != OverLimit) {
		return
	}
	var buf [20]byte
	h.SetCanonical(hdrLimit, strconv.AppendInt(buf[:0], d.Limit, 10))
	h.SetCanonical(hdrRemaining, strconv.AppendInt(buf[:0], max(0, d.Limit-d.Current), 10))
	if d.Feature.Kind == config.Metered && !d.Reset.IsZero() {
		h.SetCanonical(hdrReset, strconv.AppendInt(buf[:0], d.Reset.Unix(), 10))
	}
	if d.Warning {
		h.SetCanonical(hdrWarning, valTrue)
	}
}

// RetryAfter is the whole seconds from now until the period resets, at
// least 1, for a 429's Retry-After.
func (d *Decision) RetryAfter(now time.Time) int64 {
	if d.Reset.IsZero() {
		return 1
	}
	return max(1, ceilSeconds(d.Reset.Sub(now)))
}
