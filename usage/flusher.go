package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Flusher sends the counters the proxy touched to the billing store, as
// absolute snapshots, every interval; a full sweep of Redis marks every
// counter now and then so what an earlier (killed) process admitted is
// delivered too. It is safe for concurrent use.
type Flusher struct {
	rdb        redis.UniversalClient
	sink       Sink
	proxyID    string
	interval   time.Duration
	sweepEvery time.Duration
	maxBackoff time.Duration
	maxItems   int
	epochKey   string
	// sweepTenants is the glob of tenant ids the sweep scans; tests
	// narrow it to their own tenants on a shared Redis.
	sweepTenants string
	log          *zap.Logger
	useScript    bool // read with a script per tenant instead of MULTI

	dirty dirtySet

	mu         sync.Mutex // one flush at a time; guards the fields below
	pending    map[string]struct{}
	inflight   *Batch // sent and not acknowledged: resent as is (same id)
	epoch      int64  // epoch of the last flush, 0 before the first
	staleEpoch int64  // epoch the store rejected; 0 when none
	staleAt    time.Time
	needSweep  bool
	lastSweep  time.Time
	backoff    time.Duration
	retryAt    time.Time
	failing    bool
	waiting    bool
}

// FlusherOption configures a Flusher.
type FlusherOption func(*Flusher)

// WithInterval sets how often dirty counters are flushed (default 1 s).
func WithInterval(d time.Duration) FlusherOption {
	return func(f *Flusher) {
		if d > 0 {
			f.interval = d
		}
	}
}

// WithSweepInterval sets how often every counter in Redis is marked dirty
// (default 60 s). A sweep also runs on the first flush and after Redis was
// restored.
func WithSweepInterval(d time.Duration) FlusherOption {
	return func(f *Flusher) {
		if d > 0 {
			f.sweepEvery = d
		}
	}
}

// WithMaxBackoff caps the wait between attempts while the sink fails
// (default 5 s).
func WithMaxBackoff(d time.Duration) FlusherOption {
	return func(f *Flusher) {
		if d > 0 {
			f.maxBackoff = d
		}
	}
}

// WithProxyID names this proxy in its batches (default random).
func WithProxyID(id string) FlusherOption {
	return func(f *Flusher) {
		if id != "" && len(id) <= maxIDLen {
			f.proxyID = id
		}
	}
}

// WithMaxBatchItems caps the items of one batch (default and maximum
// MaxBatchItems).
func WithMaxBatchItems(n int) FlusherOption {
	return func(f *Flusher) {
		if n > 0 && n <= MaxBatchItems {
			f.maxItems = n
		}
	}
}

// WithFlusherLogger sets the logger; the default discards.
func WithFlusherLogger(l *zap.Logger) FlusherOption {
	return func(f *Flusher) {
		if l != nil {
			f.log = l
		}
	}
}

const (
	defaultFlushInterval = time.Second
	defaultSweepInterval = time.Minute
	defaultMaxBackoff    = 5 * time.Second
	// maxRoundsPerFlush bounds how many batches one flush sends; the rest
	// waits for the next tick.
	maxRoundsPerFlush = 100
	scanCount         = 1000
	// maxScanSteps bounds one sweep: 100 million keys at COUNT 1000.
	maxScanSteps = 100_000
)

// NewFlusher returns a Flusher reading counters from rdb and delivering
// them to sink. Start it with Run; Close flushes one last time.
func NewFlusher(rdb redis.UniversalClient, sink Sink, opts ...FlusherOption) *Flusher {
	f := &Flusher{
		rdb:          rdb,
		sink:         sink,
		proxyID:      "proxy-" + randomHex(6),
		interval:     defaultFlushInterval,
		sweepEvery:   defaultSweepInterval,
		maxBackoff:   defaultMaxBackoff,
		maxItems:     MaxBatchItems,
		epochKey:     EpochKey,
		sweepTenants: "*",
		log:          zap.NewNop(),
		pending:      make(map[string]struct{}),
		needSweep:    true,
	}
	_, f.useScript = rdb.(*redis.ClusterClient)
	for _, o := range opts {
		o(f)
	}
	return f
}

// Touch marks a counter key (quota.Decision.CounterKey) as changed. It is
// cheap and allocates nothing when the key is already marked; "" is
// ignored.
func (f *Flusher) Touch(counterKey string) {
	if counterKey != "" {
		f.dirty.mark(counterKey)
	}
}

// Run flushes every interval until ctx is done, then returns nil. While
// the sink fails it backs off (up to the maximum backoff) and keeps
// everything for later; values are re-read when retried, so nothing Redis
// admitted is lost.
func (f *Flusher) Run(ctx context.Context) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		_ = f.flush(ctx, false)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Flush runs one flush now, ignoring any backoff. It returns the first
// error met; what was not delivered is kept for the next flush.
func (f *Flusher) Flush(ctx context.Context) error {
	return f.flush(ctx, true)
}

// Close makes a final flush (call it after the proxy stopped admitting
// requests). It does not close rdb.
func (f *Flusher) Close(ctx context.Context) error {
	if err := f.flush(ctx, true); err != nil {
		return fmt.Errorf("usage flusher close: %w", err)
	}
	return nil
}

var (
	// errNoEpoch: Redis has no tg:epoch (fresh or wiped, not yet
	// restored). Flushing now could overwrite billing with zeros.
	errNoEpoch = errors.New("redis has no epoch yet: waiting for the restore")
	// errEpochChanged: the epoch changed while values were read.
	errEpochChanged = errors.New("redis epoch changed during the read")
)

func (f *Flusher) flush(ctx context.Context, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !force && time.Now().Before(f.retryAt) {
		return nil
	}
	err := f.flushLocked(ctx)
	switch {
	case err == nil:
		if f.failing || f.waiting {
			f.log.Info("usage flush recovered")
		}
		f.failing, f.waiting, f.backoff, f.retryAt = false, false, 0, time.Time{}
	case errors.Is(err, errNoEpoch) || errors.Is(err, errEpochChanged):
		if !f.waiting {
			f.log.Warn("usage flush held back", zap.Error(err))
		}
		f.waiting = true
	default:
		f.backoff = min(max(2*f.backoff, f.interval), f.maxBackoff)
		f.retryAt = time.Now().Add(f.backoff)
		if !f.failing {
			f.log.Warn("usage flush failed; retrying", zap.Error(err), zap.Duration("backoff", f.backoff))
		}
		f.failing = true
	}
	if err != nil {
		return fmt.Errorf("usage flush: %w", err)
	}
	return nil
}

// staleRetry is how long a flusher whose epoch the store refused waits
// before sweeping and offering everything again under an unchanged epoch.
const staleRetry = 5 * time.Second

func (f *Flusher) flushLocked(ctx context.Context) error {
	epoch, err := f.readEpoch(ctx)
	if err != nil {
		return err
	}
	if f.staleEpoch != 0 {
		if epoch == f.staleEpoch && time.Since(f.staleAt) < staleRetry {
			// The store moved past the epoch this Redis carries: nothing
			// read here can be delivered until Redis is restored again.
			f.dirty.clear()
			clear(f.pending)
			return fmt.Errorf("epoch %d: %w", epoch, ErrStaleEpoch)
		}
		// A new epoch, or the same number again: a restore from another
		// database can hand out the number the store refused, so after a
		// while everything is swept and offered once more.
		f.staleEpoch = 0
		f.needSweep = true
	}
	if f.epoch != 0 && epoch != f.epoch {
		// Redis was restored: values read before belong to the old
		// generation, and every counter may have changed.
		f.inflight = nil
		f.needSweep = true
	}
	f.epoch = epoch

	if f.inflight != nil {
		if err := f.send(ctx, f.inflight); err != nil {
			return err
		}
		f.inflight = nil
	}
	if f.needSweep || time.Since(f.lastSweep) >= f.sweepEvery {
		if err := f.sweep(ctx); err != nil {
			return err
		}
		f.needSweep, f.lastSweep = false, time.Now()
	}
	f.dirty.drainInto(f.pending)

	keys := make([]string, 0, min(len(f.pending), f.maxItems))
	for range maxRoundsPerFlush {
		if len(f.pending) == 0 {
			return nil
		}
		keys = keys[:0]
		for k := range f.pending {
			if len(keys) == f.maxItems {
				break
			}
			keys = append(keys, k)
			delete(f.pending, k)
		}
		b, err := f.read(ctx, epoch, keys)
		if err != nil {
			f.requeue(keys)
			return err
		}
		if len(b.Items) == 0 {
			continue
		}
		f.inflight = &b
		if err := f.send(ctx, &b); err != nil {
			if f.inflight != nil {
				// Also re-read them next time: the retry of this batch
				// carries old values, the next batch the current ones.
				f.requeue(keys)
			}
			return err
		}
		f.inflight = nil
	}
	return nil
}

func (f *Flusher) requeue(keys []string) {
	for _, k := range keys {
		f.pending[k] = struct{}{}
	}
}

// send delivers b. A rejected epoch drops everything read under it; a
// malformed batch is dropped (retrying cannot fix it); any other error
// keeps b in flight for a retry under the same id.
func (f *Flusher) send(ctx context.Context, b *Batch) error {
	err := f.sink.Send(ctx, *b)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrStaleEpoch):
		f.inflight = nil
		f.dirty.clear()
		clear(f.pending)
		f.staleEpoch, f.staleAt = b.Epoch, time.Now()
	case errors.Is(err, ErrInvalidBatch):
		f.log.Error("usage batch rejected as invalid; dropped", zap.String("batch_id", b.ID), zap.Error(err))
		f.inflight = nil
	}
	return fmt.Errorf("send batch %s: %w", b.ID, err)
}

func (f *Flusher) readEpoch(ctx context.Context) (int64, error) {
	s, err := f.rdb.Get(ctx, f.epochKey).Result()
	if errors.Is(err, redis.Nil) {
		return 0, errNoEpoch
	}
	if err != nil {
		return 0, fmt.Errorf("read epoch: %w", err)
	}
	return parseEpoch(s)
}

func parseEpoch(s string) (int64, error) {
	e, err := strconv.ParseInt(s, 10, 64)
	if err != nil || e <= 0 {
		return 0, fmt.Errorf("%s holds %q, not a positive epoch", EpochKey, s)
	}
	return e, nil
}

// sweep marks every counter in Redis (of the swept tenants) dirty.
func (f *Flusher) sweep(ctx context.Context) error {
	patterns := [2]string{
		"tg:{" + f.sweepTenants + "}:m:*",
		"tg:{" + f.sweepTenants + "}:g:*",
	}
	var mu sync.Mutex // ForEachMaster scans the masters concurrently
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		for _, pat := range patterns {
			var cursor uint64
			for range maxScanSteps {
				keys, next, err := c.Scan(ctx, cursor, pat, scanCount).Result()
				if err != nil {
					return fmt.Errorf("sweep: %w", err)
				}
				mu.Lock()
				for _, k := range keys {
					if _, ok := parseCounterKey(k); ok {
						f.pending[k] = struct{}{}
					}
				}
				mu.Unlock()
				if cursor = next; cursor == 0 {
					break
				}
			}
		}
		return nil
	}
	if cc, ok := f.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	}
	return scan(ctx, f.rdb)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on supported platforms; the clock
		// still keeps ids apart.
		return strconv.FormatInt(time.Now().UnixNano(), 16)
	}
	return hex.EncodeToString(b)
}
