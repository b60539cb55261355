package quota

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/redistest"
)

// echoScript returns its ARGV as integers, so each caller can tell whether
// the reply it got is its own.
const echoScript = `local r = {} for i = 1, #ARGV do r[i] = tonumber(ARGV[i]) end return r`

func pipelineOf(tb testing.TB, rdb *redis.Client) *pipeline {
	tb.Helper()
	p := newPipeline(rdb)
	if p == nil {
		tb.Fatal("newPipeline returned nil for a single-server client")
	}
	tb.Cleanup(p.Close)
	return p
}

// TestPipelineRepliesReachTheirCallers: 500 concurrent calls, each with
// its own arguments, every reply the caller's own; the commands left in
// fewer writes than calls and each call was one command.
func TestPipelineRepliesReachTheirCallers(t *testing.T) {
	rdb := testClient(t)
	p := pipelineOf(t, rdb)
	script := newIntScript(redis.NewScript(echoScript), echoScript)
	ctx := context.Background()

	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []any{nil, nil, 0, int64(i), i * 7, "-3"}
			got, err := script.runSlice(ctx, p, args)
			switch {
			case err != nil:
				errs <- err
			case len(got) != 3 || got[0] != int64(i) || got[1] != int64(i*7) || got[2] != -3:
				errs <- fmt.Errorf("call %d got %v", i, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// One extra EVAL at most: the first call may find the script unloaded.
	if s := p.sent.Load(); s < n || s > n+n {
		t.Errorf("sent %d commands for %d calls", s, n)
	}
}

// TestPipelineLoadsUnknownScript: a script the server has never seen
// answers NOSCRIPT through the pipeline, which the caller recognises and
// retries with EVAL, as with go-redis.
func TestPipelineLoadsUnknownScript(t *testing.T) {
	rdb := testClient(t)
	p := pipelineOf(t, rdb)
	src := fmt.Sprintf("-- %s\nreturn tonumber(ARGV[1]) + 1", randomTenant(t))
	script := newIntScript(redis.NewScript(src), src)
	got, err := script.runInt(context.Background(), p, []any{nil, nil, 0, 41})
	if err != nil || got != 42 {
		t.Fatalf("runInt = %d, %v; want 42", got, err)
	}
	if s := p.sent.Load(); s != 2 {
		t.Errorf("sent %d commands, want EVALSHA then EVAL", s)
	}
	// An error reply reaches the caller as one, and the connection stays.
	bad := newIntScript(redis.NewScript("return redis.error_reply('ERR nope')"), "return redis.error_reply('ERR nope')")
	if _, err := bad.runInt(context.Background(), p, []any{nil, nil, 0}); err == nil || err.Error() != "ERR nope" {
		t.Fatalf("error reply: %v", err)
	}
	if got, err := script.runInt(context.Background(), p, []any{nil, nil, 0, 1}); err != nil || got != 2 {
		t.Fatalf("after an error reply: %d, %v", got, err)
	}
}

// TestPipelineAuthAndSelect: a password and a database from the client's
// options are set up on the pipeline's connection before any call.
func TestPipelineAuthAndSelect(t *testing.T) {
	addr := redistest.Private(t, "--requirepass", "s3cret")
	rdb := redis.NewClient(&redis.Options{Addr: addr, Password: "s3cret", DB: 3})
	t.Cleanup(func() { rdb.Close() })
	p := pipelineOf(t, rdb)
	src := "return redis.call('INCRBY', KEYS[1], ARGV[1])"
	script := newIntScript(redis.NewScript(src), src)
	if got, err := script.runInt(context.Background(), p, []any{nil, nil, 1, "k", 5}); err != nil || got != 5 {
		t.Fatalf("runInt = %d, %v", got, err)
	}
	if v, err := rdb.Get(context.Background(), "k").Int64(); err != nil || v != 5 {
		t.Fatalf("db 3 k = %d, %v; want 5", v, err)
	}

	wrong := redis.NewClient(&redis.Options{Addr: addr, Password: "nope"})
	t.Cleanup(func() { wrong.Close() })
	if _, err := script.runInt(context.Background(), pipelineOf(t, wrong), []any{nil, nil, 1, "k", 1}); err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

// TestPipelineStalledServer: a server that takes commands and never
// answers fails every call in flight after the timeout (not forever), and
// the next call dials again.
func TestPipelineStalledServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 64) // one per lane, then the redials
	var last atomic.Value            // the remote address of the connection accepted last
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			last.Store(c.RemoteAddr().String())
			go func() {
				_, _ = bufio.NewReader(c).WriteTo(discard{})
			}()
		}
	}()
	defer func() {
		for len(conns) > 0 {
			(<-conns).Close()
		}
	}()
	// accepted returns how many connections the server has accepted, the
	// ones dialled before the call included: a probe dialled now queues
	// behind them, so once it is accepted they all are (the accept loop
	// may lag far behind the dials on a loaded machine). The probe counts.
	accepted := func() int {
		t.Helper()
		probe, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer probe.Close()
		for range 500 {
			if last.Load() == probe.LocalAddr().String() {
				return len(conns)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("the probe connection was not accepted within 5 s")
		return 0
	}

	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), ReadTimeout: 50 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	p := pipelineOf(t, rdb)
	script := newIntScript(redis.NewScript(echoScript), echoScript)

	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = script.runSlice(context.Background(), p, []any{nil, nil, 0, i})
		}()
	}
	wg.Wait() // a stall the pipeline did not bound would hang here (go test -timeout)
	for i, err := range errs {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("call %d: %v, want a deadline error", i, err)
		}
	}
	before := accepted()
	if _, err := script.runSlice(context.Background(), p, []any{nil, nil, 0, 1}); err == nil {
		t.Fatal("a call on a stalled server succeeded")
	}
	if n := accepted() - 1; n != before+1 { // less the second probe
		t.Errorf("server saw %d new connections for the next call, want 1: the stalled ones dropped, one dialled", n-before)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestPipelineGarbageFromServer: a reply that is not RESP fails the call
// and drops the connection instead of pairing later replies wrongly.
func TestPipelineGarbageFromServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				if _, err := r.ReadByte(); err == nil {
					_, _ = c.Write([]byte("?what\r\n:1\r\n"))
				}
				_, _ = r.WriteTo(discard{})
			}()
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), ReadTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	p := pipelineOf(t, rdb)
	script := newIntScript(redis.NewScript(echoScript), echoScript)
	if _, err := script.runSlice(context.Background(), p, []any{nil, nil, 0, 1}); !errors.Is(err, errPipeProtocol) {
		t.Fatalf("err = %v, want a protocol error", err)
	}
}

// TestPipelineRedisDown: no server fails calls at once, and only one dial
// per pause is made for them.
func TestPipelineRedisDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	p := pipelineOf(t, rdb)
	dials := 0
	dial := p.dial
	p.dial = func(ctx context.Context) (net.Conn, error) { dials++; return dial(ctx) }
	script := newIntScript(redis.NewScript(echoScript), echoScript)
	for range 50 {
		if _, err := script.runSlice(context.Background(), p, []any{nil, nil, 0, 1}); err == nil {
			t.Fatal("a call with Redis down succeeded")
		}
	}
	if dials < 1 || dials > 10 {
		t.Errorf("%d dials for 50 calls within a redial pause of %v", dials, pipeRedialPause)
	}

	p.Close()
	if _, err := script.runSlice(context.Background(), p, []any{nil, nil, 0, 1}); !errors.Is(err, errPipeClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// TestStoreThroughPipelineMatchesPool: the same reserve sequence through
// the pipeline and through go-redis's pool gives the same decisions.
func TestStoreThroughPipelineMatchesPool(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	for _, opts := range [][]Option{nil, {WithoutPipeline()}} {
		s := newStore(t, rdb, tc.Config, opts...)
		id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, map[string]int64{"messages": 3})
		var got []Outcome
		for range 5 {
			d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1})
			got = append(got, d.Outcome)
		}
		want := []Outcome{Admitted, Admitted, Admitted, OverLimit, OverLimit}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("pipeline %v: outcomes %v, want %v", s.pipe != nil, got, want)
		}
		if s.pipe != nil && s.PipelinedCommands() != 5 {
			t.Errorf("pipelined %d commands for 5 reserves", s.PipelinedCommands())
		}
	}
}

// TestPipelineConnectionKilledMidFlight: while 64 callers keep calls in
// flight, Redis drops the pipeline's connection again and again (CLIENT
// KILL on a private server). Every call ends, with its own reply or an
// error, never another caller's; afterwards the pipeline works again.
func TestPipelineConnectionKilledMidFlight(t *testing.T) {
	rdb, stopKilling := killedClient(t)
	p := pipelineOf(t, rdb)
	script := newIntScript(redis.NewScript(echoScript), echoScript)
	ctx := context.Background()

	const callers, calls = 64, 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, failed := 0, 0
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				want := int64(g*calls + i)
				got, err := script.runSlice(ctx, p, []any{nil, nil, 0, want})
				mu.Lock()
				switch {
				case err != nil:
					failed++
				case len(got) == 1 && got[0] == want:
					ok++
				default:
					t.Errorf("caller %d call %d got %v, want [%d]", g, i, got, want)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stopKilling()
	t.Logf("%d calls answered, %d failed with the connection", ok, failed)
	if ok == 0 {
		t.Error("no call succeeded between the kills")
	}
	if got, err := script.runSlice(ctx, p, []any{nil, nil, 0, 7}); err != nil || len(got) != 1 || got[0] != 7 {
		// The first call after the last kill may find the dead connection.
		if got, err = script.runSlice(ctx, p, []any{nil, nil, 0, 7}); err != nil || len(got) != 1 || got[0] != 7 {
			t.Fatalf("after the kills: %v, %v", got, err)
		}
	}
}

// killedClient is a client of a private Redis that drops every connection
// but its admin's each 5 ms until stop is called; stop fails the test if
// no connection was ever killed (the test would prove nothing).
func killedClient(t *testing.T) (rdb *redis.Client, stop func()) {
	t.Helper()
	addr := redistest.Private(t)
	rdb = redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { admin.Close() })
	done, killed := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		defer func() { killed <- n }()
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			// Every normal client but this one: the pipeline's connection.
			if k, err := admin.Do(context.Background(), "client", "kill", "type", "normal", "skipme", "yes").Int(); err == nil {
				n += k
			}
		}
	}()
	return rdb, func() {
		close(done)
		if n := <-killed; n == 0 {
			t.Fatal("no connection was killed: the test proved nothing")
		}
	}
}

// TestPipelineTimeoutCountsTheWait: against a server that never answers,
// calls made while a batch is in flight wait for it and then fail too,
// each within about one timeout of being made, not one timeout for the
// batch ahead plus one of its own.
func TestPipelineTimeoutCountsTheWait(t *testing.T) {
	const timeout = 300 * time.Millisecond
	rdb := redis.NewClient(&redis.Options{Addr: silentRedis(t), ReadTimeout: timeout})
	t.Cleanup(func() { rdb.Close() })
	p := pipelineOf(t, rdb)
	script := newIntScript(redis.NewScript(echoScript), echoScript)

	first := make(chan error, 1)
	go func() {
		_, err := script.runSlice(context.Background(), p, []any{nil, nil, 0, 1})
		first <- err
	}()
	// The second wave comes while the first call's batch is in flight.
	time.Sleep(timeout / 2)
	var wg sync.WaitGroup
	late := make([]time.Duration, 10)
	for i := range late {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if _, err := script.runSlice(context.Background(), p, []any{nil, nil, 0, i}); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("call %d: %v, want a deadline error", i, err)
			}
			late[i] = time.Since(start)
		}()
	}
	wg.Wait()
	if err := <-first; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("first call: %v, want a deadline error", err)
	}
	for i, d := range late {
		// Behind the first batch without its own clock starting at once,
		// a call would take 1.5 timeouts; the bound leaves slack for a
		// loaded machine.
		if d > timeout*4/3 {
			t.Errorf("call %d failed after %v, more than the timeout %v after it was made", i, d, timeout)
		}
	}
}
