// Package quota enforces plan limits exactly and atomically in Redis. Each
// metered request costs one Lua script call that checks the tenant, its
// required flags and its limit and reserves the amount in the same step, so
// concurrent requests (on any number of proxies) can never overshoot.
package quota

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/config"
)

// Store is the quota store. It is safe for concurrent use.
type Store struct {
	rdb redis.UniversalClient
	// hot carries the per-request script calls: a pipeline (pipeline.go)
	// unless WithoutPipeline or rdb is not a single-server client.
	hot  processor
	pipe *pipeline
	cfg  *config.Config
	now  func() time.Time
	log  *zap.Logger

	// feats holds each configured feature's precomputed Redis field names and
	// script arguments, indexed by Feature.Index, so the hot path builds no
	// strings for them.
	feats []*featureInfo

	// anchors caches tenantID → period anchor (boxed int64). Values are
	// stored boxed so Reserve passes them to the script without allocating.
	anchors sync.Map

	pmu     sync.Mutex
	pending map[string]*pendingCount // counter key → counts not yet in Redis
	id      string                   // names this instance's delivery batches
	batch   atomic.Uint64

	reconcileMu      sync.Mutex
	reconcileFailing bool

	// counterChanged learns of counters the store changed in Redis after
	// the request that counted them was settled (WithCounterChanged).
	counterChanged func(key string)

	// Lease mode (see lease.go): this instance's leases, the flush interval,
	// how long a lease is used locally and how long Redis keeps it.
	leases leaseTable
	// retired holds leases taken out of the table (their period turned out
	// wrong, or they went idle) until what they still hold is reported:
	// requests that raced the retirement may have taken or released units.
	retiredMu  sync.Mutex
	retired    map[*leaseState]struct{}
	leaseSeq   atomic.Uint64
	leaseTTL   time.Duration
	leaseEvery time.Duration
	leaseValid time.Duration
	flagFields []any // every configured flag's field, in lease replies' order
	flagPos    []int // Feature.Index → position in flagFields, -1 for non-flags
	leaseDone  chan struct{}

	interval  time.Duration
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock that picks billing periods; tests move it.
func WithClock(now func() time.Time) Option {
	return func(s *Store) {
		if now != nil {
			s.now = now
		}
	}
}

// WithoutPipeline sends the per-request script calls through the go-redis
// client's pool, one connection per call in flight, instead of the shared
// pipeline. Benchmarks compare the two.
func WithoutPipeline() Option {
	return func(s *Store) { s.pipe = nil }
}

// PipelinedCommands is how many commands the pipeline has sent; commands
// sent through the go-redis client are seen by its hooks instead.
func (s *Store) PipelinedCommands() uint64 {
	if s.pipe == nil {
		return 0
	}
	return s.pipe.sent.Load()
}

// WithLogger sets the logger; the default discards.
func WithLogger(l *zap.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// WithCounterChanged has fn called with a counter key whenever the store
// changes that counter in Redis on its own, later than the request that
// counted the units: a lease call that reports units handed out from the
// lease (the background flush, a request's lease call, Close), and a
// reconcile that delivers counts kept while Redis was unreachable. A usage
// flusher's Touch belongs here, so such changes reach billing within a
// flush interval rather than at the next sweep. fn must be cheap and must
// not block: it runs on the store's background loops and on request paths
// that call Redis anyway, never on lease mode's local admission.
func WithCounterChanged(fn func(key string)) Option {
	return func(s *Store) { s.counterChanged = fn }
}

// changed reports a counter the store changed to WithCounterChanged's fn.
func (s *Store) changed(key string) {
	if s.counterChanged != nil {
		s.counterChanged(key)
	}
}

const defaultReconcileInterval = time.Second

// New returns a Store on rdb for the features and plans of cfg and starts
// its background reconcile loop; Close stops it.
func New(rdb redis.UniversalClient, cfg *config.Config, opts ...Option) *Store {
	if cfg == nil {
		cfg = &config.Config{}
	}
	s := &Store{
		rdb:       rdb,
		cfg:       cfg,
		now:       time.Now,
		log:       zap.NewNop(),
		pending:   make(map[string]*pendingCount),
		retired:   make(map[*leaseState]struct{}),
		id:        newInstanceID(),
		interval:  cfg.Redis.ReconcileInterval,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		leaseDone: make(chan struct{}),
	}
	if s.interval <= 0 {
		s.interval = defaultReconcileInterval
	}
	s.pipe = newPipeline(rdb)
	for _, o := range opts {
		o(s)
	}
	s.hot = rdb
	if s.pipe != nil {
		s.hot = s.pipe
	}
	s.feats = make([]*featureInfo, len(cfg.Features))
	for i, f := range cfg.Features {
		if f != nil {
			s.feats[i] = newFeatureInfo(f)
		}
	}
	s.setLeaseTimings()
	s.initLeaseFlags()
	go s.loop()
	go s.leaseLoop()
	return s
}

// Close stops the background loops after giving back every lease (and
// reporting its usage) and a final attempt to push counts kept locally
// while Redis was unreachable. It does not close rdb.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		<-s.leaseDone
		err = errors.Join(s.finalLeases(), s.finalReconcile())
		if s.pipe != nil {
			s.pipe.Close()
		}
	})
	return err
}

// featureInfo is what the hot path needs of a feature, built once.
type featureInfo struct {
	f          *config.Feature
	limitField any    // "l:<name>", boxed once
	flagField  any    // "f:<name>", boxed once
	grace      any    // Grace as the script reads it, boxed once
	kindTag    string // ":m:<name>:" (metered, period follows) or ":g:<name>"
	lease      bool   // metered in lease mode
}

func newFeatureInfo(f *config.Feature) *featureInfo {
	g := f.Grace
	if g < 1 {
		// A grace below 1 would make the ceiling lower than the limit;
		// config rejects it, and unset means a hard limit.
		g = 1
	}
	fi := &featureInfo{
		f:          f,
		limitField: "l:" + f.Name,
		flagField:  "f:" + f.Name,
		grace:      strconv.FormatFloat(g, 'g', -1, 64),
	}
	if f.Kind == config.Metered {
		fi.kindTag = ":m:" + f.Name + ":"
		fi.lease = f.Mode == config.ModeLease
	} else {
		fi.kindTag = ":g:" + f.Name
	}
	return fi
}

// info returns f's precomputed data; a feature that is not part of the
// configuration (a caller's own value) gets it built on the spot.
func (s *Store) info(f *config.Feature) *featureInfo {
	if f.Index >= 0 && f.Index < len(s.feats) {
		if fi := s.feats[f.Index]; fi != nil && fi.f == f {
			return fi
		}
	}
	return newFeatureInfo(f)
}

func entKey(tenantID string) string { return "tg:{" + tenantID + "}:ent" }

// tenantPrefix starts every key of the tenant; the braces are the Redis
// Cluster hash tag that keeps them in one slot.
func tenantPrefix(tenantID string) string { return "tg:{" + tenantID + "}" }

// counterKey is tg:{tid}:m:<feature>:<periodStart> or tg:{tid}:g:<feature>,
// built with a single allocation.
func counterKey(tenantID string, fi *featureInfo, periodStart int64) string {
	var buf [128]byte
	return string(appendCounterKey(buf[:0], tenantID, fi, periodStart))
}

// anchorOf returns the cached anchor of a tenant, boxed; a miss is 0 and
// the script corrects it.
func (s *Store) anchorOf(tenantID string) (any, int64) {
	if v, ok := s.anchors.Load(tenantID); ok {
		if a, ok := v.(int64); ok {
			return v, a
		}
	}
	return zeroAnchor, 0
}

var zeroAnchor any = int64(0)

// counterTTL is how long a metered counter lives: its period plus a week,
// so late reconciles and reports still find it, after which it vanishes.
func counterTTL(end, now time.Time) int64 {
	return ceilSeconds(end.Add(counterGrace).Sub(now))
}

const counterGrace = 7 * 24 * time.Hour

func ceilSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second > 0 {
		s++
	}
	return s
}

func newInstanceID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; a clock-based
		// id still keeps batches of different instances apart.
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b[:])
}
