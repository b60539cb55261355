package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/billing/billingtest"
	"github.com/tollgate/tollgate/internal/redistest"
)

// TestMain lets the test binary stand in for tollgate: the master starts
// its workers from its own executable, which under `go test` is this
// binary, with the worker variable set and `serve --config FILE` as
// arguments.
func TestMain(m *testing.M) {
	if os.Getenv(envWorker) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a log sink the test reads while the master writes.
type syncBuffer struct {
	w lockedWriter
	b bytes.Buffer
}

func newSyncBuffer() *syncBuffer {
	s := &syncBuffer{}
	s.w.out = &s.b
	return s
}

func (s *syncBuffer) Write(p []byte) (int, error) { return s.w.Write(p) }

func (s *syncBuffer) String() string {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return s.b.String()
}

// logLines are the JSON log lines with message msg.
func logLines(log, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// workerSetup points a `serve` at fresh Redis keys, a fresh schema and a
// demo upstream, with two workers of one P each.
func workerSetup(t *testing.T) (proxyAddr, apiAddr string) {
	t.Helper()
	demoAddr := freeAddr(t)
	proxyAddr, apiAddr = freeAddr(t), freeAddr(t)
	t.Setenv("TOLLGATE_UPSTREAM_URL", "http://"+demoAddr)
	t.Setenv("TOLLGATE_LISTEN", proxyAddr)
	t.Setenv("TOLLGATE_API_LISTEN", apiAddr)
	redistest.NewClient(t)
	t.Setenv("TOLLGATE_REDIS_URL", redistest.URL())
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "t0ken")
	t.Setenv("TOLLGATE_DATABASE_URL", billingtest.NewSchema(t))
	t.Setenv("TOLLGATE_WORKERS", "2")
	t.Setenv("TOLLGATE_PROCS", "2")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"demo", "--listen", demoAddr}, io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitHealthy(t, "http://"+demoAddr+"/healthz")
	return proxyAddr, apiAddr
}

// startMaster runs `serve` in this process (the master); it returns the
// log and the channel serve's result arrives on.
func startMaster(t *testing.T, ctx context.Context) (*syncBuffer, chan error) {
	t.Helper()
	log := newSyncBuffer()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", "../../examples/pingback/tollgate.yaml"}, io.Discard, log)
	}()
	return log, done
}

// workerPids waits for the master's start-up line and returns its pids.
func workerPids(t *testing.T, log *syncBuffer) []int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if lines := logLines(log.String(), "tollgate workers started"); len(lines) > 0 {
			var pids []int
			for _, p := range lines[0]["pids"].([]any) {
				pids = append(pids, int(p.(float64)))
			}
			return pids
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no workers started line in 15 s; log:\n%s", log.String())
	return nil
}

// TestServeWithWorkers runs `serve` with two workers: both take
// connections off the shared port, a metered limit holds across them, the
// API answers, a killed worker is replaced, and cancelling the master
// stops every worker.
func TestServeWithWorkers(t *testing.T) {
	proxyAddr, apiAddr := workerSetup(t)
	prevGrace := workerStartGrace
	workerStartGrace = 0
	t.Cleanup(func() { workerStartGrace = prevGrace })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log, done := startMaster(t, ctx)
	pids := workerPids(t, log)
	if len(pids) != 2 {
		t.Fatalf("workers started with pids %v, want 2", pids)
	}
	waitHealthy(t, "http://"+proxyAddr+"/healthz")
	waitHealthy(t, "http://"+apiAddr+"/healthz")
	for _, l := range logLines(log.String(), "tollgate listening") {
		if l["procs"] != float64(1) || l["workers"] != float64(2) || l["proxy"] != proxyAddr {
			t.Errorf("worker start-up line %v: want procs 1, workers 2, proxy %s", l, proxyAddr)
		}
	}

	key := createTenant(t, apiAddr, "free") // messages: 250 a month, grace 1.0
	const conns, perConn = 40, 10
	admitted, refused, byWorker := sendMessages(t, proxyAddr, key, conns, perConn, pids)
	if admitted != 250 || refused != conns*perConn-250 {
		t.Fatalf("%d admitted, %d refused across two workers; want exactly 250 and %d", admitted, refused, conns*perConn-250)
	}
	t.Logf("connections per worker pid: %v", byWorker)
	for _, pid := range pids {
		if byWorker[pid] == 0 {
			t.Fatalf("worker %d held none of %d connections (%v): the port is not shared", pid, conns, byWorker)
		}
	}

	// A worker killed outright is replaced (the start-up grace is 0 here,
	// so it counts as having started).
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(logLines(log.String(), "tollgate listening")) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no replacement worker in 15 s; log:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(logLines(log.String(), "worker exited; starting another")); n != 1 {
		t.Fatalf("%d restart lines, want 1", n)
	}
	for range 20 {
		resp, err := http.Get("http://" + proxyAddr + "/healthz")
		if err != nil {
			t.Fatalf("after a restart: %v", err)
		}
		resp.Body.Close()
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("workers did not stop within 30 s of cancellation")
	}
	if c, err := net.DialTimeout("tcp", proxyAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the proxy port still accepts after shutdown")
	}
	if err := syscall.Kill(pids[1], 0); err == nil {
		t.Fatalf("worker %d still runs after the master stopped", pids[1])
	}
}

// TestWorkerDyingAtStartStopsServe: a worker that exits within the
// start-up grace is not restarted in a loop; serve stops the others and
// says which worker failed.
func TestWorkerDyingAtStartStopsServe(t *testing.T) {
	workerSetup(t)
	prevGrace := workerStartGrace
	workerStartGrace = time.Hour
	t.Cleanup(func() { workerStartGrace = prevGrace })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log, done := startMaster(t, ctx)
	pids := workerPids(t, log)
	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "worker 1 exited") {
			t.Fatalf("serve returned %v, want worker 1's exit", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30 s of a worker dying at start")
	}
	if err := syscall.Kill(pids[0], 0); err == nil {
		t.Fatalf("worker %d still runs after serve failed", pids[0])
	}
	if n := len(logLines(log.String(), "worker exited; starting another")); n != 0 {
		t.Fatalf("a worker dying at start was restarted (%d times)", n)
	}
}

// TestWorkersRefuseATakenPort: with workers the proxy port is shared
// through SO_REUSEPORT, which must not quietly join another process's
// listener, reuse-port or not.
func TestWorkersRefuseATakenPort(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("other listener reuse-port %v", reuse), func(t *testing.T) {
			proxyAddr, _ := workerSetup(t)
			var ln net.Listener
			if reuse {
				f, err := listenShared(proxyAddr)
				if err != nil {
					t.Fatal(err)
				}
				ln, err = net.FileListener(f)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
			} else {
				var err error
				if ln, err = net.Listen("tcp", proxyAddr); err != nil {
					t.Fatal(err)
				}
			}
			defer ln.Close()
			err := run(context.Background(), []string{"serve", "--config", "../../examples/pingback/tollgate.yaml"}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "proxy listener") || !strings.Contains(err.Error(), "address already in use") {
				t.Fatalf("serve with a taken port returned %v", err)
			}
		})
	}
}

func createTenant(t *testing.T, apiAddr, plan string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+apiAddr+"/admin/v1/tenants", strings.NewReader(`{"name":"w","plan":"`+plan+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer t0ken")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		APIKey string `json:"api_key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated || out.APIKey == "" {
		t.Fatalf("create tenant: %d %v", resp.StatusCode, err)
	}
	return out.APIKey
}

// sendMessages opens conns keep-alive connections at once and sends
// perConn metered POSTs on each, all connections in parallel. It counts
// 2xx and limit answers, and which worker (by pid) held each connection,
// read from the kernel while all of them are open.
func sendMessages(t *testing.T, addr, key string, conns, perConn int, pids []int) (admitted, refused int, byWorker map[int]int) {
	t.Helper()
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs[i] = c
	}
	// Every connection is accepted once it has been answered once.
	body := `{"text":"hi"}`
	req := "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for _, c := range cs {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			for range perConn {
				if _, err := io.WriteString(c, req); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("request: %v", err)
	}
	byWorker = connectionsByPid(t, cs, pids)
	for code, n := range statuses {
		switch {
		case code >= 200 && code < 300:
			admitted += n
		case code == http.StatusTooManyRequests || code == http.StatusPaymentRequired:
			refused += n
		default:
			t.Fatalf("status %d on %d requests (%v)", code, n, statuses)
		}
	}
	return admitted, refused, byWorker
}

// connectionsByPid finds, for each of the client connections cs, the
// process among pids holding its server side: /proc/net/tcp gives the
// socket inode of each local port pair, /proc/<pid>/fd the inodes a
// process holds.
func connectionsByPid(t *testing.T, cs []net.Conn, pids []int) map[int]int {
	t.Helper()
	inodes := serverSocketInodes(t, cs)
	out := map[int]int{}
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("fds of worker %d: %v", pid, err)
		}
		for _, e := range entries {
			target, err := os.Readlink(dir + "/" + e.Name())
			if err == nil && inodes[target] {
				out[pid]++
			}
		}
	}
	return out
}

// serverSocketInodes are "socket:[N]" for the server side of each of cs.
func serverSocketInodes(t *testing.T, cs []net.Conn) map[string]bool {
	t.Helper()
	want := map[string]bool{}
	for _, c := range cs {
		// The server side's local address is the client's remote one and
		// its remote the client's local one, in /proc/net/tcp's hex form.
		want[procNetAddr(c.RemoteAddr())+" "+procNetAddr(c.LocalAddr())] = true
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && want[f[1]+" "+f[2]] {
			out["socket:["+f[9]+"]"] = true
		}
	}
	if len(out) != len(cs) {
		t.Fatalf("found %d of %d server sockets in /proc/net/tcp", len(out), len(cs))
	}
	return out
}

// procNetAddr writes an IPv4 TCP address as /proc/net/tcp does: the
// address as a little-endian hex word, the port in hex.
func procNetAddr(a net.Addr) string {
	ta := a.(*net.TCPAddr)
	ip := ta.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ta.Port)
}

func TestParseWorkerSpec(t *testing.T) {
	cases := []struct {
		in           string
		index, count int
		ok           bool
	}{
		{"0/2", 0, 2, true},
		{"3/4", 3, 4, true},
		{"0/1", 0, 1, true},
		{"2/2", 0, 0, false},
		{"-1/2", 0, 0, false},
		{"1", 0, 0, false},
		{"1/0", 0, 0, false},
		{"0/257", 0, 0, false},
		{"a/b", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range cases {
		index, count, err := parseWorkerSpec(tc.in)
		if (err == nil) != tc.ok || index != tc.index || count != tc.count {
			t.Errorf("parseWorkerSpec(%q) = %d, %d, %v", tc.in, index, count, err)
		}
		if err != nil && !strings.Contains(err.Error(), envWorker) {
			t.Errorf("error %q does not name %s", err, envWorker)
		}
	}
}

// FuzzParseWorkerSpec: whatever the variable holds, an accepted spec is a
// valid index into a valid count.
func FuzzParseWorkerSpec(f *testing.F) {
	for _, s := range []string{"0/2", "1/2", "2/2", "/", "0/", "/1", "00/01", "+0/+1", "0/256", "9999999999999999999/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		index, count, err := parseWorkerSpec(s)
		if err != nil {
			return
		}
		if count < 1 || count > 256 || index < 0 || index >= count {
			t.Fatalf("parseWorkerSpec(%q) = %d, %d", s, index, count)
		}
	})
}

// TestLineWriterKeepsLinesWhole: a worker's output arrives in pieces
// that do not follow its lines; what reaches the shared log is whole lines.
func TestLineWriterKeepsLinesWhole(t *testing.T) {
	var got []string
	sink := writerFunc(func(p []byte) (int, error) {
		got = append(got, string(p))
		return len(p), nil
	})
	w := &lineWriter{out: sink}
	for _, piece := range []string{`{"a":`, `1}` + "\n" + `{"b"`, `:2}` + "\n", "\n", `{"c":3}`} {
		if n, err := w.Write([]byte(piece)); n != len(piece) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", piece, n, err)
		}
	}
	want := []string{`{"a":1}` + "\n", `{"b":2}` + "\n", "\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("writes %q, want %q", got, want)
	}
	if string(w.buf) != `{"c":3}` {
		t.Fatalf("held back %q, want the unfinished line", w.buf)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
