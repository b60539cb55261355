package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate/tollgate/admin"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/demo"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
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

func serve(ctx context.Context, path string, logOut io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := newLogger(logOut)
	defer func() { _ = log.Sync() }()

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

	store := quota.New(rdb, cfg, quota.WithLogger(log))
	defer store.Close()
	resolver, err := tenant.NewResolver(ctx, cfg.Tenant, rdb, tenant.WithLookupTimeout(cfg.Redis.Timeout), tenant.WithLogger(log))
	if err != nil {
		return fmt.Errorf("tenant resolver: %w", err)
	}
	defer resolver.Close()
	fwd, err := proxy.NewForwarder(cfg.Upstream)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	handler := proxy.NewHandler(cfg, resolver, store, fwd, proxy.WithLogger(log))
	proxySrv := proxy.NewServer(handler.Serve, "tollgate")

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	admin.New(cfg, rdb, store, log).Register(mux)
	apiSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	proxyLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy listener: %w", err)
	}
	apiLn, err := net.Listen("tcp", cfg.APIListen)
	if err != nil {
		proxyLn.Close()
		return fmt.Errorf("api listener: %w", err)
	}
	log.Info("tollgate listening",
		zap.String("proxy", proxyLn.Addr().String()),
		zap.String("api", apiLn.Addr().String()),
		zap.String("upstream", cfg.Upstream.URL))

	errc := make(chan error, 2)
	go func() { errc <- proxySrv.Serve(proxyLn) }()
	go func() { errc <- apiSrv.Serve(apiLn) }()

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-errc:
		log.Error("listener failed", zap.Error(err))
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(shutCtx)
	_ = proxySrv.ShutdownWithContext(shutCtx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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
