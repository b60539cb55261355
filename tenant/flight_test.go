package tenant

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

// holdHook counts the commands sent for one Redis key and can hold the
// first of them after Redis has answered it, so a lookup stays in flight
// with an answer from before whatever the test does next.
type holdHook struct {
	key     string
	n       atomic.Int64
	hold    bool
	held    chan struct{} // closed once the first command is answered and held
	release chan struct{} // closing it lets the held command return
}

func newHoldHook(key string, hold bool) *holdHook {
	return &holdHook{key: key, hold: hold, held: make(chan struct{}), release: make(chan struct{})}
}

func (h *holdHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if len(args) < 2 || args[1] != h.key {
			return next(ctx, cmd)
		}
		first := h.n.Add(1) == 1
		err := next(ctx, cmd)
		if first && h.hold {
			close(h.held)
			<-h.release
		}
		return err
	}
}

func (h *holdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// hookedRedis is a client of the test Redis whose commands pass through h.
func hookedRedis(t *testing.T, h redis.Hook) *redis.Client {
	t.Helper()
	rdb := testRedis(t)
	rdb.AddHook(h)
	return rdb
}

func TestConcurrentMissesShareOneLookup(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  config.TenantIdentification
		// setup returns the header value, the tenant it names and the
		// Redis key its lookup reads.
		setup func(t *testing.T, rdb *redis.Client) (value, tid, redisKey string)
	}{
		{"api key", apiKeyCfg, func(t *testing.T, rdb *redis.Client) (string, string, string) {
			tid := createTenant(t, rdb)
			key := issueTestKey(t, rdb, tid)
			return "Bearer " + key, tid, apiKeyRedisKey(HashKey(key))
		}},
		{"tenant header", config.TenantIdentification{Source: config.TenantHeader, Header: "X-Tenant-Id"}, func(t *testing.T, rdb *redis.Client) (string, string, string) {
			tid := createTenant(t, rdb)
			return tid, tid, entKey(tid)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			value, tid, redisKey := tc.setup(t, testRedis(t))
			hook := newHoldHook(redisKey, true)
			r := newTestResolver(t, tc.cfg, hookedRedis(t, hook))

			const callers = 300
			var wg sync.WaitGroup
			errs := make(chan error, callers)
			start := make(chan struct{})
			for range callers {
				wg.Go(func() {
					<-start
					got, err := r.Resolve(context.Background(), hdr(tc.cfg.Header, value))
					if err == nil && got != tid {
						err = errors.New("resolved " + got + ", want " + tid)
					}
					errs <- err
				})
			}
			close(start)
			// The first lookup is held with its answer until every caller
			// has had the time to miss the cache and ask for the same key.
			<-hook.held
			time.Sleep(200 * time.Millisecond)
			close(hook.release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			// One lookup for all; a second only if a caller missed the cache
			// in the instant between the shared lookup's answer being cached
			// and the lookup ending.
			if n := hook.n.Load(); n < 1 || n > 2 {
				t.Fatalf("%d concurrent callers sent %d lookups for %s, want 1", callers, n, redisKey)
			}
		})
	}
}

func TestSharedLookupDoesNotOutliveInvalidation(t *testing.T) {
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	hash := HashKey(key)
	hook := newHoldHook(apiKeyRedisKey(hash), true)
	r := newTestResolver(t, apiKeyCfg, hookedRedis(t, hook))

	// A lookup that Redis has answered with the tenant, before the revoke.
	early := make(chan error, 1)
	go func() {
		got, err := r.Resolve(context.Background(), hdr("Authorization", "Bearer "+key))
		if err == nil && got != tid {
			err = errors.New("resolved " + got + ", want " + tid)
		}
		early <- err
	}()
	<-hook.held
	_, _, gen := r.keys.getString(hash, r.now())

	if err := RevokeKey(context.Background(), rdb, key); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if !eventually(2*time.Second, func() bool {
		_, _, g := r.keys.getString(hash, r.now())
		return g != gen
	}) {
		t.Fatal("the revoke's invalidation never reached the resolver")
	}

	// A request after the invalidation must not share the older lookup:
	// it would wait for it, then get the revoked key's tenant.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if got, err := r.Resolve(ctx, hdr("Authorization", "Bearer "+key)); !errors.Is(err, ErrUnknown) {
		t.Fatalf("after the revoke: got %q, %v; want ErrUnknown", got, err)
	}

	close(hook.release)
	if err := <-early; err != nil {
		t.Fatalf("the lookup from before the revoke: %v", err)
	}
	// Its answer came from before the invalidation, so it was not cached.
	if got, err := r.Resolve(context.Background(), hdr("Authorization", "Bearer "+key)); !errors.Is(err, ErrUnknown) {
		t.Fatalf("after both: got %q, %v; want ErrUnknown", got, err)
	}
}

func TestSharedLookupCallerCancelLeavesOthers(t *testing.T) {
	// Other packages' tests share this Redis and publish tenant
	// invalidations, each of which moves every cache generation; a move
	// between the two callers' cache reads rightly gives the second a
	// lookup of its own. Such an attempt proves nothing and is retried.
	for attempt := 1; ; attempt++ {
		if sharedLookupSurvivesCancel(t) {
			return
		}
		if attempt == 5 {
			t.Fatal("the cache generation moved during each of 5 attempts")
		}
	}
}

// sharedLookupSurvivesCancel runs one attempt; false when an invalidation
// came between the two callers and the lookup count is no evidence.
func sharedLookupSurvivesCancel(t *testing.T) bool {
	t.Helper()
	rdb := testRedis(t)
	tid := createTenant(t, rdb)
	key := issueTestKey(t, rdb, tid)
	hash := HashKey(key)
	hook := newHoldHook(apiKeyRedisKey(hash), true)
	r := newTestResolver(t, apiKeyCfg, hookedRedis(t, hook))
	_, _, gen := r.keys.getString(hash, r.now())

	type result struct {
		tid string
		err error
	}
	cctx, cancel := context.WithCancel(context.Background())
	leaver, stayer := make(chan result, 1), make(chan result, 1)
	go func() {
		got, err := r.Resolve(cctx, hdr("Authorization", "Bearer "+key))
		leaver <- result{got, err}
	}()
	<-hook.held
	go func() {
		got, err := r.Resolve(context.Background(), hdr("Authorization", "Bearer "+key))
		stayer <- result{got, err}
	}()

	cancel()
	select {
	case res := <-leaver:
		if !errors.Is(res.err, context.Canceled) {
			t.Fatalf("cancelled caller: got %q, %v; want context.Canceled", res.tid, res.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a cancelled caller kept waiting for the shared lookup")
	}

	// Released before the other caller has joined, the lookup could end
	// first and the caller, having missed the cache just before, start one
	// of its own: wait until it waits in lookup (the leaver has returned).
	joined := eventually(2*time.Second, func() bool { return waitingInLookup() })
	close(hook.release)
	select {
	case res := <-stayer:
		if res.err != nil || res.tid != tid {
			t.Fatalf("other caller: got %q, %v; want %q", res.tid, res.err, tid)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the other caller never got the shared lookup's answer")
	}
	// Generations only grow: unchanged now, it was unchanged for both.
	if _, _, g := r.keys.getString(hash, r.now()); g != gen {
		t.Logf("cache generation moved %d -> %d during the attempt (an invalidation from elsewhere); retrying", gen, g)
		return false
	}
	if !joined {
		t.Fatal("the other caller never waited for the shared lookup")
	}
	if n := hook.n.Load(); n != 1 {
		t.Fatalf("%d lookups, want the one the cancelled caller started", n)
	}
	return true
}

// waitingInLookup reports whether a goroutine is blocked in
// Resolver.lookup's select, waiting for a shared lookup's answer.
func waitingInLookup() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("[select")) && bytes.Contains(g, []byte("tenant.(*Resolver).lookup(")) {
			return true
		}
	}
	return false
}
