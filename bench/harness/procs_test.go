package harness

import (
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestInstancePidsIncludeWorkers: a Tollgate instance running workers is
// a master with child processes, and its CPU is theirs too; the children
// come from /proc, so check them against a real process tree.
func TestInstancePidsIncludeWorkers(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 30 & echo $!; sleep 30 & echo $!; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range childrenOf(cmd.Process.Pid) {
			_ = exec.Command("kill", strconv.Itoa(pid)).Run()
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	buf := make([]byte, 64)
	var printed string
	for deadline := time.Now().Add(5 * time.Second); strings.Count(printed, "\n") < 2 && time.Now().Before(deadline); {
		n, err := out.Read(buf)
		printed += string(buf[:n])
		if err != nil {
			break
		}
	}
	var want []int
	for _, f := range strings.Fields(printed) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("shell printed %q", printed)
		}
		want = append(want, pid)
	}
	in := &instance{p: &proc{cmd: cmd}}
	got := in.pids()
	if len(got) != 3 || got[0] != cmd.Process.Pid {
		t.Fatalf("pids %v, want the shell %d and its children %v", got, cmd.Process.Pid, want)
	}
	for _, pid := range want {
		if !slices.Contains(got, pid) {
			t.Fatalf("pids %v miss child %d", got, pid)
		}
	}
	// Every one of them has a readable CPU counter.
	if _, err := cpuSeconds(clockTicks(), got...); err != nil {
		t.Fatalf("cpu of %v: %v", got, err)
	}
}
