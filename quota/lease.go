package quota

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

var (
	//go:embed lease.lua
	leaseSrc    string
	leaseScript = redis.NewScript(leaseSrc)
)

const (
	defaultLeaseTTL = 5 * time.Second
	// leaseAttempts bounds how often a request waits for another request's
	// lease call before making its own, which always settles it.
	leaseAttempts = 4
)

// WithLeaseTTL sets how long a lease lives in Redis without being renewed
// (default 5 s): the longest a crashed instance's unused units stay out of
// the pool. The flush interval is min(1 s, ttl/4) and a lease is used
// locally for at most 1.5 flush intervals after its call started.
func WithLeaseTTL(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.leaseTTL = d
		}
	}
}

// setLeaseTimings derives the flush interval and local validity from the
// TTL. Validity stays well inside the TTL so a live instance never admits
// from a lease Redis has already expired.
func (s *Store) setLeaseTimings() {
	if s.leaseTTL <= 0 {
		s.leaseTTL = defaultLeaseTTL
	}
	s.leaseEvery = min(time.Second, s.leaseTTL/4)
	s.leaseValid = s.leaseEvery + s.leaseEvery/2
}

// LeaseBound is the longest a plan change takes to apply to a lease-mode
// feature on this instance: a lease's entitlement snapshot and units are
// used for at most this long after its Redis call started.
func (s *Store) LeaseBound() time.Duration { return s.leaseValid }

// initLeaseFlags lists every configured flag so each lease call returns
// their state and flag checks on lease-mode routes need no Redis call.
func (s *Store) initLeaseFlags() {
	s.flagPos = make([]int, len(s.cfg.Features))
	for i, f := range s.cfg.Features {
		s.flagPos[i] = -1
		if f != nil && f.Kind == config.Flag {
			s.flagPos[i] = len(s.flagFields)
			s.flagFields = append(s.flagFields, s.feats[i].flagField)
		}
	}
}

// flagIndex is f's position in a lease snapshot's flags, or -1 when f is
// not part of the configuration.
func (s *Store) flagIndex(f *config.Feature) int {
	if f.Index < 0 || f.Index >= len(s.feats) || s.feats[f.Index] == nil || s.feats[f.Index].f != f {
		return -1
	}
	return s.flagPos[f.Index]
}

// reserveLease is Reserve for a lease-mode metered feature: m is
// modeReserve with amount > 0 or modeResponse (admit while a unit is
// available, charge on Commit).
func (s *Store) reserveLease(ctx context.Context, c *Check, d *Decision, fi *featureInfo, m mode, amount int64) error {
	for _, f := range c.Flags {
		if f != nil && s.flagIndex(f) < 0 {
			// A flag from outside the configuration: check it exactly
			// first; the meter still uses the lease.
			return s.reserveLeaseOddFlags(ctx, c, d, fi, m, amount)
		}
	}
	need := amount
	if m == modeResponse {
		need = 1
	}
	d.Feature, d.mode = fi.f, m

	var buf [128]byte
	for attempt := range leaseAttempts + maxAnchorRetries {
		anchorArg, anchor := s.anchorOf(c.TenantID)
		now := s.now()
		start, end := Period(anchor, now)
		d.Reset = end
		key := appendCounterKey(buf[:0], c.TenantID, fi, start.Unix())
		ls := s.leases.getOrAdd(key, func() *leaseState {
			return s.newLeaseState(string(key), c.TenantID, fi, anchorArg, start, end)
		})
		d.key = ls.key
		t := mono()
		if t-ls.lastUse.Load() > int64(time.Millisecond) {
			// Coarse on purpose: a store per request would make every CPU
			// fight over this cache line.
			ls.lastUse.Store(t)
		}
		if t < ls.validUntil.Load() && s.admitLocal(ls, c, d, m, amount) {
			return nil
		}

		gen := ls.gen.Load()
		ls.mu.Lock()
		if ls.retired.Load() {
			ls.mu.Unlock()
			continue
		}
		if ls.gen.Load() != gen && attempt < leaseAttempts-1 {
			// Another request's call finished while this one waited:
			// use its grant, or its verdict when nothing was left.
			ls.mu.Unlock()
			if mono() < ls.validUntil.Load() {
				if s.admitLocal(ls, c, d, m, amount) {
					return nil
				}
				if sn := ls.snap.Load(); sn != nil && sn.refused && !ls.retired.Load() {
					s.overLimit(ls, sn, d)
					return nil
				}
			}
			continue
		}
		done, err := s.refreshAndAdmit(ctx, ls, c, d, m, amount, need)
		ls.mu.Unlock()
		if err != nil {
			d.key, d.lease = ls.key, nil
			s.failed(c, d)
			return fmt.Errorf("quota reserve: %w", err)
		}
		if done {
			return nil
		}
	}
	d.lease = nil
	s.failed(c, d)
	return fmt.Errorf("quota reserve: tenant %q: %w", c.TenantID, errAnchorUnstable)
}

// reserveLeaseOddFlags checks flags the lease snapshot does not cover with
// a flags-only script call, then reserves the meter from the lease.
func (s *Store) reserveLeaseOddFlags(ctx context.Context, c *Check, d *Decision, fi *featureInfo, m mode, amount int64) error {
	fc := Check{TenantID: c.TenantID, Flags: c.Flags}
	if err := s.Reserve(ctx, &fc, d); err != nil || d.Outcome != Admitted {
		if d.Outcome == FailedOpen || d.Outcome == Unavailable {
			d.Feature = fi.f
			s.failed(c, d)
		}
		return err
	}
	mc := Check{TenantID: c.TenantID, Meter: c.Meter, Amount: c.Amount}
	*d = Decision{}
	return s.reserveLease(ctx, &mc, d, fi, m, amount)
}

func (s *Store) newLeaseState(key, tenant string, fi *featureInfo, anchor any, start, end time.Time) *leaseState {
	return &leaseState{
		key:    key,
		lkey:   leaseKey(tenant, fi, start.Unix()),
		ent:    entKey(tenant),
		field:  s.id + "." + strconv.FormatUint(s.leaseSeq.Add(1), 36),
		tenant: tenant,
		fi:     fi,
		anchor: anchor,
		end:    end,
	}
}

// leaseKey is the lease hash of a tenant's feature in a period.
func leaseKey(tenantID string, fi *featureInfo, periodStart int64) string {
	return tenantPrefix(tenantID) + ":lease:" + fi.f.Name + ":" + strconv.FormatInt(periodStart, 10)
}

// admitLocal decides from the lease snapshot and the local units alone. It
// returns false when the lease has too few units: the caller calls Redis.
func (s *Store) admitLocal(ls *leaseState, c *Check, d *Decision, m mode, amount int64) bool {
	sn := ls.snap.Load()
	if sn == nil || ls.retired.Load() {
		// A retired lease admits nothing more; the caller finds the
		// tenant's current one. A take that raced the retirement is
		// counted: the retired set reports it.
		return false
	}
	if s.lockedBy(c, sn, d) {
		return true
	}
	if m == modeResponse {
		if ls.avail.Load() < 1 {
			return false
		}
	} else if !ls.take(amount) {
		return false
	}
	s.admitted(ls, sn, d, m, amount)
	return true
}

// lockedBy fills d and reports true when a required flag is off in sn.
func (s *Store) lockedBy(c *Check, sn *leaseSnap, d *Decision) bool {
	for _, f := range c.Flags {
		if f == nil {
			continue
		}
		if i := s.flagIndex(f); i < 0 || i >= len(sn.flags) || sn.flags[i] != '1' {
			d.Outcome, d.Feature, d.PlanName = Locked, f, sn.plan
			return true
		}
	}
	return false
}

func (s *Store) admitted(ls *leaseState, sn *leaseSnap, d *Decision, m mode, amount int64) {
	d.Outcome = Admitted
	d.Current, d.Limit, d.Ceiling = ls.current(sn), sn.limit, sn.ceiling
	if m == modeReserve {
		d.Reserved = amount
	}
	d.Warning = warning(d.Feature, d.Current, d.Limit)
	d.lease = ls
}

func (s *Store) overLimit(ls *leaseState, sn *leaseSnap, d *Decision) {
	d.Outcome = OverLimit
	d.Current, d.Limit, d.Ceiling = ls.current(sn), sn.limit, sn.ceiling
	d.PlanName = sn.plan
	d.Warning = warning(d.Feature, d.Current, d.Limit)
}

// refreshAndAdmit makes a lease call (ls.mu held) and decides the request
// from its reply, taking the request's units straight from the grant so
// the caller cannot lose them to others. done is false when the request
// must start over (anchor changed).
func (s *Store) refreshAndAdmit(ctx context.Context, ls *leaseState, c *Check, d *Decision, m mode, amount, need int64) (bool, error) {
	want := max(s.chunkLocked(ls), need)
	grant, code, err := s.leaseCallLocked(ctx, ls, want, need)
	if err != nil {
		return false, err
	}
	switch code {
	case int64(UnknownTenant):
		d.Outcome = UnknownTenant
		return true, nil
	case codeAnchorMismatch:
		return false, nil
	}
	sn := ls.snap.Load()
	switch {
	case s.lockedBy(c, sn, d):
		ls.avail.Add(grant)
	case grant < need:
		ls.avail.Add(grant)
		s.overLimit(ls, sn, d)
	case m == modeResponse:
		ls.avail.Add(grant)
		s.admitted(ls, sn, d, m, amount)
	default:
		ls.used.Add(need)
		ls.taken.Add(need)
		ls.avail.Add(grant - need)
		s.admitted(ls, sn, d, m, amount)
	}
	return true, nil
}

// chunkLocked updates the rate estimate from the units taken since the last
// call and returns the chunk to ask for (ls.mu held).
func (s *Store) chunkLocked(ls *leaseState) int64 {
	if ls.lastCall != 0 {
		ls.rate = nextRate(ls.rate, ls.taken.Load(), time.Duration(mono()-ls.lastCall))
	}
	return chunkFor(ls.rate)
}

// leaseCallLocked reports this instance's usage, gives back its unused
// units and asks for want more (ls.mu held). A call whose reply was lost is
// first re-sent unchanged: the script recognises its sequence number and
// does not apply it twice. It returns the units granted (not yet in avail)
// and the script's code.
func (s *Store) leaseCallLocked(ctx context.Context, ls *leaseState, want, need int64) (int64, int64, error) {
	if ls.retry != nil {
		g, code, err := s.runLease(ctx, ls, *ls.retry)
		if err != nil {
			return 0, 0, err
		}
		ls.retry = nil
		if code == 1 {
			ls.avail.Add(g)
		}
		if ls.retired.Load() && want > 0 {
			// The re-sent call found the anchor changed: no new units for
			// this lease; the caller starts over on the tenant's current
			// one, and the flush settles what this one still holds.
			return 0, codeAnchorMismatch, nil
		}
	}
	ls.seq++
	call := leaseCall{
		seq:      ls.seq,
		returned: ls.avail.Swap(0),
		consumed: ls.used.Swap(0),
		want:     want,
		need:     need,
	}
	ls.taken.Store(0)
	g, code, err := s.runLease(ctx, ls, call)
	if err != nil {
		// Redis may or may not have applied it; the re-send decides.
		ls.retry = &call
		return 0, 0, err
	}
	return g, code, nil
}

// runLease runs the lease script for call and publishes its snapshot.
func (s *Store) runLease(ctx context.Context, ls *leaseState, call leaseCall) (int64, int64, error) {
	started := mono()
	ttl := counterTTL(ls.end, s.now())
	if ttl <= 0 {
		// The period's counter is gone; reporting would resurrect it.
		ttl, call.consumed, call.want, call.need = 1, 0, 0, 0
	}
	args := make([]any, 0, 11+len(s.flagFields))
	args = append(args, ls.anchor, ls.fi.grace, ttl, ls.fi.limitField, ls.field,
		strconv.FormatUint(call.seq, 10), call.consumed, call.returned, call.want, call.need,
		s.leaseTTL.Milliseconds())
	args = append(args, s.flagFields...)
	res, err := leaseScript.Run(ctx, s.rdb, []string{ls.ent, ls.key, ls.lkey}, args...).Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("lease %s: %w", ls.key, err)
	}
	if len(res) < 8 {
		return 0, 0, fmt.Errorf("lease %s: unexpected script reply %v", ls.key, res)
	}
	var n [6]int64
	for i := range n {
		v, ok := res[i].(int64)
		if !ok {
			return 0, 0, fmt.Errorf("lease %s: unexpected script reply %v", ls.key, res)
		}
		n[i] = v
	}
	code, grant := n[0], n[4]
	if call.consumed != 0 && (code == 1 || code == int64(UnknownTenant) || code == codeAnchorMismatch) {
		// The script applied the report before deciding any of these.
		s.changed(ls.key)
	}
	switch code {
	case 1:
		ls.snap.Store(&leaseSnap{
			used: n[1], limit: n[2], ceiling: n[3], others: n[5],
			plan: replyString(res, 6), flags: replyString(res, 7),
			refused: call.want > 0 && grant < max(call.need, 1),
		})
		ls.lastCall = started
		ls.validUntil.Store(started + int64(s.leaseValid))
	case int64(UnknownTenant):
		ls.validUntil.Store(0)
	case codeMalformed:
		// Nothing was written: the call is kept and re-sent (its
		// sequence number unchanged) until the value is repaired.
		what, ok := res[6].(int64)
		if !ok {
			return 0, 0, fmt.Errorf("lease %s: unexpected script reply %v", ls.key, res)
		}
		if what == malformedLease {
			return 0, 0, fmt.Errorf("lease %s: malformed lease hash %s in Redis: not a hash", ls.key, ls.lkey)
		}
		return 0, 0, fmt.Errorf("lease %s: %w", ls.key, malformedError(what, ls.tenant, ls.fi.f, ls.key, nil))
	case codeAnchorMismatch:
		a, err := strconv.ParseInt(replyString(res, 6), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("lease %s: tenant has a malformed anchor: %w", ls.key, err)
		}
		s.anchors.Store(ls.tenant, a)
		// The period was wrong: this state is done. Units released into it
		// from now on go straight to the counter; what it still holds (taken
		// or released while this call was on its way) is reported by the
		// flush, from the retired set.
		s.retire(ls)
	default:
		return 0, 0, fmt.Errorf("lease %s: unexpected script reply code %d", ls.key, code)
	}
	ls.gen.Add(1)
	return grant, code, nil
}

// appendCounterKey is counterKey into a caller's buffer, so hot paths can
// look a key up without allocating.
func appendCounterKey(b []byte, tenantID string, fi *featureInfo, periodStart int64) []byte {
	b = append(b, "tg:{"...)
	b = append(b, tenantID...)
	b = append(b, '}')
	b = append(b, fi.kindTag...)
	if fi.f.Kind == config.Metered {
		b = strconv.AppendInt(b, periodStart, 10)
	}
	return b
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
