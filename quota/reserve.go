package quota

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

var (
	//go:embed reserve.lua
	reserveCore string
	//go:embed reserve_one.lua
	reserveOne string
	//go:embed reserve_batch.lua
	reserveBatch string

	reserveSrc    = reserveCore + "\n" + reserveOne
	reserveScript = redis.NewScript(reserveSrc)
	// reserveCall's concurrent calls leave the pipeline as one call of
	// the batch script (pipeline.go, reserve_batch.lua).
	reserveCall = newIntScript(reserveScript, reserveSrc).batched(reserveCore + "\n" + reserveBatch)

	//go:embed adjust.lua
	adjustSrc    string
	adjustScript = redis.NewScript(adjustSrc)
	adjustCall   = newIntScript(adjustScript, adjustSrc)

	//go:embed gauge_delete.lua
	gaugeDeleteSrc  string
	gaugeDeleteCall = newIntScript(redis.NewScript(gaugeDeleteSrc), gaugeDeleteSrc)
)

// Script reply codes beyond the Outcome values.
const (
	codeAnchorMismatch = 7
	codeMalformed      = 8 // extra: what is malformed, one of the malformed* values
)

// What a codeMalformed reply found not to be what Tollgate writes (its
// extra, at index 4 of a reserve reply, 6 of a lease reply).
const (
	malformedScript      = 0 // reserve raised an error; its text follows (reserve_batch.lua)
	malformedAnchor      = 1 // the entitlement's billing anchor
	malformedCounter     = 2 // the counter: not an integer, or a key of another type
	malformedLimit       = 3 // the feature's limit in the entitlement: not an integer
	malformedEntitlement = 4 // the entitlement key is no hash
	malformedLease       = 5 // the lease hash is no hash (lease.lua only)
)

// maxAnchorRetries bounds how often one Reserve follows anchor changes; more
// than one change during a single request means billing is rewriting the
// tenant in a loop, and the request gets the fail mode instead.
const maxAnchorRetries = 3

var errAnchorUnstable = errors.New("tenant anchor keeps changing")

// Reserve checks flags and limits and reserves c.Amount atomically, in one
// round trip (two only right after the tenant's billing anchor changed).
//
// Flags are checked before the meter; an unknown tenant wins over
// everything. Metered features and gauges with a positive amount are
// admitted iff used+amount <= ceiling (unlimited: always, still counting).
// AmountResponseHeader reserves nothing and admits while used < ceiling. A
// gauge with a negative amount (delete) reserves nothing and, unless it
// requires flags, is admitted without a Redis call: it can only free units.
// Commit decrements after the upstream's 2xx, in the delete's one round trip
// (with flags to check, its second).
//
// A metered feature in lease mode (config.ModeLease) is decided from this
// instance's lease: no Redis call while the lease holds units, one call to
// renew it when it runs short or gets stale (see lease.go). Decisions have
// the same meaning; Current is an estimate that counts other instances'
// leases as used.
//
// On a Redis error or timeout d.Outcome follows the meter feature's
// FailMode (flags-only checks use the first flag's) and the error is
// returned for logging; d is always filled. Through the pipeline (the
// default) the Redis timeout bounds the call from when it is made, and a
// ctx already done fails it at once; a ctx deadline cuts a call short only
// through go-redis (WithoutPipeline, or a Cluster client), with the
// client's ContextTimeoutEnabled.
func (s *Store) Reserve(ctx context.Context, c *Check, d *Decision) error {
	*d = Decision{}
	if c == nil {
		d.Outcome = Unavailable
		return errors.New("quota reserve: nil check")
	}

	var fi *featureInfo
	m := modeFlags
	amount := c.Amount
	if c.Meter != nil && c.Meter.Feature != nil && c.Meter.Feature.Kind != config.Flag {
		fi = s.info(c.Meter.Feature)
		d.Feature = fi.f
		switch {
		case c.Meter.Source == config.AmountResponseHeader:
			m, amount = modeResponse, 0
		case fi.f.Kind == config.Gauge && amount < 0:
			m, amount = modeDelete, 0
		default:
			m = modeReserve
			amount = max(amount, 0)
		}
	}

	if m == modeDelete && !hasFlag(c.Flags) {
		// Nothing to check: a delete never takes a tenant past a limit, so
		// it is forwarded like an unmetered request, and fail modes (which
		// protect limits) do not apply. The limit for the response's
		// headers comes back with Commit's decrement.
		d.Outcome, d.mode, d.tenant = Admitted, modeDelete, c.TenantID
		d.Limit, d.Ceiling = -1, -1
		var buf [128]byte
		d.key, _ = boxedString(appendCounterKey(buf[:0], c.TenantID, fi, 0))
		return nil
	}

	if fi != nil && fi.lease && (m == modeResponse || (m == modeReserve && amount > 0)) {
		return s.reserveLease(ctx, c, d, fi, m, amount)
	}

	sa := getScriptArgs()
	defer sa.release()
	_, entArg := boxedString(appendEntKey(sa.buf[:0], c.TenantID))
	// argv holds the script's ARGV from index 0; see reserve.lua.
	args := append(sa.args[:0], nil, nil, twoArg, entArg, entArg,
		zeroAnchor, boxedInt(amount), oneArg, modeArgs[m], int64(0), emptyArg)
	for _, f := range c.Flags {
		if f != nil {
			args = append(args, s.info(f).flagField)
		}
	}
	argv := args[argKeys+2:]

	for range maxAnchorRetries {
		anchorArg, anchor := s.anchorOf(c.TenantID)
		sm := m
		if fi != nil {
			argv[2] = fi.grace
			argv[5] = fi.limitField
			var start int64
			if fi.f.Kind == config.Metered {
				now := s.now()
				ps, end := Period(anchor, now)
				start = ps.Unix()
				d.Reset = end
				argv[0] = anchorArg
				argv[4] = boxedInt(counterTTL(end, now))
				if sm != modeDelete {
					sm += modeMetered
				}
			}
			var keyArg any
			// The buffer is free again: boxedString keeps its own copy.
			d.key, keyArg = boxedString(appendCounterKey(sa.buf[:0], c.TenantID, fi, start))
			args[argKeys+1] = keyArg
			argv[3] = modeArgs[sm]
		}
		d.mode, d.tenant = m, c.TenantID

		res, err := reserveCall.runSlice(ctx, s.hot, args)
		if err != nil {
			s.failed(c, d)
			return fmt.Errorf("quota reserve: %w", err)
		}
		code, err := s.apply(c, d, res, amount)
		if err != nil {
			s.failed(c, d)
			return fmt.Errorf("quota reserve: %w", err)
		}
		if code != codeAnchorMismatch {
			return nil
		}
	}
	s.failed(c, d)
	return fmt.Errorf("quota reserve: tenant %q: %w", c.TenantID, errAnchorUnstable)
}

var (
	oneArg   any = "1"
	twoArg   any = 2
	emptyArg any = ""
)

// appendEntKey is entKey into a caller's buffer.
func appendEntKey(b []byte, tenantID string) []byte {
	b = append(b, "tg:{"...)
	b = append(b, tenantID...)
	return append(b, "}:ent"...)
}

// apply fills d from the script's reply and returns the reply code. An
// anchor mismatch updates the cache so the caller can retry.
func (s *Store) apply(c *Check, d *Decision, res []int64, amount int64) (int64, error) {
	if len(res) < 4 {
		return 0, fmt.Errorf("unexpected script reply %v", res)
	}
	code, cur, limit, ceiling := res[0], res[1], res[2], res[3]
	switch code {
	case int64(Admitted):
		d.Outcome = Admitted
		d.Current, d.Limit, d.Ceiling = cur, limit, ceiling
		if d.mode == modeReserve {
			d.Reserved = amount
		}
		d.Warning = warning(d.Feature, cur, limit)
	case int64(OverLimit):
		d.Outcome = OverLimit
		d.Current, d.Limit, d.Ceiling = cur, limit, ceiling
		d.PlanName = s.planName(res)
		d.Warning = warning(d.Feature, cur, limit)
	case int64(Locked):
		d.Outcome = Locked
		d.PlanName = s.planName(res)
		d.Feature = lockedFlag(c.Flags, replyInt(res, 4))
	case int64(UnknownTenant):
		d.Outcome = UnknownTenant
	case codeAnchorMismatch:
		if len(res) < 5 {
			return 0, fmt.Errorf("unexpected script reply %v", res)
		}
		s.anchors.Store(c.TenantID, res[4])
	case codeMalformed:
		return 0, malformedError(replyInt(res, 4), c.TenantID, d.Feature, d.key, res)
	default:
		return 0, fmt.Errorf("unexpected script reply code %d", code)
	}
	return code, nil
}

// malformedError names what a codeMalformed reply with extra what found:
// f and key are the request's feature and counter, res the reply (whose
// text follows a script error's extra).
func malformedError(what int64, tenant string, f *config.Feature, key string, res []int64) error {
	switch what {
	case malformedScript:
		return fmt.Errorf("reserve script failed for tenant %q: %s", tenant, replyText(res, 5))
	case malformedAnchor:
		return fmt.Errorf("malformed billing anchor of tenant %s in Redis", tenant)
	case malformedLimit:
		name := ""
		if f != nil {
			name = f.Name
		}
		return fmt.Errorf("malformed limit l:%s of tenant %s in Redis: not an integer", name, tenant)
	case malformedEntitlement:
		return fmt.Errorf("malformed entitlement of tenant %s in Redis: not a hash", tenant)
	}
	return fmt.Errorf("malformed counter %s in Redis", key)
}

// replyText decodes the text a reply carries from index i on, one byte per
// integer.
func replyText(res []int64, i int) string {
	if i >= len(res) {
		return ""
	}
	b := make([]byte, 0, len(res)-i)
	for _, v := range res[i:] {
		b = append(b, byte(v))
	}
	return string(b)
}

// planName decodes the plan's display name that over-limit and locked
// replies carry from index 5 on, one byte per integer. A name of a
// configured plan comes back as the configuration's own string, so a
// tenant hammering its limit costs no allocation for it.
func (s *Store) planName(res []int64) string {
	if len(res) <= 5 {
		return ""
	}
	var buf [64]byte
	b := buf[:0]
	for _, v := range res[5:] {
		if v < 0 || v > 255 {
			return ""
		}
		b = append(b, byte(v))
	}
	for _, p := range s.cfg.Plans {
		if p != nil && p.Name == string(b) {
			return p.Name
		}
	}
	return string(b)
}

// failed applies the fail mode of the request's feature to d.
func (s *Store) failed(c *Check, d *Decision) {
	f := d.Feature
	if f == nil {
		for _, fl := range c.Flags {
			if fl != nil {
				f = fl
				break
			}
		}
	}
	d.Current, d.Limit, d.Ceiling, d.Reserved, d.Warning, d.PlanName = 0, 0, 0, 0, false, ""
	if f == nil {
		// Nothing is metered or required: there is nothing to protect.
		d.Outcome = FailedOpen
		return
	}
	if failMode(f) == config.FailOpen {
		d.Outcome = FailedOpen
	} else {
		d.Outcome = Unavailable
	}
}

// failMode is f's fail mode, with config's defaults when unset.
func failMode(f *config.Feature) config.FailMode {
	if f.FailMode != 0 {
		return f.FailMode
	}
	if f.Kind == config.Metered {
		return config.FailOpen
	}
	return config.FailClosed
}

func warning(f *config.Feature, cur, limit int64) bool {
	if f == nil || limit < 0 || f.Warning <= 0 {
		return false
	}
	// The epsilon keeps 0.8×10 from landing a hair above 8.
	return float64(cur)+1e-9 >= f.Warning*float64(limit)
}

// hasFlag reports whether flags holds a flag to check (nil entries are
// skipped, as the script's arguments skip them).
func hasFlag(flags []*config.Feature) bool {
	for _, f := range flags {
		if f != nil {
			return true
		}
	}
	return false
}

// lockedFlag maps the script's index (over the non-nil flags it was sent)
// back to the feature; the first flag stands in for an index out of range
// so the caller always has a feature to name.
func lockedFlag(flags []*config.Feature, idx int64) *config.Feature {
	var n int64
	var first *config.Feature
	for _, f := range flags {
		if f == nil {
			continue
		}
		if first == nil {
			first = f
		}
		if n == idx {
			return f
		}
		n++
	}
	return first
}

func replyInt(res []int64, i int) int64 {
	if i >= len(res) {
		return -1
	}
	return res[i]
}
