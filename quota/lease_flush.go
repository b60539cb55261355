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
// leases idle for a few intervals. The background loop calls it every flush
// interval; it is exported for tests and shutdown paths. A lease busy with
// a request's own Redis call is skipped: that call reports it.
func (s *Store) FlushLeases(ctx context.Context) error {
	cutoff := mono() - int64(3*s.leaseEvery)
	var errs []error
	for _, ls := range s.leases.all() {
		if !ls.mu.TryLock() {
			continue
		}
		err := s.flushLease(ctx, ls, false, cutoff)
		ls.mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// flushLease settles one lease (ls.mu held). final gives everything back.
func (s *Store) flushLease(ctx context.Context, ls *leaseState, final bool, cutoff int64) error {
	if ls.retired.Load() {
		return nil
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
	case final || ls.idle(cutoff):
		s.leases.remove(ls)
	}
	return nil
}

// finalLeases is Close's last report: every lease gives its units back and
// reports its usage. Usage whose report fails is handed to the reconcile
// path (which may count it twice if Redis applied the lost call).
func (s *Store) finalLeases() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var errs []error
	for _, ls := range s.leases.all() {
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
		ls.mu.Unlock()
	}
	return errors.Join(errs...)
}

// dropLeases forgets this instance's leases of a deleted tenant: their
// units must not admit anything more, and their usage has nowhere to go.
func (s *Store) dropLeases(tenantID string) {
	for _, ls := range s.leases.all() {
		if ls.tenant == tenantID {
			s.leases.remove(ls)
			ls.avail.Store(0)
		}
	}
}
