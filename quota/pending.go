package quota

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// pendingCount is usage counted locally for one Redis counter while Redis
// could not be reached.
//
// Delivery is exactly once even when a push times out after Redis applied
// it: counts move into a batch with a unique id, the script applies a batch
// only together with setting its marker key, and a failed batch is retried
// under the same id until Redis confirms it. Counts arriving meanwhile wait
// in delta for the next batch.
type pendingCount struct {
	expire   time.Time // after this the counter is gone: drop; zero for gauges
	delta    int64     // not yet batched
	inflight int64     // the batch being delivered
	batch    string    // the batch's id, "" when none
}

// markerTTL is how long a delivered batch's marker is kept; retries of a
// batch happen within reconcile intervals, far sooner.
const markerTTL int64 = 24 * 60 * 60

func (s *Store) addPending(key string, delta int64, expire time.Time) {
	s.pmu.Lock()
	p := s.pending[key]
	if p == nil {
		p = &pendingCount{expire: expire}
		s.pending[key] = p
	}
	p.delta += delta
	s.pmu.Unlock()
}

func (s *Store) hasPending() bool {
	s.pmu.Lock()
	n := len(s.pending)
	s.pmu.Unlock()
	return n > 0
}

// dropPending forgets the pending counts of every key starting with prefix.
func (s *Store) dropPending(prefix string) {
	s.pmu.Lock()
	for k := range s.pending {
		if strings.HasPrefix(k, prefix) {
			delete(s.pending, k)
		}
	}
	s.pmu.Unlock()
}

type delivery struct {
	key   string
	p     *pendingCount
	delta int64
	batch string
	ttl   int64
}

// Reconcile pushes the usage counted locally while Redis was unreachable
// into Redis, each count exactly once. The background loop calls it every
// cfg.Redis.ReconcileInterval; it is exported for tests and shutdown
// paths. It stops at the first Redis error and leaves the rest for the
// next call.
func (s *Store) Reconcile(ctx context.Context) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()

	now := s.now()
	var jobs []delivery
	s.pmu.Lock()
	for key, p := range s.pending {
		if p.batch == "" {
			if p.delta == 0 {
				delete(s.pending, key)
				continue
			}
			p.inflight, p.delta = p.delta, 0
			p.batch = s.id + "-" + strconv.FormatUint(s.batch.Add(1), 36)
		}
		var ttl int64
		if !p.expire.IsZero() {
			ttl = ceilSeconds(p.expire.Sub(now))
			if ttl <= 0 {
				s.log.Warn("dropping usage counted while redis was down: its period has expired",
					zap.String("key", key), zap.Int64("delta", p.inflight+p.delta))
				delete(s.pending, key)
				continue
			}
		}
		jobs = append(jobs, delivery{key: key, p: p, delta: p.inflight, batch: p.batch, ttl: ttl})
	}
	s.pmu.Unlock()

	var err error
	for _, j := range jobs {
		if err = ctx.Err(); err != nil {
			break
		}
		keys := [2]string{j.key, j.key + ":d:" + j.batch}
		if err = adjustScript.Run(ctx, s.rdb, keys[:], j.delta, j.ttl, markerTTL).Err(); err != nil {
			err = fmt.Errorf("quota reconcile %s: %w", j.key, err)
			break
		}
		s.pmu.Lock()
		j.p.inflight, j.p.batch = 0, ""
		if j.p.delta == 0 && s.pending[j.key] == j.p {
			delete(s.pending, j.key)
		}
		s.pmu.Unlock()
		s.changed(j.key)
	}

	switch {
	case err != nil && !s.reconcileFailing:
		s.reconcileFailing = true
		s.log.Warn("quota reconcile failed; retrying", zap.Error(err))
	case err == nil && s.reconcileFailing && len(jobs) > 0:
		s.reconcileFailing = false
		s.log.Info("quota reconcile caught up", zap.Int("counters", len(jobs)))
	}
	return err
}

func (s *Store) loop() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if !s.hasPending() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), max(s.interval, 2*time.Second))
			_ = s.Reconcile(ctx)
			cancel()
		}
	}
}

// finalReconcile is Close's last attempt; what it cannot deliver is lost
// and reported.
func (s *Store) finalReconcile() error {
	if !s.hasPending() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.Reconcile(ctx)
	if s.hasPending() {
		if err == nil {
			err = errors.New("counts remain")
		}
		return fmt.Errorf("quota close: usage counted while redis was down was not delivered: %w", err)
	}
	return nil
}
