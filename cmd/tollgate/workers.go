package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/config"
)

// envWorker tells a process the master started that it is worker I of N
// ("I/N"). Its listeners are inherited: fd 3 is the proxy's, fd 4 the
// API's.
const envWorker = "TOLLGATE_WORKER"

const (
	fdProxyListener = 3
	fdAPIListener   = 4
)

// workerStartGrace: a worker that exits this soon after it started did not
// start (Redis or PostgreSQL unusable, say); starting it again would only
// loop, so the master stops everything and reports it. A variable for
// tests, read when the master starts.
var workerStartGrace = 10 * time.Second

// workerStopWait bounds the workers' graceful shutdown before the master
// kills them: runServer allows itself drainTimeout, the quota store's
// Close (about 4 s) and finalFlushTimeout, 19 s in all.
const workerStopWait = 25 * time.Second

// workerListeners are a worker's inherited listeners.
type workerListeners struct {
	index, count int
	proxy, api   net.Listener
}

// parseWorkerSpec reads envWorker's "I/N".
func parseWorkerSpec(s string) (index, count int, err error) {
	i, n, ok := strings.Cut(s, "/")
	index, err1 := strconv.Atoi(i)
	count, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || count < 1 || count > 256 || index < 0 || index >= count {
		return 0, 0, fmt.Errorf("env %s: expected I/N with 0 <= I < N <= 256 (set by tollgate for its workers), got %q", envWorker, s)
	}
	return index, count, nil
}

// inheritedListeners opens the listeners a worker's master passed down.
func inheritedListeners(spec string) (*workerListeners, error) {
	index, count, err := parseWorkerSpec(spec)
	if err != nil {
		return nil, err
	}
	proxyLn, err := inheritedListener(fdProxyListener, "proxy listener")
	if err != nil {
		return nil, err
	}
	apiLn, err := inheritedListener(fdAPIListener, "api listener")
	if err != nil {
		proxyLn.Close()
		return nil, err
	}
	return &workerListeners{index: index, count: count, proxy: proxyLn, api: apiLn}, nil
}

func inheritedListener(fd uintptr, name string) (net.Listener, error) {
	f := os.NewFile(fd, name)
	if f == nil {
		return nil, fmt.Errorf("%s: no inherited fd %d", name, fd)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s: inherited fd %d: %w", name, fd, err)
	}
	return ln, nil
}

// probeAddr checks that nothing listens on addr, without SO_REUSEPORT: a
// socket in a reuse-port group would otherwise quietly share its
// connections with ours. It returns the address bound (a port 0 resolved).
func probeAddr(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	bound := ln.Addr().String()
	return bound, ln.Close()
}

// listenShared binds one socket of addr's reuse-port group and returns it
// as a file to hand to a worker; the kernel spreads new connections over
// the group's sockets.
func listenShared(addr string) (*os.File, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
		})
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, fmt.Errorf("listener file: %w", err)
	}
	return f, nil
}

// soReusePort is SO_REUSEPORT, which package syscall does not name on
// linux/amd64.
const soReusePort = 0xf

// master starts and watches the worker processes.
type master struct {
	exe, path          string
	proxyAddr, apiAddr string
	count, procs       int
	grace              time.Duration // workerStartGrace when started
	logOut             io.Writer
	log                *zap.Logger
	exits              chan workerExit
}

type workerProc struct {
	index   int
	cmd     *exec.Cmd
	started time.Time
}

type workerExit struct {
	w   *workerProc
	err error
}

// runWorkers is `serve` with workers > 1: it binds nothing itself beyond
// the workers' sockets, starts count workers with procs Ps each, starts a
// worker again when one dies after having started, and on ctx's end stops
// them all (SIGTERM, then SIGKILL after workerStopWait).
func runWorkers(ctx context.Context, cfg *config.Config, count, procs int, logOut io.Writer) error {
	if _, ok := logOut.(*os.File); !ok {
		// Log lines are single writes to a file; through exec's copying
		// pipes they are not, and the master logs to the same writer.
		logOut = &lockedWriter{out: logOut}
	}
	log := newLogger(logOut)
	defer func() { _ = log.Sync() }()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("workers: own executable: %w", err)
	}
	m := &master{exe: exe, path: cfg.Source, count: count, procs: procs, grace: workerStartGrace,
		logOut: logOut, log: log, exits: make(chan workerExit, count)}
	if m.proxyAddr, err = probeAddr(cfg.Listen); err != nil {
		return fmt.Errorf("proxy listener: %w", err)
	}
	if m.apiAddr, err = probeAddr(cfg.APIListen); err != nil {
		return fmt.Errorf("api listener: %w", err)
	}

	running := make(map[int]*workerProc, count)
	pids := make([]int, 0, count)
	for i := range count {
		w, err := m.start(i)
		if err != nil {
			m.stopAll(running)
			return err
		}
		running[i] = w
		pids = append(pids, w.cmd.Process.Pid)
	}
	log.Info("tollgate workers started", zap.Int("workers", count), zap.Int("procs_each", procs),
		zap.Ints("pids", pids), zap.String("proxy", m.proxyAddr), zap.String("api", m.apiAddr))

	for {
		select {
		case <-ctx.Done():
			log.Info("stopping workers")
			m.stopAll(running)
			return nil
		case e := <-m.exits:
			delete(running, e.w.index)
			if ctx.Err() != nil {
				// A Ctrl-C reaches the workers too (one process group):
				// this one stopped on it, not by failing.
				m.stopAll(running)
				return nil
			}
			if up := time.Since(e.w.started); up < m.grace {
				m.stopAll(running)
				return fmt.Errorf("worker %d exited %s after it started (%v); see its log above", e.w.index, up.Round(time.Millisecond), e.err)
			}
			log.Error("worker exited; starting another", zap.Int("worker", e.w.index), zap.Int("pid", e.w.cmd.Process.Pid), zap.Error(e.err))
			w, err := m.start(e.w.index)
			if err != nil {
				m.stopAll(running)
				return err
			}
			running[e.w.index] = w
		}
	}
}

// start runs worker i on fresh sockets of the two reuse-port groups.
func (m *master) start(i int) (*workerProc, error) {
	pf, err := listenShared(m.proxyAddr)
	if err != nil {
		return nil, fmt.Errorf("worker %d: proxy listener: %w", i, err)
	}
	defer pf.Close()
	af, err := listenShared(m.apiAddr)
	if err != nil {
		return nil, fmt.Errorf("worker %d: api listener: %w", i, err)
	}
	defer af.Close()

	cmd := exec.Command(m.exe, "serve", "--config", m.path)
	// Later entries win over the inherited environment's.
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("%s=%d/%d", envWorker, i, m.count),
		config.EnvProcs+"="+strconv.Itoa(m.procs))
	out := m.logOut
	if lw, ok := out.(*lockedWriter); ok {
		out = &lineWriter{out: lw}
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{pf, af} // fds 3 and 4
	// A master killed outright takes its workers with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("worker %d: %w", i, err)
	}
	// The worker holds the sockets now; the master's copies are closed by
	// the defers, so no connection waits in a socket nobody accepts on.
	w := &workerProc{index: i, cmd: cmd, started: time.Now()}
	go func() { m.exits <- workerExit{w: w, err: cmd.Wait()} }()
	return w, nil
}

// stopAll asks every running worker to shut down, waits for them, and
// kills those still running after workerStopWait.
func (m *master) stopAll(running map[int]*workerProc) {
	for _, w := range running {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(workerStopWait)
	defer deadline.Stop()
	for len(running) > 0 {
		select {
		case e := <-m.exits:
			delete(running, e.w.index)
		case <-deadline.C:
			for _, w := range running {
				m.log.Warn("worker did not stop in time; killing it", zap.Int("worker", w.index), zap.Int("pid", w.cmd.Process.Pid))
				_ = w.cmd.Process.Kill()
			}
			for len(running) > 0 {
				e := <-m.exits
				delete(running, e.w.index)
			}
		}
	}
}

// lockedWriter serialises writes to a writer the master and its workers
// share.
type lockedWriter struct {
	mu  sync.Mutex
	out io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(p)
}

// lineWriter passes one worker's output on in whole lines. exec calls it
// from one goroutine at a time (Stdout and Stderr are the same writer).
type lineWriter struct {
	out io.Writer
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if i := bytes.LastIndexByte(w.buf, '\n'); i >= 0 {
		_, err := w.out.Write(w.buf[:i+1])
		w.buf = w.buf[:copy(w.buf, w.buf[i+1:])]
		if err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}
