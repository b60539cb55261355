package quota

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// leaseLoop reports lease usage every flush interval, so counters in Redis
// trail real usage by at most about one interval — also the most usage a
// crashed instance can lose.
func (s *Store) leaseLoop() {
	defer close(s.leaseDone)
	t := time.NewTicker(s.leaseEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(s.leaseEvery, 2*time.Second))
			err := s.FlushLeases(ctx)
			cancel()
			switch {
			case err != nil && !failing:
				failing = true
				s.log.Warn("quota lease flush failed; retrying", zap.Error(err))
			case err == nil && failing:
				failing = false
				s.log.Info("quota lease flush caught up")
			}
		}
	}
}

// FlushLeases reports the usage of every lease-mode lease of this instance
// and renews the active ones, gives back the units of idle ones and forgets
// leases idle for a few intervals. It also reports what retired leases
// still hold. The background loop calls it every flush interval; it is
// exported for tests and shutdown paths. A lease busy with a request's own
// Redis call is skipped: that call reports it.
func (s *Store) FlushLeases(ctx context.Context) error {
	cutoff := mono() - int64(3*s.leaseEvery)
	var errs []error
	// The table first: a lease its flush retires is settled in the same
	// round.
	for _, list := range [2]func() []*leaseState{s.leases.all, s.retiredLeases} {
		for _, ls := range list() {
			if !ls.mu.TryLock() {
				continue
			}
			err := s.flushLease(ctx, ls, false, cutoff)
			ls.mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				if ctx.Err() != nil {
					return errors.Join(errs...)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// flushLease settles one lease (ls.mu held). final gives everything back.
func (s *Store) flushLease(ctx context.Context, ls *leaseState, final bool, cutoff int64) error {
	if ls.retired.Load() {
		return s.settleRetired(ctx, ls, final, cutoff)
	}
	ended := !s.now().Before(ls.end)
	active := ls.retry != nil || ls.used.Load() != 0 || ls.taken.Load() != 0
	switch {
	case active && !final && !ended:
		g, code, err := s.leaseCallLocked(ctx, ls, s.chunkLocked(ls), 0)
		if err != nil {
			return fmt.Errorf("quota lease flush: %w", err)
		}
		if code == 1 {
			ls.avail.Add(g)
		}
	case active || ls.avail.Load() != 0:
		if _, _, err := s.leaseCallLocked(ctx, ls, 0, 0); err != nil {
			return fmt.Errorf("quota lease flush: %w", err)
		}
	case final:
		s.leases.remove(ls)
	case ls.idle(cutoff):
		// Through the retired set: a release that raced this still
		// reaches Redis.
		s.retire(ls)
	}
	return nil
}

// settleRetired reports what a retired lease still holds and gives its
// units back (ls.mu held): units requests took or released while the call
// that retired it was on its way, or while they raced its retirement. The
// lease script adds a report to the counter before it checks the anchor,
// so the usage lands in the counter the requests' decisions named even
// when the period was wrong. The lease is forgotten once it holds nothing
// and no request has picked it up since cutoff (at once when final).
func (s *Store) settleRetired(ctx context.Context, ls *leaseState, final bool, cutoff int64) error {
	if ls.retry != nil || ls.used.Load() != 0 || ls.avail.Load() != 0 {
		if _, _, err := s.leaseCallLocked(ctx, ls, 0, 0); err != nil {
			return fmt.Errorf("quota lease flush: retired lease: %w", err)
		}
	}
	if final || (ls.retry == nil && ls.used.Load() == 0 && ls.avail.Load() == 0 && ls.lastUse.Load() < cutoff) {
		s.forgetRetired(ls)
	}
	return nil
}

// retire takes ls out of the table (ls.retired: no request admits from it
// any more) into the retired set, where the flush reports what it still
// holds before forgetting it.
func (s *Store) retire(ls *leaseState) {
	s.leases.remove(ls)
	s.retiredMu.Lock()
	s.retired[ls] = struct{}{}
	s.retiredMu.Unlock()
}

func (s *Store) retiredLeases() []*leaseState {
	s.retiredMu.Lock()
	defer s.retiredMu.Unlock()
	out := make([]*leaseState, 0, len(s.retired))
	for ls := range s.retired {
		out = append(out, ls)
	}
	return out
}

func (s *Store) forgetRetired(ls *leaseState) {
	s.retiredMu.Lock()
	delete(s.retired, ls)
	s.retiredMu.Unlock()
}

// finalLeases is Close's last report: every lease, retired ones included,
// gives its units back and reports its usage. Usage whose report fails is
// handed to the reconcile path (which may count it twice if Redis applied
// the lost call).
func (s *Store) finalLeases() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var errs []error
	// The table first: a lease its last call retires is in the retired
	// set by the time that is walked.
	for _, list := range [2]func() []*leaseState{s.leases.all, s.retiredLeases} {
		for _, ls := range list() {
			ls.mu.Lock()
			err := s.flushLease(ctx, ls, true, 0)
			if err != nil {
				errs = append(errs, err)
				if ls.retry != nil && ls.retry.consumed != 0 {
					s.addPending(ls.key, ls.retry.consumed, ls.end.Add(counterGrace))
					ls.retry = nil
				}
				if n := ls.used.Swap(0); n != 0 {
					s.addPending(ls.key, n, ls.end.Add(counterGrace))
				}
			}
			s.leases.remove(ls)
			s.forgetRetired(ls)
			ls.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// dropLeases forgets this instance's leases of a deleted tenant, retired
// ones included: their units must not admit anything more, and their usage
// has nowhere to go.
func (s *Store) dropLeases(tenantID string) {
	for _, ls := range s.leases.all() {
		if ls.tenant == tenantID {
			s.leases.remove(ls)
			ls.avail.Store(0)
		}
	}
	for _, ls := range s.retiredLeases() {
		if ls.tenant == tenantID {
			s.forgetRetired(ls)
			ls.avail.Store(0)
		}
	}
}
