package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a server the harness started; only the harness stops it, by pid.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProc starts a server. ownSession puts it in a session of its own:
// with the kernel's autogroup scheduling (on by default) a session is a
// scheduling group, and CPU is shared fairly between groups rather than
// between threads, as between containers or systemd services.
func startProc(dir, name string, ownSession bool, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C of `make bench` must not kill the servers
	// before the harness has read their CPU counters and stopped them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if ownSession {
		// A new session is also a new process group.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after 5 s, to this process only.
func (p *proc) stop() {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

// waitHTTP polls url until it answers 200, the process dies or 15 s pass.
func waitHTTP(ctx context.Context, p *proc, url string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %s", p.name, p.tail())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait %s: %w", url, err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	name := url
	if p != nil {
		name = p.name + " (" + p.tail() + ")"
	}
	return fmt.Errorf("%s not answering at %s after 15 s", name, url)
}

// freeAddr reserves a loopback port by listening and closing; the gap until
// the server binds it is a race we accept on a dev machine.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	for _, p := range []string{filepath.Join(runtime.GOROOT(), "bin", "go"), "/usr/local/go/bin/go"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

// build compiles the binaries the harness runs into dir.
func build(ctx context.Context, root, dir string) (tollgate, upstream string, err error) {
	tollgate, upstream = filepath.Join(dir, "tollgate"), filepath.Join(dir, "bench-upstream")
	for _, b := range []struct{ out, pkg string }{{tollgate, "./cmd/tollgate"}, {upstream, "./bench/cmd/upstream"}} {
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %w: %s", b.pkg, err, out)
		}
	}
	return tollgate, upstream, nil
}

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go runs on; getconf confirms when present.
func clockTicks() float64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100
}

// cpuSeconds is utime+stime of the given processes, in seconds.
func cpuSeconds(hz float64, pids ...int) (float64, error) {
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("cpu of %d: %w", pid, err)
		}
		// The command name (field 2) may hold spaces; fields after ")" are fixed.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return 0, fmt.Errorf("cpu of %d: malformed stat", pid)
		}
		f := strings.Fields(s[i+1:])
		// f[0] is field 3 (state); utime and stime are fields 14 and 15.
		if len(f) < 13 {
			return 0, fmt.Errorf("cpu of %d: short stat", pid)
		}
		u, err1 := strconv.ParseFloat(f[11], 64)
		st, err2 := strconv.ParseFloat(f[12], 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("cpu of %d: %w", pid, err)
		}
		total += (u + st) / hz
	}
	return total, nil
}

// childrenOf lists the pids whose parent is pid (nginx's workers).
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}

// loggedProcs reads the GOMAXPROCS Tollgate runs with and its number of
// worker processes from its start-up line ("tollgate listening", fields
// procs and workers; a worker's line when it runs workers) in the log at
// path; 0, 0 when the line is not there within a second.
func loggedProcs(path string) (procs, workers int) {
	for range 20 {
		b, _ := os.ReadFile(path)
		if procs, workers = parseProcs(b); procs > 0 {
			return procs, workers
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, 0
}

// parseProcs finds the procs and workers fields of the first "tollgate
// listening" line; a line from before the workers setting counts as one
// worker.
func parseProcs(log []byte) (procs, workers int) {
	for _, line := range bytes.Split(log, []byte("\n")) {
		var l struct {
			Msg     string `json:"msg"`
			Procs   int    `json:"procs"`
			Workers int    `json:"workers"`
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == "tollgate listening" {
			return l.Procs, max(l.Workers, 1)
		}
	}
	return 0, 0
}
