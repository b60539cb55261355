package quota

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

// switchRedis is a Redis connection the test can cut and restore: while
// down, dials are refused and open connections fail, like a Redis restart.
// While lag is set, Redis runs what it is sent but its replies are lost:
// the reader's deadline passes first.
type switchRedis struct{ down, lag atomic.Bool }

var errDown = errors.New("redis is down (test)")

func (sw *switchRedis) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if sw.down.Load() {
		return nil, errDown
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &switchConn{Conn: c, sw: sw}, nil
}

type switchConn struct {
	net.Conn
	sw *switchRedis
	mu sync.Mutex
	dl time.Time // the read deadline
}

func (c *switchConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.dl = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *switchConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.dl = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *switchConn) Read(b []byte) (int, error) {
	if c.sw.down.Load() {
		return 0, errDown
	}
	n, err := c.Conn.Read(b)
	if n > 0 && c.sw.lag.Load() {
		c.mu.Lock()
		dl := c.dl
		c.mu.Unlock()
		time.Sleep(time.Until(dl))
		return 0, os.ErrDeadlineExceeded
	}
	return n, err
}

func (c *switchConn) Write(b []byte) (int, error) {
	if c.sw.down.Load() {
		return 0, errDown
	}
	return c.Conn.Write(b)
}

func switchClient(t *testing.T, sw *switchRedis) *redis.Client {
	t.Helper()
	return switchClientTimeout(t, sw, 0)
}

// switchClientTimeout is switchClient with the client's read timeout, which
// bounds the pipeline's calls too (0: go-redis's default).
func switchClientTimeout(t *testing.T, sw *switchRedis, timeout time.Duration) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	opt.ReadTimeout = timeout
	opt.Dialer = sw.dial
	opt.MaxRetries = -1
	opt.DialerRetries = 1 // go-redis retries dials 5 times with backoff by default
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// deadClient points at a port nothing listens on.
func deadClient(t *testing.T) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestFailModes(t *testing.T) {
	tc := newTestConfig()
	openGauge := &config.Feature{Name: "seats", Kind: config.Gauge, Index: 99, Grace: 1, FailMode: config.FailOpen}
	unsetMetered := &config.Feature{Name: "calls", Kind: config.Metered, Index: 98, Grace: 1}
	unsetGauge := &config.Feature{Name: "boxes", Kind: config.Gauge, Index: 97, Grace: 1}
	s := newStore(t, deadClient(t), tc.Config)

	tests := []struct {
		name  string
		check Check
		want  Outcome
	}{
		{"metered fails open", Check{Meter: fixed(tc.messages, 1), Amount: 1}, FailedOpen},
		{"response amount fails open", Check{Meter: fromResponse(tc.tokens)}, FailedOpen},
		{"gauge fails closed", Check{Meter: fixed(tc.agents, 1), Amount: 1}, Unavailable},
		{"gauge delete with a flag fails closed", Check{Meter: fixed(tc.agents, -1), Amount: -1, Flags: []*config.Feature{tc.integrations}}, Unavailable},
		{"gauge configured open", Check{Meter: fixed(openGauge, 1), Amount: 1}, FailedOpen},
		{"meter's mode beats the flags'", Check{Meter: fixed(tc.messages, 1), Amount: 1, Flags: []*config.Feature{tc.integrations}}, FailedOpen},
		{"flags only use the first flag", Check{Flags: []*config.Feature{tc.integrations}}, Unavailable},
		{"nothing to check", Check{}, FailedOpen},
		{"unset mode on metered is open", Check{Meter: fixed(unsetMetered, 1), Amount: 1}, FailedOpen},
		{"unset mode on gauge is closed", Check{Meter: fixed(unsetGauge, 1), Amount: 1}, Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.check
			c.TenantID = randomTenant(t)
			var d Decision
			err := s.Reserve(context.Background(), &c, &d)
			if err == nil {
				t.Fatal("Reserve against a dead Redis returned no error")
			}
			if d.Outcome != tt.want {
				t.Errorf("outcome %v, want %v", d.Outcome, tt.want)
			}
			if d.Reserved != 0 || d.Limit != 0 {
				t.Errorf("failed decision carries reserved %d limit %d", d.Reserved, d.Limit)
			}
		})
	}
}

// TestGaugeDeleteWithoutRedis: a delete without flags needs nothing from
// Redis to be forwarded (it can only free units), and its decrement after
// the 2xx waits for reconcile instead of being lost.
func TestGaugeDeleteWithoutRedis(t *testing.T) {
	tc := newTestConfig()
	s := newStore(t, deadClient(t), tc.Config)
	ctx := context.Background()
	c := Check{TenantID: randomTenant(t), Meter: fixed(tc.agents, -1), Amount: -1}
	var d Decision
	if err := s.Reserve(ctx, &c, &d); err != nil {
		t.Fatalf("Reserve of a delete with Redis down: %v", err)
	}
	if d.Outcome != Admitted || d.Limit != -1 {
		t.Fatalf("delete: outcome %v limit %d, want admitted with no limit", d.Outcome, d.Limit)
	}
	if s.hasPending() {
		t.Fatal("pending counts before the delete was committed")
	}
	s.Commit(ctx, &d, -1)
	if !s.hasPending() {
		t.Fatal("the decrement of a committed delete was dropped with Redis down")
	}
	if d.Limit != -1 {
		t.Errorf("failed commit set limit %d", d.Limit)
	}
}

func TestFailedOpenReconcilesExactlyOnce(t *testing.T) {
	tc := newTestConfig()
	good := testClient(t)
	admin := newStore(t, good, tc.Config)
	id := newTenant(t, admin, good, tc.PlanBySlug["free"], 0, nil)
	if err := admin.SetGauge(context.Background(), id, tc.agents, 3); err != nil {
		t.Fatal(err)
	}

	sw := &switchRedis{}
	sw.down.Store(true)
	s := newStore(t, switchClient(t, sw), tc.Config)
	ctx := context.Background()

	reserve := func(c Check, want Outcome) Decision {
		t.Helper()
		c.TenantID = id
		var d Decision
		if err := s.Reserve(ctx, &c, &d); err == nil {
			t.Fatalf("Reserve with Redis down returned no error")
		}
		if d.Outcome != want {
			t.Fatalf("outcome %v, want %v", d.Outcome, want)
		}
		return d
	}
	d := reserve(Check{Meter: fixed(tc.messages, 1), Amount: 1}, FailedOpen)
	s.Commit(ctx, &d, 1)
	d = reserve(Check{Meter: fixed(tc.messages, 2), Amount: 2}, FailedOpen)
	s.Commit(ctx, &d, 2)
	d = reserve(Check{Meter: fromResponse(tc.tokens)}, FailedOpen)
	s.Commit(ctx, &d, 5)
	d = reserve(Check{Meter: fixed(tc.messages, 1), Amount: 1}, FailedOpen)
	s.Release(ctx, &d) // upstream failed: a fail-open request never counted anything
	reserve(Check{Meter: fixed(tc.agents, 1), Amount: 1}, Unavailable)

	if err := s.Reconcile(ctx); err == nil {
		t.Fatal("Reconcile with Redis down returned no error")
	}
	if n := usage(t, admin, id, tc.messages); n != 0 {
		t.Fatalf("messages while down = %d, want 0", n)
	}

	sw.down.Store(false)
	for i := range 2 {
		if err := s.Reconcile(ctx); err != nil {
			t.Fatalf("Reconcile %d: %v", i+1, err)
		}
	}
	for _, c := range []struct {
		f    *config.Feature
		want int64
	}{{tc.messages, 3}, {tc.tokens, 5}, {tc.agents, 3}} {
		if n := usage(t, admin, id, c.f); n != c.want {
			t.Errorf("%s = %d, want %d", c.f.Name, n, c.want)
		}
	}
	if s.hasPending() {
		t.Error("counts still pending after delivery")
	}
	key := counterKey(id, s.info(tc.messages), mustPeriodStart(s))
	if ttl, err := good.TTL(ctx, key).Result(); err != nil || ttl <= 0 {
		t.Errorf("reconciled counter TTL = %s, %v; want one set", ttl, err)
	}
}

func TestSettleWhileDownIsReconciled(t *testing.T) {
	tc := newTestConfig()
	good := testClient(t)
	admin := newStore(t, good, tc.Config)
	id := newTenant(t, admin, good, tc.PlanBySlug["free"], 0, nil)
	if err := admin.SetGauge(context.Background(), id, tc.agents, 2); err != nil {
		t.Fatal(err)
	}
	sw := &switchRedis{}
	s := newStore(t, switchClient(t, sw), tc.Config)
	ctx := context.Background()

	rel := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 4), Amount: 4})
	tok := mustReserve(t, s, &Check{TenantID: id, Meter: fromResponse(tc.tokens)})
	del := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.agents, -1), Amount: -1})
	for _, d := range []Decision{rel, tok, del} {
		if d.Outcome != Admitted {
			t.Fatalf("reserve: %v", d.Outcome)
		}
	}

	sw.down.Store(true)
	s.Release(ctx, &rel)
	s.Commit(ctx, &tok, 6)
	s.Commit(ctx, &del, -1)
	if n := usage(t, admin, id, tc.messages); n != 4 {
		t.Fatalf("messages while down = %d, want 4", n)
	}

	sw.down.Store(false)
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    *config.Feature
		want int64
	}{{tc.messages, 0}, {tc.tokens, 6}, {tc.agents, 1}} {
		if n := usage(t, admin, id, c.f); n != c.want {
			t.Errorf("%s = %d, want %d", c.f.Name, n, c.want)
		}
	}
}

// TestDecrementWhoseReplyIsLost: a release or a gauge delete that Redis
// applied but whose reply was lost is not kept for reconcile, which would
// apply it a second time and take off units other requests used; one
// whose write never left still is (TestSettleWhileDownIsReconciled).
func TestDecrementWhoseReplyIsLost(t *testing.T) {
	tc := newTestConfig()
	good := testClient(t)
	admin := newStore(t, good, tc.Config)
	sw := &switchRedis{}
	s := newStore(t, switchClientTimeout(t, sw, 200*time.Millisecond), tc.Config)
	ctx := context.Background()
	lost := func(settle func()) {
		sw.lag.Store(true)
		defer sw.lag.Store(false)
		settle()
	}
	tests := []struct {
		name   string
		f      *config.Feature
		settle func(t *testing.T, id string)
		want   int64
	}{
		{"release", tc.messages, func(t *testing.T, id string) {
			mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 5), Amount: 5})
			d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 5), Amount: 5})
			lost(func() { s.Release(ctx, &d) })
		}, 5},
		{"gauge delete", tc.agents, func(t *testing.T, id string) {
			if err := admin.SetGauge(ctx, id, tc.agents, 2); err != nil {
				t.Fatal(err)
			}
			d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.agents, -1), Amount: -1})
			lost(func() { s.Commit(ctx, &d, -1) })
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := newTenant(t, admin, good, tc.PlanBySlug["mini"], 0, nil)
			tt.settle(t, id)
			if s.hasPending() {
				t.Error("a decrement Redis may have applied was kept for reconcile")
			}
			if err := s.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			if n := usage(t, admin, id, tt.f); n != tt.want {
				t.Errorf("%s = %d after reconcile, want %d (applied once)", tt.f.Name, n, tt.want)
			}
		})
	}
}

// TestReconcileRetryAfterAppliedBatch covers a push that Redis applied but
// whose reply was lost: the retry carries the same batch id and changes
// nothing, while counts that arrived meanwhile go in the next batch.
func TestReconcileRetryAfterAppliedBatch(t *testing.T) {
	tc := newTestConfig()
	rdb := testClient(t)
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	key := counterKey(id, s.info(tc.agents), 0)

	keys := []string{key, key + ":d:lost-1"}
	if err := adjustScript.Run(ctx, rdb, keys, 4, 0, markerTTL).Err(); err != nil {
		t.Fatal(err)
	}
	s.pmu.Lock()
	s.pending[key] = &pendingCount{inflight: 4, batch: "lost-1", delta: 2}
	s.pmu.Unlock()

	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if n := usage(t, s, id, tc.agents); n != 4 {
		t.Fatalf("after retry of the applied batch = %d, want 4", n)
	}
	if err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if n := usage(t, s, id, tc.agents); n != 6 {
		t.Fatalf("after the next batch = %d, want 6", n)
	}
	if s.hasPending() {
		t.Error("counts still pending")
	}
}

// TestReconcileRetryAfterFailedPush: a push into a counter that holds
// something Tollgate does not write fails and marks nothing done (an
// increment's INCRBY fails; a decrement does not read it as 0), so once
// the counter is repaired the same batch is delivered, once.
func TestReconcileRetryAfterFailedPush(t *testing.T) {
	tc := newTestConfig()
	rdb := testClient(t)
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	tests := []struct {
		name   string
		settle func(t *testing.T, c *Check, key string)
		want   int64 // after the repair to 7
	}{
		{"failed open, committed", func(t *testing.T, c *Check, key string) {
			if err := rdb.Set(ctx, key, "garbage", time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			var d Decision
			if err := s.Reserve(ctx, c, &d); err == nil || d.Outcome != FailedOpen {
				t.Fatalf("Reserve on a malformed counter: %v %v, want failed open with an error", d.Outcome, err)
			}
			s.Commit(ctx, &d, 1)
		}, 8},
		{"released", func(t *testing.T, c *Check, key string) {
			d := mustReserve(t, s, c)
			if err := rdb.Set(ctx, key, "abc", time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			s.Release(ctx, &d)
		}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
			key := counterKey(id, s.info(tc.messages), mustPeriodStart(s))
			tt.settle(t, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}, key)
			if !s.hasPending() {
				t.Fatal("nothing kept for reconcile")
			}
			if err := s.Reconcile(ctx); err == nil {
				t.Fatal("Reconcile into a malformed counter returned no error")
			}
			if err := rdb.Set(ctx, key, "7", time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			if err := s.Reconcile(ctx); err != nil {
				t.Fatalf("Reconcile after the repair: %v", err)
			}
			if n := usage(t, s, id, tc.messages); n != tt.want {
				t.Errorf("usage = %d, want %d: the failed push was dropped", n, tt.want)
			}
			if s.hasPending() {
				t.Error("counts still pending")
			}
		})
	}
}

func TestReconcileDropsExpiredPeriods(t *testing.T) {
	tc := newTestConfig()
	rdb := testClient(t)
	clock := newFakeClock(utc(2025, 3, 10, 0, 0, 0))
	s := newStore(t, rdb, tc.Config, WithClock(clock.Now))
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	key := counterKey(id, s.info(tc.messages), utc(2025, 1, 1, 0, 0, 0).Unix())
	s.addPending(key, 3, utc(2025, 2, 1, 0, 0, 0).Add(counterGrace))

	if err := s.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.hasPending() {
		t.Error("expired period still pending")
	}
	if n, err := rdb.Exists(context.Background(), key).Result(); err != nil || n != 0 {
		t.Errorf("expired period's counter was recreated (%d, %v)", n, err)
	}
}

func TestCloseDeliversPending(t *testing.T) {
	tc := newTestConfig()
	rdb := testClient(t)
	s := New(rdb, tc.Config)
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	s.addPending(counterKey(id, s.info(tc.agents), 0), 2, time.Time{})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := usage(t, s, id, tc.agents); n != 2 {
		t.Errorf("agents after Close = %d, want 2", n)
	}

	dead := New(deadClient(t), tc.Config)
	dead.addPending(counterKey(id, dead.info(tc.agents), 0), 1, time.Time{})
	if err := dead.Close(); err == nil || !strings.Contains(err.Error(), "not delivered") {
		t.Errorf("Close with Redis down = %v, want an undelivered-usage error", err)
	}
}

func TestBackgroundLoopReconciles(t *testing.T) {
	tc := newTestConfig()
	tc.Redis.ReconcileInterval = 10 * time.Millisecond
	rdb := testClient(t)
	s := newStore(t, rdb, tc.Config)
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	s.addPending(counterKey(id, s.info(tc.agents), 0), 3, time.Time{})

	// Wait for the loop, bounded; no assertion on how fast it is.
	for range 500 {
		if !s.hasPending() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := usage(t, s, id, tc.agents); n != 3 {
		t.Errorf("agents = %d, want 3 delivered by the loop", n)
	}
}

// silentRedis accepts connections and never answers, like a stalled Redis.
func silentRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestReserveDoesNotHangOnStalledRedis(t *testing.T) {
	tc := newTestConfig()
	tests := []struct {
		name    string
		opt     redis.Options
		timeout time.Duration // ctx deadline, 0 for none
		check   Check
		want    Outcome
	}{
		{"client read timeout, metered", redis.Options{ReadTimeout: 50 * time.Millisecond}, 0,
			Check{Meter: fixed(tc.messages, 1), Amount: 1}, FailedOpen},
		{"client read timeout, gauge", redis.Options{ReadTimeout: 50 * time.Millisecond}, 0,
			Check{Meter: fixed(tc.agents, 1), Amount: 1}, Unavailable},
		{"ctx deadline", redis.Options{ReadTimeout: 10 * time.Second, ContextTimeoutEnabled: true}, 50 * time.Millisecond,
			Check{Meter: fixed(tc.agents, 1), Amount: 1}, Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := tt.opt
			opt.Addr = silentRedis(t)
			opt.MaxRetries = -1
			opt.DialerRetries = 1
			rdb := redis.NewClient(&opt)
			t.Cleanup(func() { rdb.Close() })
			s := newStore(t, rdb, tc.Config)

			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			c := tt.check
			c.TenantID = randomTenant(t)
			var d Decision
			done := make(chan error, 1)
			go func() { done <- s.Reserve(ctx, &c, &d) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Reserve against a stalled Redis returned no error")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Reserve is still waiting on a Redis that never answers")
			}
			if d.Outcome != tt.want {
				t.Errorf("outcome %v, want %v", d.Outcome, tt.want)
			}
		})
	}
}
