package quota

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

var (
	//go:embed reserve.lua
	reserveSrc    string
	reserveScript = redis.NewScript(reserveSrc)

	//go:embed adjust.lua
	adjustSrc    string
	adjustScript = redis.NewScript(adjustSrc)
)

// Script reply codes beyond the Outcome values.
const codeAnchorMismatch = 7

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
// gauge with a negative amount (delete) reserves nothing; Commit decrements
// after the upstream's 2xx.
//
// A metered feature in lease mode (config.ModeLease) is decided from this
// instance's lease: no Redis call while the lease holds units, one call to
// renew it when it runs short or gets stale (see lease.go). Decisions have
// the same meaning; Current is an estimate that counts other instances'
// leases as used.
//
// On a Redis error or timeout d.Outcome follows the meter feature's
// FailMode (flags-only checks use the first flag's) and the error is
// returned for logging; d is always filled. ctx and the client's own
// timeouts bound the call; the client needs ContextTimeoutEnabled for a
// ctx deadline to cut a socket read short.
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

	if fi != nil && fi.lease && (m == modeResponse || (m == modeReserve && amount > 0)) {
		return s.reserveLease(ctx, c, d, fi, m, amount)
	}

	ent := entKey(c.TenantID)
	sc := scratchPool.Get().(*scratch)
	defer sc.release()
	args := append(sc.args[:0], zeroAnchor, amount, oneArg, modeArgs[m], int64(0), emptyArg)
	for _, f := range c.Flags {
		if f != nil {
			args = append(args, s.info(f).flagField)
		}
	}
	keys := sc.keys[:]
	keys[0], keys[1] = ent, ent

	for range maxAnchorRetries {
		anchorArg, anchor := s.anchorOf(c.TenantID)
		sm := m
		if fi != nil {
			args[2] = fi.grace
			args[5] = fi.limitField
			if fi.f.Kind == config.Metered {
				now := s.now()
				start, end := Period(anchor, now)
				d.Reset = end
				d.key = counterKey(c.TenantID, fi, start.Unix())
				args[0] = anchorArg
				args[4] = counterTTL(end, now)
				if sm != modeDelete {
					sm += modeMetered
				}
			} else {
				d.key = counterKey(c.TenantID, fi, 0)
			}
			keys[1] = d.key
			args[3] = modeArgs[sm]
		}
		d.mode = m

		res, err := reserveScript.Run(ctx, s.rdb, keys, args...).Slice()
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
	emptyArg any = ""
)

// scratch holds one Reserve's script keys and arguments. go-redis copies
// them into its command, so they can be reused as soon as Run returns;
// pooling saves the two allocations they would cost as escaping locals.
type scratch struct {
	args [12]any
	keys [2]string
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func (sc *scratch) release() {
	// Drop references so pooled buffers keep no tenant strings alive.
	clear(sc.args[:])
	sc.keys = [2]string{}
	scratchPool.Put(sc)
}

// apply fills d from the script's reply and returns the reply code. An
// anchor mismatch updates the cache so the caller can retry.
func (s *Store) apply(c *Check, d *Decision, res []any, amount int64) (int64, error) {
	if len(res) < 4 {
		return 0, fmt.Errorf("unexpected script reply %v", res)
	}
	code, ok1 := res[0].(int64)
	cur, ok2 := res[1].(int64)
	limit, ok3 := res[2].(int64)
	ceiling, ok4 := res[3].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return 0, fmt.Errorf("unexpected script reply %v", res)
	}
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
		d.PlanName = replyString(res, 4)
		d.Warning = warning(d.Feature, cur, limit)
	case int64(Locked):
		d.Outcome = Locked
		d.PlanName = replyString(res, 4)
		d.Feature = lockedFlag(c.Flags, replyInt(res, 5))
	case int64(UnknownTenant):
		d.Outcome = UnknownTenant
	case codeAnchorMismatch:
		a, err := strconv.ParseInt(replyString(res, 4), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("tenant %q has a malformed anchor: %w", c.TenantID, err)
		}
		s.anchors.Store(c.TenantID, a)
	default:
		return 0, fmt.Errorf("unexpected script reply code %d", code)
	}
	return code, nil
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

func replyString(res []any, i int) string {
	if i >= len(res) {
		return ""
	}
	switch v := res[i].(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}

func replyInt(res []any, i int) int64 {
	if i >= len(res) {
		return -1
	}
	v, _ := res[i].(int64)
	return v
}
