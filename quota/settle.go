package quota

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/config"
)

// Release gives back d.Reserved after the upstream answered non-2xx, timed
// out or failed. The counter never goes below zero. When Redis cannot be
// reached the give-back is kept locally and reconciled later; when it may
// have been applied before its reply was lost, it is dropped (mayHaveRun). Releasing
// twice is harmless: d.Reserved is cleared.
func (s *Store) Release(ctx context.Context, d *Decision) {
	if d == nil || d.Outcome != Admitted || d.Reserved <= 0 || d.key == "" {
		return
	}
	n := d.Reserved
	d.Reserved = 0
	if ls := d.lease; ls != nil && !ls.retired.Load() {
		// Back into the lease, for this instance's next requests; the
		// next report subtracts it if it was already counted.
		ls.giveBack(n)
		return
	}
	s.adjust(ctx, d, -n)
}

// Commit settles a forwarded request that got a 2xx. Lease mode behaves
// the same from the outside: reserved units were counted by Reserve (in the
// lease; reported with the next lease call or flush) and Release gives
// them back to the lease.
//
//   - AmountResponseHeader: amount is charged now. The request was admitted
//     while usage was below the ceiling, so this one request may take usage
//     past the ceiling by its own amount; the next one is refused.
//   - Gauge delete: the counter drops by |amount|, never below zero, and d
//     takes the usage after it and the limit (for the response's headers).
//   - FailedOpen: amount (signed) is added to the local pending counts that
//     the reconcile loop pushes into Redis once it answers again.
//   - Anything else was fully counted by Reserve: nothing to do.
//
// A Redis failure here keeps the change locally for the reconcile loop, so
// no settled usage is lost.
func (s *Store) Commit(ctx context.Context, d *Decision, amount int64) {
	if d == nil || d.key == "" || amount == 0 {
		return
	}
	switch d.Outcome {
	case FailedOpen:
		s.addPending(d.key, amount, d.expiry())
	case Admitted:
		switch d.mode {
		case modeResponse:
			if amount > 0 {
				s.chargeResponse(ctx, d, amount)
			}
		case modeDelete:
			s.deleteGauge(ctx, d, max(amount, -amount))
		}
	}
}

// chargeResponse charges an amount known only after the upstream answered.
// In lease mode it comes out of the lease as far as the lease reaches
// (reported with the next lease call); the rest, and everything in exact
// mode, is added to the counter now, so other instances see the overshoot
// at once.
func (s *Store) chargeResponse(ctx context.Context, d *Decision, amount int64) {
	if ls := d.lease; ls != nil && !ls.retired.Load() {
		for range 64 {
			a := ls.avail.Load()
			n := min(a, amount)
			if n <= 0 {
				break
			}
			if ls.avail.CompareAndSwap(a, a-n) {
				ls.used.Add(n)
				ls.taken.Add(n)
				amount -= n
				break
			}
		}
		if amount == 0 {
			return
		}
	}
	s.adjust(ctx, d, amount)
}

// adjust applies delta to d's counter now, or keeps it for reconcile when
// Redis fails.
func (s *Store) adjust(ctx context.Context, d *Decision, delta int64) {
	var ttl int64
	if d.Feature != nil && d.Feature.Kind == config.Metered && !d.Reset.IsZero() {
		ttl = counterTTL(d.Reset, s.now())
		if ttl <= 0 {
			// The period's counter is already gone; changing it would
			// only resurrect it.
			return
		}
	}
	sa := getScriptArgs()
	defer sa.release()
	_, keyArg := boxedString(append(sa.buf[:0], d.key...))
	args := append(sa.args[:0], nil, nil, oneKeyArg, keyArg, boxedInt(delta), boxedInt(ttl), markerTTLArg)
	if _, err := adjustCall.runInt(ctx, s.hot, args); err != nil {
		if delta < 0 && mayHaveRun(err) {
			s.log.Warn("quota release may have been applied before its reply was lost; not retried, so it is never applied twice",
				zap.String("key", d.key), zap.Int64("delta", delta), zap.Error(err))
			return
		}
		s.log.Warn("quota adjust failed; kept for reconcile",
			zap.String("key", d.key), zap.Int64("delta", delta), zap.Error(err))
		s.addPending(d.key, delta, d.expiry())
	}
}

// mayHaveRun reports whether a failed call may still have been applied:
// it was sent, and its reply was lost (a timeout, a dropped connection). A
// call the pipeline never wrote, one whose dial failed, or one Redis
// answered with an error (the scripts check before they write) did not run.
//
// A decrement that may have run is dropped, not kept for reconcile:
// applied twice it would take units off that other requests used, and the
// tenant could pass its limit by them; dropped, at worst a failed request
// stays counted. An increment that may have run is kept, and may be counted
// twice, as a reserve that failed open may (docs/design.md, "When Redis
// fails").
func mayHaveRun(err error) bool {
	if errors.Is(err, errNotSent) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		return false
	}
	var oe *net.OpError
	return !(errors.As(err, &oe) && oe.Op == "dial")
}

// deleteGauge takes n units off d's gauge, never below zero, and fills d's
// Current, Limit, Ceiling and Warning from the reply. When Redis fails the
// decrement is kept for reconcile and d keeps what it had (no limit when
// the delete was admitted without a check, so no headers).
func (s *Store) deleteGauge(ctx context.Context, d *Decision, n int64) {
	if n == 0 {
		return
	}
	fi := s.info(d.Feature)
	sa := getScriptArgs()
	defer sa.release()
	_, entArg := boxedString(appendEntKey(sa.buf[:0], d.tenant))
	_, keyArg := boxedString(append(sa.buf[:0], d.key...))
	args := append(sa.args[:0], nil, nil, twoArg, entArg, keyArg, boxedInt(n), fi.limitField, fi.grace)
	res, err := gaugeDeleteCall.runSlice(ctx, s.hot, args)
	if err == nil && (len(res) < 4 || (res[0] == codeMalformed && replyInt(res, 4) != malformedLimit)) {
		// Nothing changed and nothing will: reconcile would fail the same way.
		s.log.Warn("gauge delete not counted: the gauge in Redis is not an integer, or not a string",
			zap.String("key", d.key), zap.Int64s("reply", res))
		return
	}
	if err != nil {
		if mayHaveRun(err) {
			// As for a release (mayHaveRun): never applied twice.
			s.log.Warn("gauge delete may have been applied before its reply was lost; not retried, so it is never applied twice",
				zap.String("key", d.key), zap.Int64("delta", -n), zap.Error(err))
			return
		}
		s.log.Warn("gauge delete failed; kept for reconcile",
			zap.String("key", d.key), zap.Int64("delta", -n), zap.Error(err))
		s.addPending(d.key, -n, d.expiry())
		return
	}
	d.Current = res[1]
	if res[0] == codeMalformed {
		// Counted, but the limit is no integer: no headers.
		s.log.Warn("gauge delete counted, but its limit in Redis is not an integer",
			zap.String("tenant", d.tenant), zap.String("feature", d.Feature.Name))
	}
	if res[0] == int64(UnknownTenant) || res[0] == codeMalformed {
		d.Limit, d.Ceiling, d.Warning = -1, -1, false
		return
	}
	d.Limit, d.Ceiling = res[2], res[3]
	d.Warning = warning(d.Feature, d.Current, d.Limit)
}

// expiry is when d's counter stops mattering: a week after its period
// ends; zero (never) for gauges.
func (d *Decision) expiry() time.Time {
	if d.Feature == nil || d.Feature.Kind != config.Metered || d.Reset.IsZero() {
		return time.Time{}
	}
	return d.Reset.Add(counterGrace)
}

var (
	oneKeyArg    any = 1
	markerTTLArg any = markerTTL
)
