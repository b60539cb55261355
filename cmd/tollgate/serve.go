package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/admin"
	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/demo"
	"github.com/tollgate/tollgate/internal/rawconn"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
	"github.com/tollgate/tollgate/usage"
)

func check(path string, stdout io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d features, %d plans, %d routes)\n", path, len(cfg.Features), len(cfg.Plans), len(cfg.Routes))
	return nil
}

func newLogger(w io.Writer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(w), zap.InfoLevel)
	return zap.New(core)
}

// NewRedis builds the quota store's client. Every timeout is the
// configured Redis timeout and retries are off, so a stalled or dead Redis
// costs a request at most that long before the feature's fail mode applies.
func newRedis(c config.Redis) (*redis.Client, error) {
	opt, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	opt.ReadTimeout = c.Timeout
	opt.WriteTimeout = c.Timeout
	opt.PoolTimeout = c.Timeout
	opt.DialTimeout = max(c.Timeout, 250*time.Millisecond)
	opt.MaxRetries = -1
	// go-redis retries a failed dial with pauses by default, which would
	// hold a request far past the timeout while Redis is down.
	opt.DialerRetries = 1
	if c.PoolSize > 0 {
		opt.PoolSize = c.PoolSize
	}
	return redis.NewClient(opt), nil
}

const (
	// drainTimeout bounds how long a stopping process waits for the
	// requests in flight on its listeners.
	drainTimeout = 10 * time.Second
	// finalFlushTimeout bounds the last usage flush, after the drain and
	// the quota store's Close (at most about 4 s: its final lease reports
	// and its final reconcile allow themselves 2 s each).
	finalFlushTimeout = 5 * time.Second
)

// components names what one process runs: `serve` runs both planes,
// `billing` only the API.
type components struct {
	proxy bool
}

func serve(ctx context.Context, path string, logOut io.Writer) error {
	cfg, err := loadServerConfig(path)
	if err != nil {
		return err
	}
	if spec := os.Getenv(envWorker); spec != "" {
		lns, err := inheritedListeners(spec)
		if err != nil {
			return err
		}
		return runServer(ctx, cfg, logOut, components{proxy: true}, lns)
	}
	procs, _ := cfg.Procs.For(runtime.GOMAXPROCS(0))
	if n, each := cfg.Workers.Split(procs); n > 1 {
		return runWorkers(ctx, cfg, n, each, logOut)
	}
	return runServer(ctx, cfg, logOut, components{proxy: true}, nil)
}

func billingServe(ctx context.Context, path string, logOut io.Writer) error {
	cfg, err := loadServerConfig(path)
	if err != nil {
		return err
	}
	return runServer(ctx, cfg, logOut, components{proxy: false}, nil)
}

// applyProcs sets GOMAXPROCS from the procs setting and returns the
// value in force.
func applyProcs(p config.Procs) int {
	n, set := p.For(runtime.GOMAXPROCS(0))
	if set {
		runtime.GOMAXPROCS(n)
	}
	return n
}

// loadServerConfig loads what `serve` and `billing` need, which is more
// than `check` insists on: a database.
func loadServerConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if cfg.Database.URL == "" {
		return nil, fmt.Errorf("%s: database.url: expected a postgres:// URL (or TOLLGATE_DATABASE_URL): tenants, plans and usage live in PostgreSQL", path)
	}
	return cfg, nil
}

// runServer runs one Tollgate process. lns, when not nil, are listeners
// inherited from a master process (this process is one of its workers);
// otherwise the configured addresses are bound here.
func runServer(ctx context.Context, cfg *config.Config, logOut io.Writer, run components, lns *workerListeners) error {
	log := newLogger(logOut)
	defer func() { _ = log.Sync() }()
	// Before anything sizes itself by GOMAXPROCS (the quota store's lanes).
	procs := applyProcs(cfg.Procs)

	rdb, err := newRedis(cfg.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		// Start anyway: metered features fail open and gauges fail closed
		// until Redis answers, which is what the configuration asked for.
		log.Warn("redis is not reachable at start", zap.String("url", redactURL(cfg.Redis.URL)), zap.Error(err))
	}
	cancel()

	db, plans, err := openBilling(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Pool().Close()

	qopts := []quota.Option{quota.WithLogger(log)}
	if !cfg.Redis.Pipeline {
		qopts = append(qopts, quota.WithoutPipeline())
	}
	var flusher *usage.Flusher
	if run.proxy {
		flusher = usage.NewFlusher(rdb, usage.StoreSink{Store: db}, usage.WithFlusherLogger(log))
		// The proxy touches a counter when its request settles; a lease
		// report or a reconcile delivery changes it later, and marks it
		// then, so billing has it within a flush interval.
		qopts = append(qopts, quota.WithCounterChanged(flusher.Touch))
	}
	store := quota.New(rdb, cfg, qopts...)
	defer store.Close() // for the early returns; the shutdown below closes it in order

	// The background loops stop with bg, once the listeners have drained.
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	adminAPI := admin.New(cfg, db, rdb, store, log)
	adminAPI.Register(mux)
	// Entitlements in Redis copy their plan's terms: the tenants of a plan
	// the file changed are written through again, in the background.
	adminAPI.RefreshPlans(plans.Updated...)
	go adminAPI.Run(bg)
	mux.Handle("POST "+usage.IngestPath, usage.NewIngest(db, cfg.Admin.Token, usage.WithIngestLogger(log)))
	restorer := usage.NewRestorer(rdb, db, store, cfg, usage.WithRestorerLogger(log))
	go func() { _ = restorer.Run(bg) }()
	accountAPI, err := registerAccount(cfg, db, store, mux, log)
	if err != nil {
		return fmt.Errorf("%s: account: %w", cfg.Source, err)
	}
	// Everything else on the API listener is a JSON 404, like every other
	// answer there.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		account.WriteError(w, http.StatusNotFound, "not_found", "No such endpoint: "+r.Method+" "+r.URL.Path)
	})
	apiSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	var proxySrv *fasthttp.Server
	if run.proxy {
		resolver, err := tenant.NewResolver(ctx, cfg.Tenant, rdb, tenant.WithLookupTimeout(cfg.Redis.Timeout), tenant.WithLogger(log))
		if err != nil {
			return fmt.Errorf("tenant resolver: %w", err)
		}
		defer resolver.Close()
		fwd, err := proxy.NewForwarder(cfg.Upstream)
		if err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
		go func() { _ = flusher.Run(bg) }()
		handler := proxy.NewHandler(cfg, resolver, store, fwd,
			proxy.WithLogger(log),
			proxy.WithUsageTracker(flusher),
			proxy.WithMount(cfg.Account.Mounts, accountAPI))
		proxySrv = proxy.NewServer(handler.Serve, "tollgate", log)
	}
	proxyLn, apiLn, err := bindListeners(cfg, run, lns)
	if err != nil {
		return err
	}

	errc := make(chan error, 2)
	fields := []zap.Field{zap.String("api", apiLn.Addr().String()), zap.Int("procs", procs), zap.Stringer("procs_setting", cfg.Procs)}
	if lns != nil {
		fields = append(fields, zap.Int("worker", lns.index), zap.Int("workers", lns.count))
	} else {
		fields = append(fields, zap.Int("workers", 1))
	}
	if proxySrv != nil {
		fields = append(fields, zap.String("proxy", proxyLn.Addr().String()), zap.String("upstream", cfg.Upstream.URL))
		go func() { errc <- proxySrv.Serve(proxyLn) }()
	}
	go func() { errc <- apiSrv.Serve(apiLn) }()
	log.Info("tollgate listening", fields...)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-errc:
		log.Error("listener failed", zap.Error(err))
	}
	// The order matters: the listeners stop taking requests and drain;
	// then the quota store closes, which reports the units every lease
	// handed out and pushes the counts kept while Redis was down (changing
	// counters, which it marks for the flusher); the final flush comes last
	// and so delivers them. It has a deadline of its own: a drain that used
	// up its time must not leave the flush an expired one.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), drainTimeout)
	defer cancelDrain()
	if proxySrv != nil {
		_ = proxySrv.ShutdownWithContext(drainCtx)
	}
	_ = apiSrv.Shutdown(drainCtx)
	stopBG()
	if cerr := store.Close(); cerr != nil {
		log.Warn("quota store close: a final lease report or reconcile failed", zap.Error(cerr))
	}
	if flusher != nil {
		flushCtx, cancelFlush := context.WithTimeout(context.Background(), finalFlushTimeout)
		defer cancelFlush()
		if ferr := flusher.Close(flushCtx); ferr != nil {
			log.Warn("final usage flush incomplete; the next start's sweep delivers it", zap.Error(ferr))
		}
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// bindListeners returns the proxy listener (nil when run has no proxy)
// and the API listener: the inherited ones for a worker, else new ones on
// the configured addresses.
func bindListeners(cfg *config.Config, run components, lns *workerListeners) (proxyLn, apiLn net.Listener, err error) {
	if lns != nil {
		return rawconn.WrapListener(lns.proxy), lns.api, nil
	}
	if run.proxy {
		if proxyLn, err = rawconn.Listen(cfg.Listen); err != nil {
			return nil, nil, fmt.Errorf("proxy listener: %w", err)
		}
	}
	if apiLn, err = net.Listen("tcp", cfg.APIListen); err != nil {
		if proxyLn != nil {
			proxyLn.Close()
		}
		return nil, nil, fmt.Errorf("api listener: %w", err)
	}
	return proxyLn, apiLn, nil
}

// openBilling connects to PostgreSQL, applies the embedded migrations and
// seeds plans from the configuration, returning what the seeding did.
// PostgreSQL must answer at start (retried for a while, for containers
// starting together); afterwards an outage only turns the API's answers
// into 503s while the proxy keeps enforcing from Redis.
func openBilling(ctx context.Context, cfg *config.Config, log *zap.Logger) (*billing.Store, billing.SyncResult, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, res, err := tryOpenBilling(ctx, cfg)
		if err == nil {
			if len(res.Inserted)+len(res.Updated)+len(res.Kept) > 0 {
				log.Info("plans synced from the configuration", zap.Strings("inserted", res.Inserted),
					zap.Strings("updated", res.Updated), zap.Strings("kept_admin_edits", res.Kept))
			}
			return db, res, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, billing.SyncResult{}, fmt.Errorf("billing database: %w", err)
		}
		log.Warn("billing database not ready; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func tryOpenBilling(ctx context.Context, cfg *config.Config) (*billing.Store, billing.SyncResult, error) {
	pool, err := billing.Connect(ctx, cfg.Database.URL)
	if err != nil {
		return nil, billing.SyncResult{}, err
	}
	if err := billing.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, billing.SyncResult{}, err
	}
	db := billing.New(pool)
	res, err := db.SyncPlans(ctx, cfg.Plans, cfg.Features)
	if err != nil {
		pool.Close()
		return nil, billing.SyncResult{}, err
	}
	return db, res, nil
}

func demoServe(ctx context.Context, addr string, logOut io.Writer) error {
	fmt.Fprintf(logOut, "demo upstream listening on %s\n", addr)
	return demo.ListenAndServe(ctx, addr)
}

// redactURL drops credentials so a URL can be logged.
func redactURL(s string) string {
	opt, err := redis.ParseURL(s)
	if err != nil {
		return "(unparsable)"
	}
	return opt.Addr
}

// registerAccount mounts the tenant-facing billing API on the API listener
// and returns it for the proxy's mount prefixes.
func registerAccount(cfg *config.Config, db *billing.Store, store *quota.Store, mux *http.ServeMux, log *zap.Logger) (*account.API, error) {
	api, err := account.New(cfg, db, store, account.WithLogger(log))
	if err != nil {
		return nil, err
	}
	api.Register(mux)
	return api, nil
}
