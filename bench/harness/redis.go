package harness

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// benchRedis is the Redis the proxies use during the run. A private
// redis-server is preferred: INFO commandstats is server-wide, so on a
// shared instance other people's tests would be counted as ours.
type benchRedis struct {
	url     string
	private bool
	proc    *proc
	rdb     *redis.Client
}

func startRedis(ctx context.Context, dir, sharedURL string, ownSession bool) (*benchRedis, error) {
	if bin, err := exec.LookPath("redis-server"); err == nil {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		p, err := startProc(dir, "redis", ownSession, nil, bin, "--bind", "127.0.0.1", "--port", port,
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no")
		if err != nil {
			return nil, err
		}
		r := &benchRedis{url: "redis://" + addr + "/0", private: true, proc: p}
		if err := r.connect(ctx); err != nil {
			p.stop()
			return nil, fmt.Errorf("private redis-server: %w (%s)", err, p.tail())
		}
		return r, nil
	}
	r := &benchRedis{url: sharedURL}
	if err := r.connect(ctx); err != nil {
		return nil, fmt.Errorf("redis at %s (no redis-server binary to start a private one): %w", sharedURL, err)
	}
	return r, nil
}

func (r *benchRedis) connect(ctx context.Context) error {
	opt, err := redis.ParseURL(r.url)
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	r.rdb = redis.NewClient(opt)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err = r.rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("ping: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *benchRedis) addr() string {
	opt, err := redis.ParseURL(r.url)
	if err != nil {
		return ""
	}
	return opt.Addr
}

func (r *benchRedis) close() {
	if r.rdb != nil {
		_ = r.rdb.Close()
	}
	r.proc.stop()
}

// commandStats reads INFO commandstats as command → calls.
func (r *benchRedis) commandStats(ctx context.Context) (map[string]int64, error) {
	s, err := r.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("info commandstats: %w", err)
	}
	return parseCommandStats(s), nil
}

func parseCommandStats(s string) map[string]int64 {
	out := map[string]int64{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[name] = n
			}
		}
	}
	return out
}

// statsDelta is after-before, without the harness's own INFO calls.
func statsDelta(before, after map[string]int64) (map[string]int64, int64) {
	d := map[string]int64{}
	var total int64
	for k, v := range after {
		if k == "info" {
			continue
		}
		if n := v - before[k]; n > 0 {
			d[k] = n
			total += n
		}
	}
	return d, total
}

// monitor counts the commands Redis receives from clients while it runs,
// separating those the clients sent (round trips, unless pipelined) from
// those Lua scripts issued: INFO commandstats counts both, and "1 Redis
// round trip per request" is about the former. MONITOR slows Redis down, so
// it only watches a short, separate pass, never a timed run.
//
// The proxies also talk to Redis on their own schedule (the reconcile
// loop's epoch check, connection pings), and a slow pass catches more of
// that. So the watch starts with an idle window, before any request is
// sent: what clients send then (by command and key) is background, and as
// much of it as its idle rate explains is left out of the pass's round
// trips (backgroundShare); a request that sent the same command would
// still show, as the excess over that rate.
type monitor struct {
	conn net.Conn
	wg   sync.WaitGroup
	mu   sync.Mutex
	top  map[string]int64
	lua  map[string]int64
	// tx counts the commands of MULTI…EXEC transactions, apart: Tollgate's
	// request path sends none; the usage flush (usage/read.go) and the
	// admin API do, on their own schedule, and one landing in the pass
	// would otherwise count as round trips of its requests.
	tx   map[string]int64
	inTx map[string]bool // by client address: between its MULTI and EXEC
	// The idle window, then the pass: clients' commands by name and key.
	passing            bool
	idleFrom, passFrom time.Time
	idle, pass         map[cmdKey]int64
}

// cmdKey is a command and its first argument (its key, for most).
type cmdKey struct{ cmd, key string }

// monitorCounts is what a pass saw: Top, the commands clients sent
// (Background already taken out), Lua the ones scripts ran, Tx the
// transactions' and Background what the idle rate explains.
type monitorCounts struct {
	Top, Lua, Tx, Background map[string]int64
}

func startMonitor(addr string) (*monitor, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("monitor: %w", err)
	}
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "+OK") {
		conn.Close()
		return nil, fmt.Errorf("monitor: unexpected answer %q: %v", line, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	m := newMonitor()
	m.conn = conn
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return // closed by stop
			}
			m.record(line)
		}
	}()
	return m, nil
}

func newMonitor() *monitor {
	return &monitor{top: map[string]int64{}, lua: map[string]int64{}, tx: map[string]int64{}, inTx: map[string]bool{},
		idle: map[cmdKey]int64{}, pass: map[cmdKey]int64{}, idleFrom: time.Now()}
}

// startPass ends the idle window: commands from now on are the pass's.
func (m *monitor) startPass() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.passing, m.passFrom = true, time.Now()
}

// record parses `+1700000000.123456 [0 127.0.0.1:5555] "evalsha" "abc" ...`;
// commands from scripts show "[0 lua]". A transaction's commands come
// between its client's MULTI and EXEC (Redis shows them as EXEC runs them).
func (m *monitor) record(line string) {
	open, close := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
	if open < 0 || close < open {
		return
	}
	src := line[open+1 : close]
	rest := strings.TrimSpace(line[close+1:])
	cmd, rest := monitorArg(rest)
	cmd = strings.ToLower(cmd)
	key, _ := monitorArg(rest)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case strings.HasSuffix(src, " lua"):
		if m.passing {
			m.lua[cmd]++
		}
	case m.inTx[src] || cmd == "multi":
		if m.passing {
			m.tx[cmd]++
		}
		m.inTx[src] = cmd != "exec" && cmd != "discard"
	case !m.passing:
		m.idle[cmdKey{cmd, key}]++
	default:
		m.top[cmd]++
		m.pass[cmdKey{cmd, key}]++
	}
}

// monitorArg splits MONITOR's first quoted argument off s. Quotes inside
// an argument come escaped (\"), which only ends it early for this count
// when a key holds one: Tollgate's keys hold none.
func monitorArg(s string) (arg, rest string) {
	if !strings.HasPrefix(s, `"`) {
		return s, ""
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return s, ""
	}
	return s[1 : end+1], strings.TrimSpace(s[end+2:])
}

// backgroundShare is, by command, how many of the pass's commands the idle
// window's rate explains: for each command and key seen in both, up to
// twice the count that rate predicts for the pass's length, plus one.
// Every command beyond that stays the requests'.
func backgroundShare(idle, pass map[cmdKey]int64, idleFor, passFor time.Duration) map[string]int64 {
	out := map[string]int64{}
	if idleFor <= 0 {
		return out
	}
	for k, n := range pass {
		c := idle[k]
		if c == 0 {
			continue
		}
		expected := float64(c) * passFor.Seconds() / idleFor.Seconds()
		if bg := min(n, int64(math.Ceil(2*expected))+1); bg > 0 {
			out[k.cmd] += bg
		}
	}
	return out
}

func (m *monitor) stop() monitorCounts {
	// Let the last lines arrive before closing.
	time.Sleep(100 * time.Millisecond)
	if m.conn != nil {
		m.conn.Close()
	}
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	end := time.Now()
	c := monitorCounts{Top: m.top, Lua: m.lua, Tx: m.tx}
	if m.passing {
		c.Background = backgroundShare(m.idle, m.pass, m.passFrom.Sub(m.idleFrom), end.Sub(m.passFrom))
		for cmd, n := range c.Background {
			if c.Top[cmd] -= n; c.Top[cmd] == 0 {
				delete(c.Top, cmd)
			}
		}
	}
	return c
}
